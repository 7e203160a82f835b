"""The SIP edge and the Asterisk pool on real lab nodes: Kamailio on edge1 and edge2, keepalived holding the
virtual address, pbx1 and pbx2 sharing the departments of ``inventories/ha`` (each a primary and a standby).

The region is ``inventories/ha`` with a second Asterisk node and without its database, CRM and monitoring nodes
(the database drill is test_database_cluster's), on 10.243.0.0/24. SIPp on the deploy host plays the carrier and
the operators' phones, which register at the virtual address only. Then the drills: an Asterisk node killed as
by a power cut (its departments answered by their standby within 10 s, the other node's calls unaffected), and
the proxy holding the virtual address killed (the address moves within 5 s, a phone registered before is still
reached, and a new call goes through without any change anywhere).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ekc.lab.call import (
    CDR_CSV,
    PHONE_PORT,
    CallPlan,
    Timing,
    call_plan,
    caller_number,
    carrier_call,
    operator_phone,
    parse_cdr,
)
from ekc.lab.nodes import crash_node, lab_up
from ekc.lab.region import lab_call_network
from ekc.lab.sipp import SippResult
from ekc.render.components.asterisk_dialplan import normalise_number
from ekc.render.components.asterisk_pool import placements
from tests.bench.callload import Load, steady_load
from tests.support.labregion import (
    AppliedRegion,
    applied_region,
    edge_and_asterisk_only,
    worker_name,
)

pytestmark = [pytest.mark.lab, pytest.mark.slow]

REGION = worker_name("edge")
PREFIX = "10.243."
TIMING = Timing(talk_ms=1500)
STANDBY_LIMIT_S = 10
LOADED = ("social", "health", "housing", "transport")  # the departments a steady load may call (IVR keys 1-4)
LOAD_RATE = 0.3  # calls a second into the surviving node's departments while the other is killed
SETTLE_S = 15  # of load before the kill and after the standby answered
VIP_LIMIT_S = 5


def _trim(text: str) -> str:
    """The proxies and two Asterisk nodes: no database (nor etcd), CRM or monitoring node; every department open
    around the clock, so the drills do not depend on the time of day."""
    return edge_and_asterisk_only(text, 2).replace("hours: weekdays-08-20", "hours: always")


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppliedRegion]:
    with applied_region(tmp_path_factory.mktemp("edge"), REGION, source="ha", prefix=PREFIX, edit=_trim) as applied:
        yield applied


def _vip(region: AppliedRegion) -> str:
    edge = region.spec.region.telephony.edge
    assert edge is not None
    return edge.virtual_address


def _holder(region: AppliedRegion, among: tuple[str, ...] = ("edge1", "edge2")) -> list[str]:
    """The proxies that carry the virtual address on an interface."""
    vip = _vip(region)
    return [n for n in among if f"inet {vip}/" in region.run(n, "ip -4 -o addr show").stdout]


def _plan(region: AppliedRegion, department: str) -> CallPlan:
    return call_plan(region.spec.region, lab_call_network(region.spec), department=department)


def edge_call(region: AppliedRegion, plan: CallPlan, workdir: Path, name: str, *, timing: Timing = TIMING,
              ready_on: tuple[str, ...] = (), port: int = PHONE_PORT,
              caller: str | None = None) -> tuple[SippResult, bool]:
    """One call from the carrier through the IVR to the plan's operator, whose phone registers for this call only:
    (the carrier's result, whether the phone answered). The call is placed once the member is available on the
    nodes ``ready_on`` (default: the department's primary): a member's state follows its phone's registration
    within a couple of seconds, and a queue whose members are all unavailable takes no call."""
    with operator_phone(plan, plan.operator, region.secrets.get("sip", plan.operator), workdir / name,
                        timing=timing, port=port) as phone:
        for node in ready_on or (plan.node,):
            member_state(region, node, plan.operator, "NOT_INUSE")
        call = carrier_call(plan, workdir / name, caller=caller or caller_number(), timing=timing,
                            name=f"carrier-{name}")
        answered = any(o.startswith("answered") for o in phone.outcomes())
    return call, answered


def _answered(region: AppliedRegion, plan: CallPlan, workdir: Path, name: str, *,
              ready_on: tuple[str, ...] = (), port: int = PHONE_PORT) -> bool:
    call, answered = edge_call(region, plan, workdir, name, ready_on=ready_on, port=port)
    return call.ok and answered


def media_of(messages: str, status: str) -> set[str]:
    """The media addresses (SDP ``c=``) of the responses ``status`` (e.g. ``183``) SIPp received."""
    found = set()
    for message in messages.split("message received")[1:]:
        body = message.split("\n", 1)[1].lstrip() if "\n" in message else ""
        if body.startswith(f"SIP/2.0 {status} "):
            found |= set(re.findall(r"^c=IN IP4 (\S+)", body, re.MULTILINE))
    return found


def _known_to(region: AppliedRegion, proxy: str, plan: CallPlan, timeout: float = 10) -> None:
    """Wait until ``proxy`` has the plan's operator in its location (replicated over DMQ), or fail."""
    deadline = time.monotonic() + timeout
    while True:
        contacts = region.run(proxy, f"kamcmd ul.lookup location s:{plan.operator}")
        if contacts.returncode == 0 and plan.operator_address in contacts.stdout:
            return
        assert time.monotonic() < deadline, f"{proxy} never learnt the phone {plan.operator}: {contacts}"
        time.sleep(0.5)


def test_one_proxy_holds_the_virtual_address_and_both_run_kamailio(region: AppliedRegion) -> None:
    """Exactly one proxy holds it: the one whose keepalived became master first (nopreempt: the address does not
    move back when a proxy of higher priority starts later or returns, which would cut the calls' signalling
    twice)."""
    assert len(_holder(region)) == 1, _holder(region)
    for proxy in ("edge1", "edge2"):
        assert region.run(proxy, "systemctl is-active kamailio keepalived").stdout.split() == ["active", "active"]


def test_a_phone_registered_through_one_proxy_is_known_to_both(region: AppliedRegion, tmp_path: Path) -> None:
    plan = _plan(region, "health")
    with operator_phone(plan, plan.operator, region.secrets.get("sip", plan.operator), tmp_path, timing=TIMING):
        for proxy in ("edge1", "edge2"):
            _known_to(region, proxy, plan)
        # The department's node marks the registered phone's member available, the others unavailable.
        absent = next(op.extension for op in region.spec.region.telephony.operators
                      if op.extension != plan.operator and any(s.department == "health" for s in op.skills()))
        member_state(region, plan.node, plan.operator, "NOT_INUSE")
        member_state(region, plan.node, absent, "UNAVAILABLE")


def member_state(region: AppliedRegion, node: str, extension: str, state: str, timeout: float = 10) -> None:
    """Wait until the queue member ``extension`` on ``node`` has device state ``state``, or fail."""
    deadline = time.monotonic() + timeout
    while True:
        states = region.run(node, "asterisk -rx 'devstate list'").stdout
        found = re.search(rf"Custom:ekc-op-{extension}'\s+State: '(\w+)'", states)
        if found and found.group(1) == state:
            return
        assert time.monotonic() < deadline, f"{node}: member {extension} is not {state}: {states}"
        time.sleep(0.5)


def test_every_department_is_answered_through_the_virtual_address(region: AppliedRegion, tmp_path: Path) -> None:
    """Trunk calls go round robin over both nodes' IVRs; a department the IVR's node does not serve is redirected
    to its primary through the edge: each department answered twice, so each IVR saw it once. The IVR plays in
    early media (183) from the node that took the call; the answer (200) and its media come from the primary
    always, so the node that redirected the call carries none of its audio, and writes no record of it: each
    call's CDR rows (one per part: the queue, then the rating) are the primary's, with one unique id named after
    that node."""
    placed = placements(region.spec.region)
    addresses = {n.address for n in region.spec.region.nodes_with("asterisk")}
    for department in sorted({p.department for p in placed.values()} & {"health", "social"}):
        plan = _plan(region, department)
        assert plan.node == placed[department].primary
        ivr, answer, callers = set(), set(), []
        for attempt in (1, 2):
            callers.append(caller_number())
            call, answered = edge_call(region, plan, tmp_path, f"{department}-{attempt}", caller=callers[-1])
            assert call.ok and answered, f"{department} call {attempt}: {call.describe()}"
            ivr |= media_of(call.messages, "183")
            answer |= media_of(call.messages, "200")
        assert ivr == addresses, (department, ivr)  # each node's IVR took one of the two calls
        assert answer == {plan.node_address}, (department, answer)
        queue_log = region.run(plan.node, "cat /var/log/asterisk/queue_log").stdout
        assert queue_log.count(f"|{department}|") >= 2, queue_log
        for caller in callers:
            rows = _cdr_rows(region, normalise_number(caller), plan.node)
            assert rows[plan.node] and not any(r for node, r in rows.items() if node != plan.node), (caller, rows)
            ids = {row["uniqueid"] for row in rows[plan.node]}
            assert len(ids) == 1 and ids.pop().startswith(f"{plan.node}-"), rows[plan.node]


def _cdr_rows(region: AppliedRegion, caller: str, node: str, timeout: float = 10) -> dict[str, list[dict[str, str]]]:
    """Each Asterisk node's CDR rows (cdr_csv) of the caller, once ``node`` has written one (or after timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = {n.name: parse_cdr(region.run(n.name, f"cat {CDR_CSV}").stdout, caller)
                for n in region.spec.region.nodes_with("asterisk")}
        if rows[node] or time.monotonic() > deadline:
            return rows
        time.sleep(1)


def test_an_asterisk_node_killed_its_departments_go_to_the_standby(region: AppliedRegion, tmp_path: Path) -> None:
    placed = placements(region.spec.region)
    victim = placed["health"].primary
    other = next(n for n in ("pbx1", "pbx2") if n != victim)
    assert placed["health"].standby == other
    plan = _plan(region, "health")
    # Under load: calls go on all the while into the departments of the node that stays (IVR keys 1-4 only).
    unaffected = [d for d, p in sorted(placed.items()) if p.primary == other and d in LOADED]
    assert unaffected, placed
    loads = [Load(_plan(region, d), 1 / len(unaffected)) for d in unaffected]
    with steady_load(region, loads, LOAD_RATE, tmp_path / "load") as load:
        time.sleep(SETTLE_S)
        crash_node(region.lab, victim)
        killed = time.monotonic()
        try:
            started = None
            for attempt in range(4):
                began = time.monotonic() - killed
                if _answered(region, plan, tmp_path, f"standby-{attempt}", ready_on=(other,), port=PHONE_PORT + 1):
                    started = began
                    break
            assert started is not None, "the standby answered no call for health"
            print(f"asterisk failover: {other} answers health; the first call answered was placed {started:.1f} s "
                  f"after {victim} was killed")
            assert started <= STANDBY_LIMIT_S, f"{started:.1f} s"
            assert "|health|" in region.run(other, "cat /var/log/asterisk/queue_log").stdout
            time.sleep(SETTLE_S)
        finally:
            lab_up(region.lab)
    print(f"load on {other} meanwhile ({', '.join(unaffected)}): {load.describe()}")
    assert load.created > 0 and load.failed == 0, load.describe()
    deadline = time.monotonic() + 120
    while region.run(victim, "asterisk -rx 'core show version'").returncode != 0:
        assert time.monotonic() < deadline, f"{victim} did not come back"
        time.sleep(2)


def test_the_proxy_with_the_virtual_address_killed_it_moves_and_calls_go_on(
        region: AppliedRegion, tmp_path: Path) -> None:
    plan = _plan(region, "health")
    holder = _holder(region)
    assert holder, "no proxy holds the virtual address"
    with operator_phone(plan, plan.operator, region.secrets.get("sip", plan.operator), tmp_path / "phone",
                        timing=TIMING) as phone:
        survivor = next(n for n in ("edge1", "edge2") if n != holder[0])
        _known_to(region, survivor, plan)
        crash_node(region.lab, holder[0])
        killed = time.monotonic()
        try:
            while not _holder(region, (survivor,)):
                assert time.monotonic() - killed < 30, "the virtual address did not move"
                time.sleep(0.2)
            moved = time.monotonic() - killed
            print(f"virtual address: on {survivor} {moved:.1f} s after {holder[0]} was killed")
            assert moved <= VIP_LIMIT_S, f"{moved:.1f} s"
            # The phone registered through the dead proxy, and is still reached: the location is replicated.
            call = carrier_call(plan, tmp_path / "after", caller=caller_number(), timing=TIMING, name="after")
            outcomes = phone.outcomes()
            assert call.ok and any(o.startswith("answered") for o in outcomes), f"{call.describe()}\nphone: {outcomes}"
        finally:
            lab_up(region.lab)
