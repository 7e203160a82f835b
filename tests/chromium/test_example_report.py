"""The example region's real audit report (redacted, real secrets) as headless Chromium shows it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ekc.render.build import write_build
from ekc.render.region import render_region
from ekc.render.report import write_report
from ekc.spec.load import load_spec
from tests.support.browser import dump_dom, screenshot
from tests.support.render import real_secrets

pytestmark = pytest.mark.chromium


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, object]:
    loaded = load_spec("example")
    secrets = real_secrets(loaded)
    out = tmp_path_factory.mktemp("audit")
    result = render_region(loaded, secrets.redact())
    write_build(result, out / "rendered")
    write_report(out / "rendered", out / "index.html")
    return dump_dom((out / "index.html").as_uri()), out, result.manifest


def test_report_shows_every_host(report: tuple[str, Path, object]) -> None:
    dom, _, _ = report
    assert all(f'data-testid="host-{host}"' in dom for host in ("pbx1", "db1", "crm1", "mon1"))


def test_report_shows_the_whole_flow_matrix(report: tuple[str, Path, object]) -> None:
    dom, _, manifest = report
    assert dom.count('data-testid="flow-row"') == len(manifest.flows)  # type: ignore[attr-defined]


def test_report_shows_the_spec_hash(report: tuple[str, Path, object]) -> None:
    dom, _, manifest = report
    match = re.search(r'data-testid="spec-hash"[^>]*>([^<]+)<', dom)
    assert match and manifest.spec_sha256 in match.group(1)  # type: ignore[attr-defined]


def test_report_screenshot_is_not_blank(report: tuple[str, Path, object]) -> None:
    _, out, _ = report
    png = screenshot((out / "index.html").as_uri(), out / "report.png")
    assert png.stat().st_size > 20_000
