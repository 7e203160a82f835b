"""Golden renders: the example regions render exactly to tests/golden/<case>/ (regenerate: make golden)."""

from __future__ import annotations

import filecmp
import shutil
from pathlib import Path

import pytest

from ekc.render.build import write_build
from tests.support.render import placeholder_render

GOLDEN = Path(__file__).parent / "golden"
CASES = ("example", "small", "ha")


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", CASES)
def test_render_matches_golden(case: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    out = tmp_path / case
    write_build(placeholder_render(case), out)
    golden = GOLDEN / case
    if request.config.getoption("--update-golden"):
        shutil.rmtree(golden, ignore_errors=True)
        shutil.copytree(out, golden)
    rendered, expected = _tree(out), _tree(golden)
    assert sorted(rendered) == sorted(expected), "set of rendered files differs from golden"
    different = [name for name in rendered if rendered[name] != expected[name]]
    assert not different, f"differs from golden (run make golden and review the diff): {different}"


def test_two_renders_are_byte_identical(tmp_path: Path) -> None:
    write_build(placeholder_render("example"), tmp_path / "a")
    write_build(placeholder_render("example"), tmp_path / "b")
    comparison = filecmp.dircmp(tmp_path / "a", tmp_path / "b")
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b"), comparison.report()
