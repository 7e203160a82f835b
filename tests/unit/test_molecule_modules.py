"""Every molecule scenario has its lab test module, so `make test` runs each one."""

from __future__ import annotations

from tests.support.molecule import REPO, scenarios


def test_every_scenario_has_a_lab_module() -> None:
    found = scenarios()
    assert found, "no molecule scenario found: this test checks nothing"
    missing = [s for s in found if not (REPO / "tests" / "lab" / f"test_molecule_{s}.py").exists()]
    assert not missing, f"molecule scenarios without a tests/lab/test_molecule_<scenario>.py: {missing}"
