"""Run one molecule scenario (create, converge, idempotence, verify, destroy) through molecule itself.

Each scenario has its own lab test module (``tests/lab/test_molecule_<scenario>.py``), so the test run can
spread them over its workers; ``tests/unit/test_molecule_modules.py`` checks that none is forgotten.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def scenarios() -> list[str]:
    """Every molecule scenario of the repository (a folder with a molecule.yml)."""
    return sorted(p.parent.name for p in (REPO / "molecule").glob("*/molecule.yml"))


def assert_scenario_passes(scenario: str) -> None:
    """``molecule test -s <scenario>`` succeeds, and its idempotence step ran."""
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ.get('PATH', '')}", "ANSIBLE_NOCOLOR": "1",
           "NO_COLOR": "1", "PY_COLORS": "0"}
    done = subprocess.run([f"{bindir}/molecule", "test", "-s", scenario], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=1500, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "idempotence" in output.lower()
