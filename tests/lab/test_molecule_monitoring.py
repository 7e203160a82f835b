"""molecule/monitoring: roles/common and roles/monitoring on a lab node: molecule test passes."""

from __future__ import annotations

import pytest

from tests.support.molecule import assert_scenario_passes

pytestmark = [pytest.mark.lab, pytest.mark.slow]


def test_molecule_monitoring_scenario_passes() -> None:
    assert_scenario_passes("monitoring")
