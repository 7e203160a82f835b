"""The CRM and the wallboard behind the SIP edge on real lab nodes: the screen pop and click-to-call for an
operator whichever Asterisk node serves the call, click-to-call when the first Asterisk node is down, and the
wallboard's servers.

``crmedge`` is ``inventories/ha`` on 10.247.0.0/24 with the edge (edge1, edge2), two Asterisk nodes (pbx1,
pbx2), one database node (db1, PostgreSQL alone: the cluster has its own drill), the CRM (crm1) and monitoring
(mon1); every department open around the clock. The operator's phone (SIPp) registers at the virtual address.
Then:

- a call through the edge to a department of pbx1 and one to a department of pbx2: each INVITE the phone gets
  (from the node that serves the department, through the proxy) carries the screen pop's Call-Info, naming the
  call by the caller channel's unique id on the node that queued it (its queue log's callid), and the CRM opens
  that address for a logged-in operator: the call's card;
- a click in the CRM (from the workstation the phone registered from) rings the phone through the edge; with
  pbx1, the first node the CRM's nginx asks, killed as by a power cut, the next click is passed on to pbx2 and
  rings the phone all the same;
- the wallboard (headless Chromium) shows every server up, the proxy that holds the virtual address and the one
  in reserve, both Asterisk nodes taking calls; with pbx1 killed, its tile turns red (not answering, out of the
  dispatcher).
"""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ekc.lab.call import CallPlan, Timing, call_plan, caller_number, carrier_call, operator_phone, read_record
from ekc.lab.nodes import crash_node, lab_up
from ekc.lab.region import lab_call_network
from ekc.render.components.addresses import crm_hostname
from ekc.render.components.asterisk_dialplan import normalise_number
from ekc.render.components.asterisk_pool import placements
from tests.lab.test_crm import CALL_INFO, _login, _wait_for_setup, click
from tests.lab.test_monitoring import server_tile, wallboard_dom
from tests.lab.test_sip_edge import member_state
from tests.support.browser import chromium_available, require_chromium
from tests.support.labregion import AppliedRegion, applied_region, with_asterisk_nodes, worker_name

pytestmark = [pytest.mark.lab, pytest.mark.slow]

PREFIX = "10.247."
TIMING = Timing(answer_ms=300, talk_ms=1500)
RING_S = 30  # how long a click may take to ring the phone
WALLBOARD_S = 90  # how long the wallboard may take to show a killed node (scrapes, the dispatcher's probes)


def _trim(text: str) -> str:
    """The edge, pbx1 and pbx2, db1 with PostgreSQL alone, crm1, mon1."""
    text = with_asterisk_nodes(text, 2)
    text = re.sub(r"\n  - \{name: (db2|db3),[^\n]*", "", text)
    text = text.replace("{name: db1, address: 10.247.0.21, roles: [postgresql, etcd]}",
                        "{name: db1, address: 10.247.0.21, roles: [postgresql]}")
    text = re.sub(r"\ndatabase:\n(  [^\n]*\n)+", "\n", text)  # the cluster's settings (one node here)
    assert "roles: [postgresql, etcd]" not in text and "{name: db2" not in text, "the spec's nodes changed shape"
    return text.replace("hours: weekdays-08-20", "hours: always")


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppliedRegion]:
    with applied_region(tmp_path_factory.mktemp("crmedge"), worker_name("crmedge"), source="ha", prefix=PREFIX,
                        edit=_trim) as applied:
        _wait_for_setup(applied)
        yield applied


def _plan_on(region: AppliedRegion, node: str) -> CallPlan:
    """A call to a department whose primary is ``node``."""
    department = next(d for d, p in sorted(placements(region.spec.region).items()) if p.primary == node)
    return call_plan(region.spec.region, lab_call_network(region.spec), department=department)


def _answered(outcomes: tuple[str, ...]) -> bool:
    return any(o.startswith("answered") for o in outcomes)


def test_the_screen_pop_comes_from_whichever_node_serves_the_call(region: AppliedRegion, tmp_path: Path) -> None:
    opener, base = _login(region)
    for node in ("pbx1", "pbx2"):
        plan = _plan_on(region, node)
        caller = caller_number()
        with operator_phone(plan, plan.operator, region.secrets.get("sip", plan.operator), tmp_path / node,
                            timing=TIMING) as phone:
            member_state(region, node, plan.operator, "NOT_INUSE")
            call = carrier_call(plan, tmp_path / node, caller=caller, timing=TIMING)
            outcomes = phone.outcomes()
        assert call.ok and _answered(outcomes), f"{node}: {call.describe()}\nphone: {outcomes}"
        # the id the screen pop names is the caller channel's on the node that queued the call: its queue log's
        record = read_record(lambda command, n=node: region.run(n, command).stdout, caller)
        assert record.uniqueid and record.event("ENTERQUEUE"), (node, record)
        pop = f"https://{crm_hostname(region.spec.region)}/appeals/call/{record.uniqueid}/"
        infos = [m.group(1).strip() for o in outcomes if o.startswith("invite ") and (m := CALL_INFO.search(o))]
        assert infos and set(infos) == {f"<{pop}>;purpose=info"}, (node, outcomes)
        assert _card_page(opener, pop.replace(f"https://{crm_hostname(region.spec.region)}", base), node) == (
            normalise_number(caller)), node


