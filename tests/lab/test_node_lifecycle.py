"""Asterisk nodes entering and leaving service on real lab nodes, while calls go on.

The region is ``inventories/ha`` trimmed to the SIP edge (edge1, edge2) and two Asterisk nodes (pbx1, pbx2), as
in test_sip_edge, on 10.245.0.0/24, every department open around the clock (the drills do not depend on the
time of day). First a drain during one long call: the primary of ``health`` gets ``state: drain``, the region is
rendered and applied again while the call is up; the call ends normally and the next one is answered by the
standby. Then the node's whole life under a steady load through the edge (calls into four departments at once):
pbx3 added to the spec and applied as an engineer does it (``secrets init``, ``render``, ``apply``; the lab
brings the server up), it takes calls for the departments that move to it; drained, its calls end there; marked
absent (``--allow-data-loss``: its recordings leave with it), its services stop. Not one call of the load fails.
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
from tests.bench.callload import Load, queue_events, steady_load
from tests.lab.test_sip_edge import _trim, edge_call  # the same region as the edge drill: its trim, not a copy of it
from tests.support.labregion import AppliedRegion, applied_region, node_state, worker_name

pytestmark = [pytest.mark.lab, pytest.mark.slow]

REGION = worker_name("lifecycle")
PREFIX = "10.245."
DEPARTMENT = "health"
LONG = Timing(talk_ms=60000)
SHORT = Timing(talk_ms=1500)
CALL_UP_S = 40  # how long the long call may take to be answered on the drained node
LOADED = ("social", "health", "housing", "transport")  # the steady load's departments (IVR keys 1-4)
LOAD_RATE = 0.4  # calls a second, together
SETTLE_S = 20  # of load before the first change and after the last
NEW = "pbx3"
TAKES_CALLS_S = 90  # how long after its apply the new node may take to answer a call
CALLS_END_S = 120  # how long the drained node's calls may take to end


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppliedRegion]:
    with applied_region(tmp_path_factory.mktemp("lifecycle"), REGION, source="ha", prefix=PREFIX,
                        edit=_trim) as applied:
        yield applied


def _drain(name: str) -> Callable[[str], str]:
    return node_state(name, "drain")


def _added(name: str, address: str) -> Callable[[str], str]:
    """The spec's text with an Asterisk node ``name`` after the last one."""
    def edit(text: str) -> str:
        last = list(re.finditer(r"\n  - \{name: pbx\d+,[^\n]*", text))[-1]
        line = f"\n  - {{name: {name}, address: {address}, roles: [asterisk]}}"
        return text[:last.end()] + line + text[last.end():]
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


def _connects(region: AppliedRegion, node: str, since: float) -> int:
    return queue_events(region, (node,), since).get("CONNECT", 0)


def _wait(what: str, done: Callable[[], bool], timeout: float) -> float:
    """Seconds until ``done()``; fails with ``what`` after ``timeout``."""
    started = time.monotonic()
    while not done():
        assert time.monotonic() - started < timeout, f"{what} within {timeout:.0f} s"
        time.sleep(2)
    return time.monotonic() - started


def test_a_node_added_under_load_takes_calls_and_leaves_without_dropping_one(region: AppliedRegion,
                                                                             tmp_path: Path) -> None:
    network = lab_call_network(region.spec)
    loads = [Load(call_plan(region.spec.region, network, department=d), 1 / len(LOADED)) for d in LOADED]
    nodes = [n.name for n in region.spec.region.nodes_with("asterisk")]
    with steady_load(region, loads, LOAD_RATE, tmp_path / "load") as load:
        time.sleep(SETTLE_S)
        # The engineer renders before each change (the files auditors review): the plan compares to that.
        assert region.deploy("render", str(region.region_dir)).returncode == 0
        grown = region.changed(_added(NEW, f"{PREFIX}0.13"))
        moved = [d for d, p in placements(grown.spec.region).items() if p.primary == NEW]
        assert set(moved) & set(LOADED), f"no loaded department moved to {NEW}: {moved}"
        planned = grown.plan()
        for department in moved:  # the plan says which departments move, and where
            assert re.search(rf"department {department}: primary \S+ -> {NEW}\b", planned), (department, planned)
        added = time.time()
        grown.cli_apply(tmp_path / "add")
        took = _wait(f"{NEW} answers a call", lambda: _connects(grown, NEW, added) > 0, TAKES_CALLS_S)
        print(f"{NEW} added under load: its departments {', '.join(moved)}; its first call connected {took:.0f} s "
              "after its apply")

        assert grown.deploy("render", str(region.region_dir)).returncode == 0
        drained = grown.changed(node_state(NEW, "drain"))
        planned = drained.plan()
        assert f"{NEW} drains" in planned, planned
        drained.cli_apply(tmp_path / "drain")
        ended = _wait(f"the calls on the drained {NEW} end", lambda: _calls(drained, NEW) == 0, CALLS_END_S)
        print(f"{NEW} drained under load: its last call ended {ended:.0f} s after its apply")

        gone = drained.changed(node_state(NEW, "absent"))
        planned = gone.plan()
        assert f"{NEW} is absent" in planned and "0 call(s) in progress" in planned, planned
        gone.cli_apply(tmp_path / "absent", "--allow-data-loss")
        stopped = gone.run(NEW, "systemctl is-active asterisk ssh nftables")  # SSH and the firewall stay
        assert stopped.stdout.split() == ["inactive", "active", "active"], stopped
        time.sleep(SETTLE_S)
    assert load.created > 0 and load.failed == 0, load.describe()
    per_node = {node: queue_events(gone, (node,), load.since) for node in (*nodes, NEW)}
    connected = sum(events.get("CONNECT", 0) for events in per_node.values())
    assert per_node[NEW].get("CONNECT", 0) > 0, per_node
    # A call that reaches the new node before its queue members' states are set is refused there (503) and the
    # edge gives it to the standby: every call reached an operator, none was answered to an empty queue.
    print(f"steady load: {connected} of {load.created} calls reached an operator ({per_node})")
    assert connected == load.created, per_node
    print(f"steady load: {load.created} calls, none failed ({load.describe()})")
