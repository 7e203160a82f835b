"""Region-sized commands run without the cyclic collector and give it back as they found it."""

from __future__ import annotations

import gc

import pytest

from ekc.cli.render import region_sized


def test_the_collector_is_off_during_the_command_and_back_after_it() -> None:
    seen: list[bool] = []

    @region_sized
    def command(value: int) -> int:
        seen.append(gc.isenabled())
        return value + 1

    assert gc.isenabled()
    try:
        assert command(1) == 2
        assert seen == [False] and gc.isenabled()
        gc.disable()
        command(1)
        assert not gc.isenabled(), "a collector that was off stays off"
    finally:
        gc.enable()
        gc.unfreeze()


def test_a_failing_command_gives_the_collector_back_too() -> None:
    @region_sized
    def command() -> None:
        raise ValueError("bad spec")

    try:
        with pytest.raises(ValueError, match="bad spec"):
            command()
        assert gc.isenabled()
    finally:
        gc.unfreeze()
