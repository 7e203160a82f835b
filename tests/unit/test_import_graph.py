"""The module tree keeps its house rules (tests/support/importgraph.py), and the check itself can fail."""

from __future__ import annotations

from pathlib import Path

from tests.support.importgraph import check


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def test_ekc_has_no_cycle_no_upward_import_and_no_overlong_module() -> None:
    assert check() == []


def test_a_cycle_hidden_in_a_function_is_found(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "ekc/__init__.py": "",
        "ekc/render/__init__.py": "",
        "ekc/render/a.py": "from ekc.render.b import B\nA = 1\n",
        "ekc/render/b.py": "def f():\n    from ekc.render import a\n    return a\nB = 2\n",
    })
    assert check(root, ("ekc",)) == ["import cycle: ekc.render.a <-> ekc.render.b"]


def test_a_product_module_importing_the_lab_is_refused(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "ekc/__init__.py": "",
        "ekc/lab/__init__.py": "",
        "ekc/lab/nodes.py": "X = 1\n",
        "ekc/render/__init__.py": "",
        "ekc/render/region.py": "import ekc.lab.nodes\n",
    })
    (problem,) = check(root, ("ekc",))
    assert problem.startswith("ekc/render/region.py:1: ekc.render.region imports ekc.lab.nodes, a later layer")


def test_a_long_module_needs_a_reason(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"ekc/__init__.py": "", "ekc/big.py": "x = 1\n" * 401})
    assert check(root, ("ekc",)) == ["ekc/big.py: 401 lines (over 400): split it, or give the reason in LONG_MODULES"]
