"""The Asterisk pool behind the SIP edge, rendered: each node serves the departments placed on it, reaches phones
through the proxies, and hands every other department to the edge. (Placement itself: test_pool.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ekc.render.components.asterisk_pool import placements
from ekc.render.model import RenderResult
from ekc.spec.load import load_spec
from tests.support.render import placeholder_render

POOL = ("pbx1", "pbx2", "pbx3")


def pool_spec(root: Path) -> Path:
    """``inventories/ha``: three Asterisk nodes behind the SIP edge."""
    text = Path("inventories/ha/region.yml").read_text(encoding="utf-8")
    assert all(f"name: pbx{n}," in text for n in (1, 2, 3)) and "sip-proxy" in text
    root.mkdir(parents=True, exist_ok=True)
    (root / "region.yml").write_text(text, encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> RenderResult:
    return placeholder_render(str(pool_spec(tmp_path_factory.mktemp("pool"))))


def _text(render: RenderResult, node: str, path: str) -> str:
    return render.contents[(node, path)].decode()


def _contexts(text: str) -> set[str]:
    return set(re.findall(r"^\[([^\]]+)\]", text, re.M))


def test_each_department_is_queued_on_its_primary_and_standby_only(pool: RenderResult, tmp_path: Path) -> None:
    placed = placements(load_spec(str(pool_spec(tmp_path / "spec"))).region)
    for node in POOL:
        queues = _contexts(_text(pool, node, "/etc/asterisk/queues.conf")) - {"general"}
        mine = {d for d, p in placed.items() if node in (p.primary, p.standby)}
        assert queues == mine, node
        served = _text(pool, node, "/etc/asterisk/ekc-served.conf")
        assert {c.removeprefix("ekc-serve-") for c in _contexts(served) if c.startswith("ekc-serve-")} == mine
        primaries = {c.removeprefix("ekc-primary-") for c in _contexts(served) if c.startswith("ekc-primary-")}
        assert primaries == {d for d, p in placed.items() if p.primary == node}, node
    assert all(p.standby not in (None, p.primary) for p in placed.values())


def test_phones_are_reached_through_the_edge_and_never_registered_on_a_node(pool: RenderResult) -> None:
    pjsip = _text(pool, "pbx1", "/etc/asterisk/pjsip.conf")
    assert "type = auth" not in pjsip and "max_contacts" not in pjsip  # no phone endpoint at all
    edge = pjsip[pjsip.index("[edge]"):]
    assert "contact = sip:10.56.0.50:5060" in edge
    assert {"match = 10.56.0.51", "match = 10.56.0.52", "match = 10.56.0.50"} <= set(edge.splitlines())
    queues = _text(pool, "pbx1", "/etc/asterisk/queues.conf")
    members = re.findall(r"^member => (.*)$", queues, re.M)
    assert members and all(re.fullmatch(r"PJSIP/\d+@edge,\d+,[^,]+,Custom:ekc-op-\d+", m) for m in members)
    dialplan = _text(pool, "pbx1", "/etc/asterisk/extensions.conf")
    assert "Dial(PJSIP/2001@edge,30)" in dialplan
    assert "${CHANNEL(endpoint)}" not in dialplan  # a call from a phone is named by the edge, not the endpoint


def test_the_ivr_of_any_node_queues_its_own_primaries_and_hands_the_rest_to_the_edge(pool: RenderResult) -> None:
    dialplan = _text(pool, "pbx2", "/etc/asterisk/extensions.conf")
    entry = dialplan[dialplan.index("[ekc-dept-health]"):].split("\n\n")[0]
    # queued here when this node is the primary and its members' states are set, else handed to the edge
    assert "${DIALPLAN_EXISTS(ekc-primary-health,s,1)} & 0${GLOBAL(EKC_MEMBERS_READY)}]?ekc-serve-health,s,1)" in entry
    assert "Goto(ekc-to-edge,dept-health,1)" in entry
    handover = dialplan[dialplan.index("[ekc-to-edge]"):].split("\n\n")[0]
    # a call still in the IVR's early media is redirected through the edge; one already answered is bridged
    assert "Transfer(PJSIP/sip:${EXTEN}@10.56.0.50:5060)" in handover
    assert '"${CHANNEL(state)}" = "Up"]?bridge' in handover and "(bridge),Dial(PJSIP/${EXTEN}@edge,,I)" in handover
    entry_ivr = dialplan[dialplan.index("[ekc-ivr-entry]"):].split("\n\n")[0]
    assert "Progress()" in entry_ivr and "Answer()" not in entry_ivr
    assert "Background(ekc/welcome,n)" in dialplan
    modules = _text(pool, "pbx2", "/etc/asterisk/modules.conf")
    assert "func_cut.so" in modules and "app_transfer.so" in modules  # CUT reads X-EKC-Route; the redirect
    assert "#include ekc-served.conf" in dialplan
    routes = dialplan[dialplan.index("[ekc-from-edge]"):].split("\n\n")[0]
    assert "PJSIP_HEADER(read,X-EKC-Route)" in routes
    assert '"${EKC_KIND}" = "department"' in routes and "ekc-serve-${EKC_ARG}" in routes
    # the call the edge redirected keeps the trunk's header and names the department in its R-URI
    assert '"${EKC_KIND}" = "trunk" & "${EXTEN:0:5}" = "dept-"]?redirected' in routes
    assert "(redirected),Set(EKC_ARG=${EXTEN:5})" in routes
    served = _text(pool, "pbx2", "/etc/asterisk/ekc-served.conf")
    for body in served.split("\n\n"):
        if body.startswith("[ekc-serve-"):
            # answered where it queues, once the members' states are set; refused (503) before then
            lines = body.split("\n")
            assert lines[1] == "exten => s,1,GotoIf($[0${GLOBAL(EKC_MEMBERS_READY)}]?ready)", body
            assert lines[3:5] == [" same => n,Hangup(34)", " same => n(ready),Answer()"], body


def test_every_nodes_queues_name_the_callers_unique_id_in_the_screen_pop(pool: RenderResult) -> None:
    """The screen pop names the caller channel's unique id on the node that queues the call (the callid of its
    queue log), whichever node that is."""
    for node in POOL:
        served = _text(pool, node, "/etc/asterisk/ekc-served.conf")
        assert served.count("b(ekc-agent-predial^s^1(${UNIQUEID}))") == served.count("Queue(") > 0, node


def test_each_node_names_its_channels_so_call_ids_never_collide_in_the_shared_database(pool: RenderResult) -> None:
    """Without a system name two nodes number their channels alike (<epoch>.<n>), and the queue_log, CDR and
    recordings of two calls would share one id."""
    for node in POOL:
        options = _text(pool, node, "/etc/asterisk/asterisk.conf").split("[options]", 1)[1]
        assert re.findall(r"^systemname = (\S+)$", options, re.M) == [node]


def test_the_shared_files_are_one_object_and_the_node_files_differ(pool: RenderResult) -> None:
    for path in ("/etc/asterisk/extensions.conf", "/etc/asterisk/pjsip.conf"):
        assert pool.contents[("pbx1", path)] is pool.contents[("pbx3", path)], path
    served = {_text(pool, node, "/etc/asterisk/ekc-served.conf") for node in POOL}
    assert len(served) == 3


def test_without_an_edge_a_single_node_renders_the_region_as_before() -> None:
    render = placeholder_render("example")
    assert ("pbx1", "/etc/asterisk/ekc-served.conf") not in render.contents
    dialplan = _text(render, "pbx1", "/etc/asterisk/extensions.conf")
    assert "[ekc-from-edge]" not in dialplan and "Dial(PJSIP/2001,30)" in dialplan
