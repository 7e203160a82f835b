"""The SIP edge (inventories/ha: edge1 and edge2 at 10.56.0.50): its rules, what Kamailio and keepalived get on
each proxy, the tables and dispatcher sets, and what the flow matrix opens with an edge."""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from ekc.render.components.asterisk_pool import placements
from ekc.render.components.sip_proxy import DEPARTMENT_SET_BASE
from ekc.render.endpoints import endpoints
from ekc.render.flows import flow_matrix
from ekc.render.model import RenderResult
from ekc.render.region import render_region
from ekc.spec.load import load_spec
from ekc.spec.secrets import SecretsView, required_secrets
from schemas.region import Region
from schemas.rules import check_rules
from schemas.rules_roles import sip_edge
from tests.support.location import location_server
from tests.support.render import placeholder_render, placeholder_tree

HA = Path(__file__).resolve().parents[2] / "inventories" / "ha" / "region.yml"
PROXIES = ("edge1", "edge2")
VIRTUAL = "10.56.0.50"
REALM = "ekc.example.local"


@cache
def _render(case: str) -> RenderResult:
    return placeholder_render(case)


def _file(host: str, path: str, case: str = "ha") -> str:
    return _render(case).contents[(host, path)].decode()


def _ha(**edits: Any) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(HA.read_text(encoding="utf-8"))
    return copy.deepcopy(data) | edits