def _card_page(opener: urllib.request.OpenerDirector, address: str, node: str, timeout_s: float = 30) -> str:
    """Open a screen pop's address until it is the call's card (the page waits while the card is made): the
    card's caller number."""
    deadline = time.monotonic() + timeout_s
    while True:
        reply = opener.open(address, timeout=60)
        page = reply.read().decode()
        shown = re.search(r'id="ekc-card-caller">([^<]*)<', page)
        if shown or time.monotonic() > deadline:
            assert shown, (node, reply.geturl(), page[-2000:])
            return shown.group(1)
        time.sleep(1)


def _click_rings(region: AppliedRegion, plan: CallPlan, workdir: Path) -> tuple[int, dict[str, str], bool]:
    """A click for the department's queue number from the phone's workstation: status, body, whether it rang."""
    with operator_phone(plan, plan.operator, region.secrets.get("sip", plan.operator), workdir,
                        timing=TIMING) as phone:
        status, body = click(region, plan, "601")
        deadline = time.monotonic() + RING_S
        while status == 200 and time.monotonic() < deadline and not _answered(phone.outcomes()):
            time.sleep(1)
        return status, body, _answered(phone.outcomes())


def _vip_holder(region: AppliedRegion) -> str:
    edge = region.spec.region.telephony.edge
    assert edge is not None
    held = [n for n in ("edge1", "edge2") if f"inet {edge.virtual_address}/" in region.run(n, "ip -4 -o addr").stdout]
    assert len(held) == 1, held
    return held[0]


def test_the_wallboard_shows_every_server_and_its_part(region: AppliedRegion) -> None:
    require_chromium()
    holder = _vip_holder(region)
    deadline = time.monotonic() + WALLBOARD_S
    while True:  # the first scrapes of every target after the apply
        dom = wallboard_dom(region)
        tiles = {n.name: server_tile(dom, n.name) for n in region.spec.region.nodes}
        if all(classes.split() == ["active", "ok"] for classes, _ in tiles.values()) or time.monotonic() > deadline:
            break
        time.sleep(5)
    textfiles = {proxy: region.run(proxy, "ls -l /var/lib/prometheus/node-exporter; cat /var/lib/prometheus/"
                                          "node-exporter/ekc_vrrp.prom").stdout for proxy in ("edge1", "edge2")}
    assert all(classes.split() == ["active", "ok"] for classes, _ in tiles.values()), (
        {name: tile for name, tile in tiles.items() if tile[0].split() != ["active", "ok"]}, textfiles)
    assert all(facts["up"] == "работает" for _, facts in tiles.values()), tiles
    for proxy in ("edge1", "edge2"):
        assert tiles[proxy][1]["vip"] == ("держит виртуальный адрес" if proxy == holder else "резерв"), tiles
    for node in ("pbx1", "pbx2"):
        assert tiles[node][1]["dispatcher"] == "принимает звонки", tiles
    assert tiles["db1"][1]["database"] == "PostgreSQL работает", tiles


def test_click_to_call_rings_the_phone_through_the_edge_and_survives_the_first_node(
        region: AppliedRegion, tmp_path: Path) -> None:
    plan = _plan_on(region, "pbx2")
    status, body, rang = _click_rings(region, plan, tmp_path / "click")
    assert (status, body.get("extension"), rang) == (200, plan.operator, True), body
    crash_node(region.lab, "pbx1")
    try:
        killed = time.monotonic()
        status, body, rang = _click_rings(region, plan, tmp_path / "after")
        print(f"click-to-call with pbx1 down: answered {status} in {time.monotonic() - killed:.1f} s, rang: {rang}")
        assert (status, body.get("extension"), rang) == (200, plan.operator, True), body
        if chromium_available():  # the wallboard: pbx1's tile turns red
            deadline = time.monotonic() + WALLBOARD_S
            down = ("active bad", {"up": "не отвечает", "dispatcher": "вне диспетчера"})
            while (tile := server_tile(wallboard_dom(region), "pbx1")) != down:
                assert time.monotonic() < deadline, tile
                time.sleep(5)
    finally:
        lab_up(region.lab)
