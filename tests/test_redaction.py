"""Auditors' output carries no secret: every secret value is searched for in every redacted file."""

from __future__ import annotations

from pathlib import Path

import pytest

from ekc.render.build import write_build
from ekc.render.region import render_region
from ekc.render.report import write_report
from ekc.spec.load import load_spec
from tests.support.render import real_secrets

CASES = ("example", "small")


@pytest.mark.parametrize("case", CASES)
def test_redacted_build_and_report_hold_no_secret(case: str, tmp_path: Path) -> None:
    loaded = load_spec(case)
    secrets = real_secrets(loaded)
    values = secrets.values()
    assert len(values) > 20, "the scan must have real secret values to look for"
    build = tmp_path / "audit" / "rendered"
    write_build(render_region(loaded, secrets.redact()), build)
    write_report(build, tmp_path / "audit" / "index.html")
    scanned = [p for p in (tmp_path / "audit").rglob("*") if p.is_file()]
    assert len(scanned) > 10
    leaks = [(p.name, v[:6]) for p in scanned for v in values if v.encode() in p.read_bytes()]
    assert leaks == []


@pytest.mark.parametrize("case", CASES)
def test_full_render_keeps_secrets_only_in_secret_files(case: str) -> None:
    loaded = load_spec(case)
    secrets = real_secrets(loaded)
    result = render_region(loaded, secrets)
    secret_files = {(h.name, f.path) for h in result.manifest.hosts for f in h.files if f.secret}
    values = [v.encode() for v in secrets.values()]
    carriers = {key for key, data in result.contents.items() if any(v in data for v in values)}
    assert carriers <= secret_files


def test_redacted_manifest_hashes_the_real_content() -> None:
    loaded = load_spec("example")
    secrets = real_secrets(loaded)
    full = render_region(loaded, secrets).manifest
    redacted = render_region(loaded, secrets.redact()).manifest
    assert [h.files for h in full.hosts] == [h.files for h in redacted.hosts]
    assert redacted.redacted and not full.redacted
