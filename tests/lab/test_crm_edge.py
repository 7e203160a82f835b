"""The CRM behind the SIP edge on real lab nodes: the screen pop and click-to-call for an operator whichever
Asterisk node serves the call, and click-to-call when the first Asterisk node is down.

``crmedge`` is ``inventories/ha`` on 10.247.0.0/24 with the edge (edge1, edge2), two Asterisk nodes (pbx1,
pbx2), one database node (db1, PostgreSQL alone: the cluster has its own drill) and the CRM (crm1); every
department open around the clock. The operator's phone (SIPp) registers at the virtual address. Then:

- a call through the edge to a department of pbx1 and one to a department of pbx2: each INVITE the phone gets
  (from the node that serves the department, through the proxy) carries the screen pop's Call-Info, and the CRM
  opens that address for a logged-in operator;
- a click in the CRM (from the workstation the phone registered from) rings the phone through the edge; with
  pbx1, the first node the CRM's nginx asks, killed as by a power cut, the next click is passed on to pbx2 and
  rings the phone all the same.
"""

from __future__ import annotations

import re
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from ekc.lab.call import CallPlan, Timing, call_plan, caller_number, carrier_call, operator_phone
from ekc.lab.nodes import crash_node, lab_up
from ekc.lab.region import lab_call_network
from ekc.render.components.addresses import crm_hostname
from ekc.render.components.asterisk_dialplan import normalise_number
from ekc.render.components.asterisk_pool import placements
from tests.lab.test_crm import CALL_INFO, _login, _wait_for_setup, click
from tests.lab.test_sip_edge import member_state
from tests.support.labregion import AppliedRegion, applied_region, with_asterisk_nodes, worker_name

pytestmark = [pytest.mark.lab, pytest.mark.slow]

PREFIX = "10.247."
TIMING = Timing(answer_ms=300, talk_ms=1500)
RING_S = 30  # how long a click may take to ring the phone


def _trim(text: str) -> str:
    """The edge, pbx1 and pbx2, db1 with PostgreSQL alone, crm1; no monitoring node (nor its wallboard flow)."""
    text = with_asterisk_nodes(text, 2)
    text = re.sub(r"\n  - \{name: (db2|db3|mon1),[^\n]*", "", text)
    text = text.replace("{name: db1, address: 10.247.0.21, roles: [postgresql, etcd]}",
                        "{name: db1, address: 10.247.0.21, roles: [postgresql]}")
    text = re.sub(r"\ndatabase:\n(  [^\n]*\n)+", "\n", text)  # the cluster's settings (one node here)
    text = re.sub(r"    - description: the hall's wallboard screens\n(?:      .*\n)+", "", text)
    assert "roles: [postgresql, etcd]" not in text and "{name: mon1" not in text, "the spec's nodes changed shape"
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
        assert call.ok and _answered(outcomes), (node, call.describe(), outcomes)
        number = urllib.parse.quote(normalise_number(caller), safe="")
        pop = f"https://{crm_hostname(region.spec.region)}/cti/respond_to_a_call?number={number}"
        infos = [m.group(1).strip() for o in outcomes if o.startswith("invite ") and (m := CALL_INFO.search(o))]
        assert infos and set(infos) == {f"<{pop}>;purpose=info"}, (node, outcomes)
        page = opener.open(pop.replace(f"https://{crm_hostname(region.spec.region)}", base), timeout=60)
        assert f"/cti/contact/add/{normalise_number(caller)}" in page.read().decode(), node


def _click_rings(region: AppliedRegion, plan: CallPlan, workdir: Path) -> tuple[int, dict[str, str], bool]:
    """A click for the department's queue number from the phone's workstation: status, body, whether it rang."""
    with operator_phone(plan, plan.operator, region.secrets.get("sip", plan.operator), workdir,
                        timing=TIMING) as phone:
        status, body = click(region, plan, "601")
        deadline = time.monotonic() + RING_S
        while status == 200 and time.monotonic() < deadline and not _answered(phone.outcomes()):
            time.sleep(1)
        return status, body, _answered(phone.outcomes())


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
    finally:
        lab_up(region.lab)
