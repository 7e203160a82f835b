"""Draining an Asterisk node on real lab nodes: a call in progress on it ends normally, and the next call for its
department is answered by the standby.

The region is ``inventories/ha`` trimmed to the SIP edge (edge1, edge2) and two Asterisk nodes (pbx1, pbx2), as
in test_sip_edge, on 10.245.0.0/24. The drained node is the primary of ``health`` (open around the clock, so the
test does not depend on the time of day): its spec entry gets ``state: drain``, the region is rendered and applied
again while the call is up.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ekc.engines.lifecycle import parse_calls
from ekc.lab.call import Timing, call_plan
from ekc.lab.region import lab_call_network
from ekc.lab.sipp import SippResult
from ekc.render.components.asterisk_pool import placements
from ekc.spec.load import load_spec
from tests.lab.test_sip_edge import _trim, edge_call  # the same region as the edge drill: its trim, not a copy of it
from tests.support.labregion import AppliedRegion, applied_region, worker_name

pytestmark = [pytest.mark.lab, pytest.mark.slow]

REGION = worker_name("lifecycle")
PREFIX = "10.245."
DEPARTMENT = "health"
LONG = Timing(talk_ms=60000)
SHORT = Timing(talk_ms=1500)
CALL_UP_S = 40  # how long the long call may take to be answered on the drained node


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppliedRegion]:
    with applied_region(tmp_path_factory.mktemp("lifecycle"), REGION, source="ha", prefix=PREFIX,
                        edit=_trim) as applied:
        yield applied


def _drain(name: str) -> Callable[[str], str]:
    """The spec's text with node ``name`` drained."""
    def edit(text: str) -> str:
        drained, count = re.subn(rf"(\{{name: {name}, [^}}]*)\}}", r"\1, state: drain}", text)
        assert count == 1, f"no single entry for {name}"
        return drained
    return edit


def _calls(region: AppliedRegion, node: str) -> int | None:
    return parse_calls(region.run(node, "asterisk -rx 'core show channels count'").stdout)


def test_a_drained_node_finishes_its_call_and_the_standby_takes_the_next(region: AppliedRegion,
                                                                         tmp_path: Path) -> None:
    placed = placements(region.spec.region)[DEPARTMENT]
    drained, standby = placed.primary, placed.standby
    assert standby is not None
    plan = call_plan(region.spec.region, lab_call_network(region.spec), department=DEPARTMENT)
    assert plan.node == drained
    outcome: dict[str, tuple[SippResult, bool]] = {}
    long_call = threading.Thread(
        target=lambda: outcome.update(long=edge_call(region, plan, tmp_path, "long", timing=LONG)))
    long_call.start()
    deadline = time.monotonic() + CALL_UP_S
    while not (_calls(region, drained) or 0):
        assert time.monotonic() < deadline and long_call.is_alive(), "the long call never reached the node"
        time.sleep(1)

    region.rerender(_drain(drained))
    applied = region.apply()
    assert applied.ok, [h.error for h in applied.hosts if not h.ok]
    assert (_calls(region, drained) or 0) >= 1, "the call in progress was dropped by the drain"
    status = region.run("edge1", "kamcmd dispatcher.list").stdout
    assert re.search(rf"URI: sip:{re.escape(region.address(drained))}:5060\s+FLAGS: D", status), status

    long_call.join(timeout=180)
    call, answered = outcome["long"]
    assert answered and call.ok, call.describe()

    after = load_spec(region.region_dir).region
    assert placements(after)[DEPARTMENT].primary == standby
    new_plan = call_plan(after, lab_call_network(region.spec), department=DEPARTMENT)
    before = region.run(standby, "cat /var/log/asterisk/queue_log").stdout.count(f"|{DEPARTMENT}|")
    call, answered = edge_call(region, new_plan, tmp_path, "next", timing=SHORT, ready_on=(standby,))
    assert answered and call.ok, call.describe()
    assert region.run(standby, "cat /var/log/asterisk/queue_log").stdout.count(f"|{DEPARTMENT}|") > before