def _issues(data: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    return list(sip_edge(Region.model_validate(data)))


def _with_node(data: dict[str, Any], name: str, address: str, roles: list[str]) -> dict[str, Any]:
    data["nodes"] = [*data["nodes"], {"name": name, "address": address, "roles": roles}]
    return data


# --- rules --------------------------------------------------------------------------------------------------


def test_the_ha_spec_has_a_valid_edge() -> None:
    assert _issues(_ha()) == []
    assert not check_rules(Region.model_validate(_ha()))


def test_sip_proxy_nodes_need_telephony_edge() -> None:
    data = _ha()
    del data["telephony"]["edge"]
    issues = _issues(data)
    proxies = [i for i, n in enumerate(data["nodes"]) if "sip-proxy" in n["roles"]]
    assert [path for path, _ in issues] == [("nodes", i, "roles") for i in proxies] and len(proxies) == 2
    assert "set telephony.edge.virtual_address" in issues[0][1]


def test_telephony_edge_needs_sip_proxy_nodes() -> None:
    data = _ha()
    data["nodes"] = [n for n in data["nodes"] if "sip-proxy" not in n["roles"]]
    assert _issues(data) == [(("telephony", "edge"), "the SIP edge needs nodes with the role 'sip-proxy' (two, so "
                                                     "that one may fail), or remove telephony.edge")]


def test_the_virtual_address_lies_in_a_declared_subnet() -> None:
    data = _ha()
    data["telephony"]["edge"]["virtual_address"] = "10.57.0.50"
    assert _issues(data) == [(("telephony", "edge", "virtual_address"),
                              "10.57.0.50 is in no declared subnet (10.56.0.0/24, 10.56.10.0/24)")]


def test_the_virtual_address_is_nobody_elses() -> None:
    cases = {
        "10.56.0.52": "10.56.0.52 is already the address of node edge2 (the virtual address is nobody's own)",
        "10.56.0.1": "10.56.0.1 is the deploy host's address",
        "10.56.10.1": "10.56.10.1 is the gateway of subnet operators",
    }
    for address, message in cases.items():
        data = _ha()
        data["telephony"]["edge"]["virtual_address"] = address
        found = [m for path, m in _issues(data) if path == ("telephony", "edge", "virtual_address")]
        assert message in found, (address, found)


def test_a_proxy_is_not_an_asterisk_node_and_phones_get_no_tls() -> None:
    data = _ha()
    data["nodes"][6]["roles"] = ["sip-proxy", "asterisk"]
    data["telephony"]["sip_tls"] = {"enabled": True}
    paths = [path for path, _ in _issues(data)]
    assert paths == [("nodes", 6, "roles"), ("telephony", "sip_tls", "enabled")]


def test_an_edge_needs_asterisk_nodes_to_relay_to() -> None:
    data = _ha()
    data["nodes"] = [n for n in data["nodes"] if "asterisk" not in n["roles"]]
    data["telephony"]["departments"] = [{**d, "nodes": []} for d in data["telephony"]["departments"]]
    assert (("telephony", "edge"), "the SIP edge relays calls to Asterisk: give the role 'asterisk' to a node") in (
        _issues(data))


# --- Kamailio -----------------------------------------------------------------------------------------------


def _swapped(text: str) -> str:
    """edge2's text with edge1's and edge2's addresses exchanged."""
    return text.replace("10.56.0.51", "\0").replace("10.56.0.52", "10.56.0.51").replace("\0", "10.56.0.52")


def test_the_proxies_configs_differ_only_in_their_own_address_and_their_peers() -> None:
    edge1, edge2 = (_file(host, "/etc/kamailio/kamailio.cfg") for host in PROXIES)
    assert edge1 != edge2
    assert _swapped(edge2) == edge1
    assert 'modparam("dmq", "server_address", "sip:10.56.0.51:5060")' in edge1
    notified = [line for line in edge1.splitlines() if '"notification_address"' in line]
    assert notified == ['modparam("dmq", "notification_address", "sip:10.56.0.52:5060")']  # the peer, not itself
    assert 'is_in_subnet("$si", "10.56.0.52/32")' in edge1  # KDMQ from the peer only


def test_kamailio_listens_on_its_own_address_and_the_virtual_one() -> None:
    listens = [line for line in _file("edge1", "/etc/kamailio/kamailio.cfg").splitlines() if line.startswith("listen=")]
    assert listens == ["listen=udp:10.56.0.51:5060", "listen=tcp:10.56.0.51:5060", f"listen=udp:{VIRTUAL}:5060",
                       f"listen=tcp:{VIRTUAL}:5060", "listen=tcp:10.56.0.51:9494"]
    assert "net.ipv4.ip_nonlocal_bind = 1" in _file("edge1", "/etc/sysctl.d/60-ekc-nonlocal-bind.conf")


def test_relayed_requests_leave_from_the_virtual_address() -> None:
    config = _file("edge1", "/etc/kamailio/kamailio.cfg")
    assert f'if ($Ri == "{VIRTUAL}") {{\n\t\t$var(from) = "{VIRTUAL}";' in config
    assert '$fs = "udp:" + $var(from) + ":5060";' in config and '$fs = "tcp:" + $var(from) + ":5060";' in config
    assert 'modparam("dispatcher", "ds_default_socket", "udp:10.56.0.51:5060")' in config


def test_the_probes_time_out_in_tm_ticks() -> None:
    """ds_ping_fr_timer is in 1/16 s: 8 ticks is the 500 ms the prototype measured, not 8 ms or 8 s."""
    assert 'modparam("dispatcher", "ds_ping_fr_timer", 8)' in _file("edge1", "/etc/kamailio/kamailio.cfg")


def test_the_trunk_reaches_only_its_dids() -> None:
    config = _file("edge1", "/etc/kamailio/kamailio.cfg")
    assert 'is_in_subnet("$si", "10.56.0.5/32")' in config
    assert '$var(trunk) == "carrier" && ($rU == "+73832000122" || $rU == "122")' in config
    assert 'modparam("ratelimit", "pipe", "0:TAILDROP:60")' in config  # max_channels of the one trunk


def test_a_trunks_call_redirected_by_a_node_goes_on_to_the_departments_set_once() -> None:
    config = _file("edge1", "/etc/kamailio/kamailio.cfg")
    failure = config[config.index("failure_route[DS_FAILOVER] {"):].split("\n}\n")[0]
    assert 't_check_status("302") && isflagset(FLT_TRUNK) && !isflagset(FLT_REDIRECTED)' in failure
    redirect = config[config.index("route[REDIRECT] {"):].split("\n}\n")[0]
    assert "setflag(FLT_REDIRECTED);" in redirect and "$rU = $var(target);" in redirect
    assert '$sht(departments=>$var(department)) == $null' in redirect  # only a department of the region
    assert 'ds_select_dst("$sht(departments=>$var(department))", "8")' in redirect
    trunk = config[config.index("route[FROM_TRUNK] {"):].split("\n}\n")[0]
    assert "setflag(FLT_TRUNK);" in trunk


def test_the_users_table_holds_each_extensions_ha1() -> None:
    loaded = load_spec("ha")
    tree = placeholder_tree(required_secrets(loaded.region))
    tree["sip"]["2001"] = "correct horse battery staple"
    result = render_region(loaded, SecretsView(tree))
    rows = result.contents[("edge1", "/etc/kamailio/ekc-users.htable")].decode().splitlines()
    expected = hashlib.md5(f"2001:{REALM}:correct horse battery staple".encode()).hexdigest()
    assert rows[0] == "key_name(str) key_type(int) value_type(int) key_value(str) expires(int)"
    assert f"2001:0:0:{expected}:0" in rows
    assert len(rows) == 1 + 20 + 2  # the header line, 20 operators, 2 supervisors
    users = next(f for f in result.manifest.host("edge1").files if f.path == "/etc/kamailio/ekc-users.htable")  # type: ignore[union-attr]
    assert (users.secret, users.mode, users.owner, users.group) == (True, "0640", "root", "kamailio")
    assert users.trigger.command == "/usr/sbin/kamcmd -s unix:/run/kamailio/kamailio_ctl htable.reload users"


def test_an_auditors_render_shows_no_ha1() -> None:
    loaded = load_spec("ha")
    result = render_region(loaded, SecretsView(placeholder_tree(required_secrets(loaded.region))).redact())
    rows = result.contents[("edge1", "/etc/kamailio/ekc-users.htable")].decode().splitlines()[1:]
    assert rows and all(row.endswith(":0:0:<redacted>:0") for row in rows), rows[:3]


def _region_with_three_asterisk_nodes() -> Region:
    data = _ha()
    assert [n["name"] for n in data["nodes"] if "asterisk" in n["roles"]] == ["pbx1", "pbx2", "pbx3"]
    return Region.model_validate(data)


def _render_region(region: Region) -> RenderResult:
    loaded = replace(load_spec("ha"), region=region)
    return render_region(loaded, SecretsView(placeholder_tree(required_secrets(region))))


def test_each_department_set_has_its_primary_and_standby() -> None:
    region = _region_with_three_asterisk_nodes()
    result = _render_region(region)
    lines = [line.split() for line in result.contents[("edge1", "/etc/kamailio/dispatcher.list")].decode().splitlines()
             if line and not line.startswith("#")]
    address = {n.name: n.address for n in region.nodes}
    assert [(int(s), uri) for s, uri, *_ in lines if s == "1"] == [
        (1, f"sip:{address[n]}:5060") for n in ("pbx1", "pbx2", "pbx3")]
    placed = placements(region)
    for index, department in enumerate(region.telephony.departments):
        chosen = {(uri, int(priority)) for s, uri, _, priority, _ in lines if int(s) == DEPARTMENT_SET_BASE + index}
        placement = placed[department.id]
        assert placement.standby is not None
        assert chosen == {(f"sip:{address[placement.primary]}:5060", 10),
                          (f"sip:{address[placement.standby]}:5060", 5)}, department.id
    departments = result.contents[("edge1", "/etc/kamailio/ekc-departments.htable")].decode().splitlines()
    assert departments[1:] == [f"{d.id}:0:1:{DEPARTMENT_SET_BASE + i}:0"
                               for i, d in enumerate(region.telephony.departments)]


def test_a_phones_calls_go_to_its_first_department() -> None:
    rows = _file("edge1", "/etc/kamailio/ekc-extensions.htable").splitlines()
    assert "2003:0:0:social:0" in rows  # social, then housing with a penalty
    assert "2902:0:0:health:0" in rows  # a supervisor of health and transport


def test_the_proxies_share_the_tables_and_restart_one_after_the_other() -> None:
    hosts = {h.name: h for h in _render("ha").manifest.hosts}
    for path in ("/etc/kamailio/ekc-users.htable", "/etc/kamailio/dispatcher.list"):
        assert _file("edge1", path) == _file("edge2", path), path
    restart = {name: _file(name, "/usr/local/lib/ekc/kamailio-restart") for name in PROXIES}
    assert "sleep" not in restart["edge1"] and "\nsleep 10\n" in restart["edge2"]
    config = hosts["edge1"].file("/etc/kamailio/kamailio.cfg")
    assert config is not None and config.trigger.command == "/usr/local/lib/ekc/kamailio-restart"
    dispatcher = hosts["edge1"].file("/etc/kamailio/dispatcher.list")
    assert dispatcher is not None and dispatcher.trigger.command.endswith("dispatcher.reload")  # type: ignore[union-attr]
    assert {"kamailio", "keepalived"} <= set(hosts["edge1"].packages)
    assert {s.name for s in hosts["edge1"].services} >= {"kamailio", "keepalived"}


# --- keepalived ---------------------------------------------------------------------------------------------


def test_keepalived_prefers_the_first_proxy_and_unicasts_to_the_other() -> None:
    edge1, edge2 = (_file(host, "/etc/keepalived/keepalived.conf") for host in PROXIES)
    assert "priority 150" in edge1 and "priority 140" in edge2
    assert "unicast_src_ip 10.56.0.51" in edge1 and "unicast_peer {\n\t\t10.56.0.52\n\t}" in edge1
    for text in (edge1, edge2):
        assert f"\t\t{VIRTUAL}/24\n" in text and "virtual_router_id 51" in text and "vrrp_version 3" in text
        assert "nopreempt" in text and "track_script {\n\t\tkamailio\n\t}" in text
        assert 'script "/usr/bin/systemctl is-active --quiet kamailio.service"' in text
        assert "interface ${EKC_INTERFACE}" in text and "include /run/ekc-keepalived/interface.conf" in text


def test_the_notify_script_writes_for_node_exporters_textfile_collector() -> None:
    script = _file("edge1", "/usr/local/lib/ekc/keepalived-notify")
    assert "dir=/var/lib/prometheus/node-exporter" in script
    assert 'ekc_vrrp_master{vrrp_instance=\\"$name\\"} $master' in script
    assert "--collector.textfile.directory=/var/lib/prometheus/node-exporter" in _file(
        "edge1", "/etc/default/prometheus-node-exporter")


# --- the flow matrix ----------------------------------------------------------------------------------------


def test_asterisk_takes_sip_from_the_edge_only() -> None:
    flows = _render("ha").manifest.flows
    sip = {(f.proto, f.source_cidr) for f in flows if f.target == "pbx1" and f.port == 5060}
    edge = {f"{VIRTUAL}/32", "10.56.0.51/32", "10.56.0.52/32"}
    assert sip == {(p, c) for p in ("udp", "tcp") for c in edge} | {("tcp", "10.56.0.41/32")}
    rtp = {f.source_cidr for f in flows if f.target == "pbx1" and f.port == 10000}
    # Media does not pass the edge; a call handed from one node's IVR to another node carries media between them.
    assert rtp == {"10.56.0.5/32", "10.56.10.0/24", "10.56.0.12/32", "10.56.0.13/32"}
    # Without an edge (inventories/example) trunks and phones reach Asterisk's SIP port as before.
    example = {f.source_cidr for f in _render("example").manifest.flows if f.target == "pbx1" and f.port == 5060}
    assert {"10.54.0.5/32", "10.54.10.0/24"} <= example


def test_the_proxies_take_sip_from_trunks_phones_asterisk_and_each_other() -> None:
    flows = _render("ha").manifest.flows
    udp = {f.source_cidr for f in flows if f.target == "edge1" and f.port == 5060 and f.proto == "udp"}
    assert udp == {"10.56.0.5/32", "10.56.10.0/24", "10.56.0.11/32", "10.56.0.12/32", "10.56.0.13/32",
                   "10.56.0.52/32"}
    # The HTTP listener: metrics for the monitoring node, the registered phones for the Asterisk nodes.
    http = {f.source_cidr for f in flows if f.target == "edge1" and f.port == 9494}
    assert http == {"10.56.0.41/32", "10.56.0.11/32", "10.56.0.12/32", "10.56.0.13/32"}


def test_the_registered_phones_are_served_to_the_asterisk_nodes_only() -> None:
    """The route runs one fixed RPC (no RPC transport is open) and answers only the Asterisk nodes' addresses;
    each Asterisk node's member-state service asks every proxy, for the extensions of its own queues."""
    cfg = _file("edge1", "/etc/kamailio/kamailio.cfg")
    route = cfg[cfg.index('if ($hu == "/ekc/registered" || $hu == "/ekc/contacts")'):]
    route = route[:route.index("prom_check_uri")]
    assert 'if ($sht(pool=>src.$si) == $null) {' in route
    pool = _file("edge1", "/etc/kamailio/ekc-pool.htable").splitlines()
    assert {f"src.10.56.0.1{i}:0:1:1:0" for i in (1, 2, 3)} <= set(pool) and "count:0:1:3:0" in pool
    assert '"method": "ul.dump"' in route
    assert "jsonrpc_dispatch();" not in cfg
    assert 'modparam("jsonrpcs", "transport", 1)' in cfg
    script = _file("pbx1", "/usr/local/lib/ekc/member-states")
    assert 'PROXIES = ["10.56.0.51", "10.56.0.52"]' in script and 'PATH = "/ekc/registered"' in script
    region = load_spec("ha").region
    served = {d for d, p in placements(region).items() if "pbx1" in (p.primary, p.standby)}
    expected = sorted({op.extension for op in region.telephony.operators
                       if any(skill.department in served for skill in op.skills())})
    assert f"EXTENSIONS = {json.dumps(expected)}" in script


def test_vrrp_flows_only_between_the_proxies() -> None:
    flows = [f for f in _render("ha").manifest.flows if f.proto == "vrrp"]
    assert {(f.source, f.target, f.port, f.ports) for f in flows} == {("edge2", "edge1", 0, "-"),
                                                                       ("edge1", "edge2", 0, "-")}
    assert "\t\tip saddr { 10.56.0.52/32 } ip protocol 112 accept\n" in _file("edge1", "/etc/nftables.conf")
    assert not any(f.proto == "vrrp" for f in flow_matrix(load_spec("example").region))


def test_phones_register_at_the_virtual_address() -> None:
    registrars = [e for e in endpoints(load_spec("ha").region) if e.service == "SIP registrar (phones)"]
    assert [(e.node, e.address) for e in registrars] == [("edge1, edge2", f"sip:{VIRTUAL}:5060")]


def test_the_member_state_service_reads_the_registered_extensions(tmp_path: Path) -> None:
    """The rendered service, loaded as a module, against a stand-in of the proxies' route: the extensions come
    from the first proxy that answers (an AoR with a domain counts by its user part), None when none does."""
    path = tmp_path / "member_states.py"
    path.write_text(_file("pbx1", "/usr/local/lib/ekc/member-states"), encoding="utf-8")
    spec = importlib.util.spec_from_file_location("member_states", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with location_server({"2001": "sip:2001@10.56.10.5:5062", f"2002@{REALM}": "sip:2002@10.56.10.6"}) as port:
        module.PROXIES, module.PORT = ["127.0.0.2", "127.0.0.1"], port
        assert module.registered() == {"2001", "2002"}
    assert module.registered() is None


def test_the_flood_limit_per_source_comes_from_the_spec() -> None:
    """pike counts over 2 s: the default of 8 requests a second is 16 per period; a raised limit (many phones
    behind one NAT address) is rendered the same way."""
    assert 'modparam("pike", "reqs_density_per_unit", 16)' in _file("edge1", "/etc/kamailio/kamailio.cfg")
    data = _ha()
    data["telephony"] = data["telephony"] | {"edge": data["telephony"]["edge"] | {"flood_per_source": 250}}
    config = _render_region(Region.model_validate(data)).contents[("edge1", "/etc/kamailio/kamailio.cfg")].decode()
    assert 'modparam("pike", "sampling_time_unit", 2)' in config
    assert 'modparam("pike", "reqs_density_per_unit", 500)' in config


def test_adding_an_asterisk_node_reloads_a_table_and_restarts_no_proxy() -> None:
    """The Asterisk nodes reach Kamailio through tables only (the dispatcher's sets and the pool table), so a
    node added to the spec changes no kamailio.cfg: no proxy restarts, no call in setup is lost."""
    data = _with_node(_ha(), "pbx4", "10.56.0.14", ["asterisk"])
    grown = _render_region(Region.model_validate(data))
    for proxy in PROXIES:
        assert grown.contents[(proxy, "/etc/kamailio/kamailio.cfg")] == _render("ha").contents[
            (proxy, "/etc/kamailio/kamailio.cfg")], proxy
    pool = grown.contents[("edge1", "/etc/kamailio/ekc-pool.htable")].decode().splitlines()
    assert {"count:0:1:4:0", "addr.3:0:0:10.56.0.14:0", "name.3:0:0:pbx4:0", "src.10.56.0.14:0:1:1:0"} <= set(pool)
    manifest = next(h for h in grown.manifest.hosts if h.name == "edge1")
    trigger = next(f.trigger for f in manifest.files if f.path == "/etc/kamailio/ekc-pool.htable")
    assert trigger is not None and "htable.reload pool" in trigger.command


def test_the_crm_runs_on_one_node() -> None:
    """A second crm node is refused at its roles (its uploads would be on the first one's disk)."""
    data = _with_node(_ha(), "crm2", "10.56.0.32", ["crm"])
    issues = check_rules(Region.model_validate(data))
    crm = [(path, message) for path, message in issues if "'crm'" in message]
    assert crm and crm[0][0] == ("nodes", len(data["nodes"]) - 1, "roles"), issues
    assert "crm1, crm2" in crm[0][1]
