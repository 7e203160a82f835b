"""Lab tests need real containers: skip them, saying what is missing, on a machine that cannot run the lab."""

from __future__ import annotations

import pytest

from ekc.lab.model import preflight


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every lab test skipped, with the missing pieces as the reason, when ``preflight`` finds any."""
    lab_items = [item for item in items if item.get_closest_marker("lab") is not None]
    if not lab_items:
        return
    missing = preflight()
    if not missing:
        return
    skip = pytest.mark.skip(reason="the lab cannot run here: " + "; ".join(missing))
    for item in lab_items:
        item.add_marker(skip)
