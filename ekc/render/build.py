"""Write a render to a build directory: the per-host file trees, the manifest, the inventory, the departments'
placement (with a pool behind the SIP edge), SHA256SUMS."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import yaml

from ekc.render.components.asterisk_pool import PLACEMENTS_NAME, dump_placements
from ekc.render.manifest import HOSTS_DIR, MANIFEST_NAME, BuildManifest, dump_manifest, host_file_path
from ekc.render.model import RenderResult

INVENTORY_NAME = "inventory.yml"
SUMS_NAME = "SHA256SUMS"
OWNED = (MANIFEST_NAME, INVENTORY_NAME, SUMS_NAME, HOSTS_DIR, PLACEMENTS_NAME)
# What other commands keep in build/<region>/ beside a render: apply records, verify's JUnit, the audit report.
BESIDE = frozenset({"applies", "verify", "audit"})


class BuildDirError(Exception):
    """The output directory exists and is not an ekc build: nothing is overwritten."""


def write_build(result: RenderResult, out: Path) -> None:
    """Replace what a previous render wrote in ``out`` (other content, such as audit/, stays)."""
    _prepare(out, private=not result.manifest.redacted)
    written = _write_host_files(result, out)
    documents = [(MANIFEST_NAME, dump_manifest(result.manifest)), (INVENTORY_NAME, ansible_inventory(result.manifest))]
    if result.placements:
        documents.append((PLACEMENTS_NAME, dump_placements(result.placements)))
    for name, text in documents:
        data = text.encode("utf-8")
        (out / name).write_bytes(data)
        written[name] = hashlib.sha256(data).hexdigest()
    (out / SUMS_NAME).write_text(sha256sums(out, written), encoding="utf-8")


def _write_host_files(result: RenderResult, out: Path) -> dict[str, str]:
    """Write every host's files; return the sha256 of each, by path relative to ``out``.

    Hosts share file contents (the same bytes object): each distinct content is written and hashed once, and
    the other hosts' copies of it with the same mode are hard links to that file (20 Asterisk nodes share one
    3 MB pjsip.conf). Files are created 0600 and get their final mode before they are closed.
    """
    redacted = result.manifest.redacted
    secret = {(h.name, f.path) for h in result.manifest.hosts for f in h.files if f.secret}
    digests: dict[int, str] = {}
    written: dict[str, str] = {}
    first: dict[tuple[int, int], Path] = {}  # (content, mode): the file written with them
    targets = {key: host_file_path(out, *key) for key in sorted(result.contents)}
    _make_dirs(out, {target.parent for target in targets.values()})
    for (host, path), target in targets.items():
        data = result.contents[(host, path)]
        mode = 0o600 if (host, path) in secret and not redacted else 0o644
        same = first.get((id(data), mode))
        if same is None or not _linked(same, target):
            _write_file(target, data, mode)
            first[(id(data), mode)] = target
        digest = digests.get(id(data))
        if digest is None:
            digest = digests[id(data)] = hashlib.sha256(data).hexdigest()
        written[target.relative_to(out).as_posix()] = digest
    return written


def _linked(existing: Path, target: Path) -> bool:
    """Make ``target`` a hard link to ``existing`` (same bytes and mode), if the file system allows it."""
    try:
        os.link(existing, target)
    except OSError:  # no hard links here, or too many to one file: the caller writes a copy
        return False
    return True


def _make_dirs(out: Path, directories: set[Path]) -> None:
    """Create ``directories`` and the folders between them and ``out``: one mkdir each, parents first."""
    wanted = set(directories)
    for directory in directories:
        wanted.update(parent for parent in directory.parents if parent.is_relative_to(out) and parent != out)
    for directory in sorted(wanted, key=lambda path: len(path.parts)):
        directory.mkdir(exist_ok=True)


def _write_file(target: Path, data: bytes, mode: int) -> None:
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def _prepare(out: Path, *, private: bool) -> None:
    foreign = [entry.name for entry in out.iterdir() if entry.name not in BESIDE] if out.exists() else []
    if foreign and not (out / MANIFEST_NAME).exists():
        raise BuildDirError(f"{out} exists and is not an ekc build directory; refusing to write into it")
    out.mkdir(parents=True, exist_ok=True)
    if private:
        out.chmod(0o700)
    for name in OWNED:
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def ansible_inventory(manifest: BuildManifest) -> str:
    """The Ansible inventory of the region: every host, and one group per role (``sip-proxy`` is the group
    ``sip_proxy``: Ansible's group names are identifiers)."""
    groups: dict[str, dict[str, dict[str, None]]] = {}
    for host in manifest.hosts:
        for role in host.roles:
            groups.setdefault(role.replace("-", "_"), {"hosts": {}})["hosts"][host.name] = None
    inventory = {
        "all": {
            "hosts": {h.name: {"ansible_host": h.address, "ansible_user": "root"} for h in manifest.hosts},
            "vars": {"ekc_region_code": manifest.region_code, "ekc_spec_sha256": manifest.spec_sha256},
            "children": groups,
        }
    }
    head = f"# Generated by ekc from {manifest.spec} (spec sha256 {manifest.spec_sha256}). Do not edit by hand.\n"
    return head + yaml.safe_dump(inventory, sort_keys=True, allow_unicode=True, default_flow_style=False)


def sha256sums(root: Path, known: Mapping[str, str] | None = None) -> str:
    """``sha256sum``-compatible lines for every file under ``root`` except SHA256SUMS, sorted by path.

    ``known`` gives the sha256 of files just written (by path relative to ``root``), which are not read back.
    """
    known = known or {}
    lines = []
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if rel != SUMS_NAME and not rel.startswith("audit/"):
                digest = known.get(rel) or hashlib.sha256(path.read_bytes()).hexdigest()
                lines.append(f"{digest}  {rel}")
    return "\n".join(sorted(lines, key=lambda line: line[66:])) + "\n"
