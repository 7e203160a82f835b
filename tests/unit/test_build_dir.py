"""The build directory: every file at its mode, SHA256SUMS true to what is on disk, a rerun replaces the last."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import pytest

from ekc.render.build import BuildDirError, write_build
from ekc.render.manifest import dump_manifest
from ekc.render.model import RenderResult
from ekc.spec.load import load_spec
from tests.support.render import placeholder_render, placeholder_tree


@pytest.fixture(scope="module")
def example() -> RenderResult:
    return placeholder_render("inventories/example")


def _sums_on_disk(out: Path) -> dict[str, str]:
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in out.rglob("*") if p.is_file() and p.name != "SHA256SUMS" and p.parts[len(out.parts)] != "audit"}


def _sums_listed(out: Path) -> dict[str, str]:
    lines = (out / "SHA256SUMS").read_text(encoding="utf-8").splitlines()
    return {line[66:]: line[:64] for line in lines}


def test_sha256sums_lists_every_file_as_it_is_on_disk_and_nothing_else(example: RenderResult, tmp_path: Path) -> None:
    out = tmp_path / "build"
    write_build(example, out)
    (out / "notes.txt").write_text("a stray file\n", encoding="utf-8")
    (out / "audit").mkdir()
    (out / "audit" / "index.html").write_text("report\n", encoding="utf-8")
    write_build(example, out)  # again: the stray file is listed, audit/ is not, the old tree is gone
    assert _sums_listed(out) == _sums_on_disk(out)
    assert "notes.txt" in _sums_listed(out) and (out / "audit" / "index.html").exists()
    lines = (out / "SHA256SUMS").read_text(encoding="utf-8").splitlines()
    assert lines == sorted(lines, key=lambda line: line[66:])


def test_secret_files_are_private_in_a_full_render_only(example: RenderResult, tmp_path: Path) -> None:
    write_build(example, tmp_path / "full")
    assert (tmp_path / "full").stat().st_mode & 0o777 == 0o700
    for host in example.manifest.hosts:
        for managed in host.files:
            path = tmp_path / "full" / "hosts" / host.name / "files" / managed.path.lstrip("/")
            assert path.stat().st_mode & 0o777 == (0o600 if managed.secret else 0o644), path
            assert path.read_bytes() == example.contents[(host.name, managed.path)]


def test_a_rerun_removes_files_the_render_no_longer_has(example: RenderResult, tmp_path: Path) -> None:
    out = tmp_path / "build"
    write_build(example, out)
    leftover = out / "hosts" / "pbx1" / "files" / "etc" / "old.conf"
    leftover.write_text("from an older render\n", encoding="utf-8")
    write_build(example, out)
    assert not leftover.exists()


def test_the_manifest_text_is_that_of_the_dataclasses(example: RenderResult) -> None:
    expected = json.dumps(asdict(example.manifest), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    assert dump_manifest(example.manifest) == expected


def test_a_redacted_build_lists_the_hashes_of_its_own_redacted_files(tmp_path: Path) -> None:
    from ekc.render.region import render_region  # noqa: PLC0415
    from ekc.spec.secrets import SecretsView, required_secrets  # noqa: PLC0415

    loaded = load_spec("inventories/example")
    view = SecretsView(placeholder_tree(required_secrets(loaded.region))).redact()
    write_build(render_region(loaded, view), tmp_path / "redacted")
    assert _sums_listed(tmp_path / "redacted") == _sums_on_disk(tmp_path / "redacted")


def _file(out: Path, host: str, path: str) -> Path:
    return out / "hosts" / host / "files" / path.lstrip("/")


def test_hosts_with_the_same_file_share_one_copy_on_disk(tmp_path: Path) -> None:
    from ekc.render.region import render_region  # noqa: PLC0415
    from ekc.spec.secrets import SecretsView, required_secrets  # noqa: PLC0415
    from tests.support.synthetic import synthetic_yaml  # noqa: PLC0415

    spec = tmp_path / "synthetic" / "region.yml"
    spec.parent.mkdir()
    spec.write_text(synthetic_yaml(50, departments=5, pbx_nodes=3), encoding="utf-8")
    loaded = load_spec(spec)
    result = render_region(loaded, SecretsView(placeholder_tree(required_secrets(loaded.region))))
    write_build(result, tmp_path / "build")
    shared = {_file(tmp_path / "build", f"pbx{n}", "/etc/asterisk/pjsip.conf").stat().st_ino for n in (1, 2, 3)}
    own = {_file(tmp_path / "build", f"pbx{n}", "/etc/hostname").stat().st_ino for n in (1, 2, 3)}
    assert len(shared) == 1 and len(own) == 3


def test_without_hard_links_every_host_gets_its_own_copy(
    example: RenderResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_build(example, tmp_path / "linked")

    def refuse(*_: object) -> None:
        raise PermissionError("no hard links on this file system")

    monkeypatch.setattr("os.link", refuse)
    write_build(example, tmp_path / "copied")
    assert _sums_on_disk(tmp_path / "copied") == _sums_on_disk(tmp_path / "linked")
    for host in example.manifest.hosts:
        for managed in host.files:
            copied = _file(tmp_path / "copied", host.name, managed.path).stat()
            assert copied.st_nlink == 1 and copied.st_mode & 0o777 == (0o600 if managed.secret else 0o644)


def test_a_folder_holding_only_apply_records_and_verify_results_takes_a_render(example: RenderResult,
                                                                               tmp_path: Path) -> None:
    (tmp_path / "applies").mkdir()
    (tmp_path / "applies" / "20270101T000000Z-fast-path.json").write_text("{}", encoding="utf-8")
    (tmp_path / "verify").mkdir()
    write_build(example, tmp_path)
    assert (tmp_path / "manifest.json").is_file()
    assert (tmp_path / "applies" / "20270101T000000Z-fast-path.json").is_file()


def test_a_folder_with_other_content_is_refused(example: RenderResult, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(BuildDirError, match="is not an ekc build directory"):
        write_build(example, tmp_path)
    assert not (tmp_path / "manifest.json").exists()
