"""Node lifecycle in the spec (``nodes[].state``): what a drained or absent node gets, what the other hosts
render about it, and the rules that refuse a state leaving a service without a node (inventories/ha)."""

from __future__ import annotations

import copy
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from ekc.render.components.asterisk_pool import placements
from ekc.render.components.dbcluster import client_hosts
from ekc.render.components.sip_proxy import DEPARTMENT_SET_BASE, DISABLED_FLAG
from ekc.render.model import RenderResult
from ekc.render.region import render_region
from ekc.spec.diagnostics import SpecErrors
from ekc.spec.load import load_spec
from ekc.spec.secrets import SecretsView, required_secrets
from ekc.verify.cluster import cluster_checks
from schemas.region import Region
from schemas.rules import check_rules
from tests.support.render import placeholder_tree

HA = Path(__file__).resolve().parents[2] / "inventories" / "ha" / "region.yml"
DISPATCHER = "/etc/kamailio/dispatcher.list"


def ha_data(**states: str) -> dict[str, Any]:
    """inventories/ha as data, with the given nodes' states."""
    data: dict[str, Any] = copy.deepcopy(_ha_text())
    for node in data["nodes"]:
        if node["name"] in states:
            node["state"] = states.pop(node["name"])
    assert not states, f"no such nodes: {states}"
    return data


@cache
def _ha_text() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(HA.read_text(encoding="utf-8"))
    return loaded


def ha_region(**states: str) -> Region:
    return Region.model_validate(ha_data(**states))


@cache
def rendered(*states: tuple[str, str]) -> RenderResult:
    """The ha region rendered with placeholder secrets and the given (node, state) pairs."""
    region = ha_region(**dict(states))
    loaded = replace(load_spec(str(HA)), region=region)
    return render_region(loaded, SecretsView(placeholder_tree(required_secrets(region))))


def issues(**states: str) -> list[tuple[tuple[str | int, ...], str]]:
    return check_rules(ha_region(**states))


def dispatcher_rows(result: RenderResult, proxy: str = "edge1") -> list[list[str]]:
    text = result.contents[(proxy, DISPATCHER)].decode()
    return [line.split() for line in text.splitlines() if line and not line.startswith("#")]


def _index(name: str) -> int:
    return [n["name"] for n in _ha_text()["nodes"]].index(name)


# --- placement -------------------------------------------------------------------------------------------------


def test_a_drained_node_is_nobodys_primary_or_standby_and_its_departments_go_to_their_standby() -> None:
    before = placements(ha_region())
    after = placements(ha_region(pbx1="drain"))
    assert any(p.primary == "pbx1" for p in before.values()), "the test needs a department on pbx1"
    for department, placement in after.items():
        assert "pbx1" not in (placement.primary, placement.standby), department
        if before[department].primary == "pbx1":
            assert placement.primary == before[department].standby, department


def test_an_absent_node_places_like_a_drained_one() -> None:
    assert placements(ha_region(pbx1="absent")) == placements(ha_region(pbx1="drain"))


# --- the dispatcher ---------------------------------------------------------------------------------------------


def test_a_drained_node_stays_in_set_1_admin_disabled_and_is_in_no_department_set() -> None:
    rows = dispatcher_rows(rendered(("pbx1", "drain")))
    pool = {uri: int(flags) for set_id, uri, flags, *_ in rows if set_id == "1"}
    assert pool == {"sip:10.56.0.11:5060": DISABLED_FLAG, "sip:10.56.0.12:5060": 0, "sip:10.56.0.13:5060": 0}
    departments = [row for row in rows if int(row[0]) >= DEPARTMENT_SET_BASE]
    assert departments and all(uri != "sip:10.56.0.11:5060" and flags == "0" for _, uri, flags, *_ in departments)


def test_draining_an_asterisk_node_changes_the_dispatcher_list_not_kamailios_config() -> None:
    """kamailio.cfg changes restart Kamailio; the dispatcher list is reread with a reload (no call dropped)."""
    active, drained = rendered(), rendered(("pbx1", "drain"))
    changed = {path for (host, path), data in drained.contents.items()
               if host == "edge1" and active.contents.get((host, path)) != data}
    assert changed == {DISPATCHER}
    trigger = next(f.trigger for f in drained.manifest.host("edge1").files if f.path == DISPATCHER)  # type: ignore[union-attr]
    assert trigger.action == "reload" and "dispatcher.reload" in (trigger.command or "")


def test_the_out_of_dispatcher_alert_leaves_the_drained_node_out() -> None:
    rules = rendered(("pbx1", "drain")).contents[("mon1", "/etc/prometheus/rules/ekc.rules.yml")].decode()
    assert 'kamailio_ds_target_up{asterisk!~"pbx1"}' in rules


def test_a_drained_asterisk_node_serves_no_queue() -> None:
    queues = rendered(("pbx1", "drain")).contents[("pbx1", "/etc/asterisk/queues.conf")].decode()
    assert "[dept-" not in queues and "[social]" not in queues


# --- absent nodes -----------------------------------------------------------------------------------------------


def test_an_absent_node_is_rendered_nowhere() -> None:
    result = rendered(("pbx3", "absent"))
    assert result.manifest.host("pbx3") is None
    assert all("10.56.0.13" not in data.decode(errors="replace") for (_, path), data in result.contents.items()
               if path in ("/etc/hosts", DISPATCHER, "/etc/nftables.conf"))


# --- a drained database node -------------------------------------------------------------------------------------


def test_a_drained_database_node_stops_and_disables_patroni_and_leaves_the_clients_lists() -> None:
    result = rendered(("db3", "drain"))
    services = {s.name: s for s in result.manifest.host("db3").services}  # type: ignore[union-attr]
    assert not services["patroni@18-main"].enabled and not services["patroni@18-main"].running
    assert not services["prometheus-postgres-exporter"].running
    assert services["etcd"].running and services["etcd"].enabled  # etcd keeps its member
    assert "db3" not in client_hosts(ha_region(db3="drain"))
    assert client_hosts(ha_region()).count(",") == 2
    prometheus = result.contents[("mon1", "/etc/prometheus/prometheus.yml")].decode()
    assert "db3.ekc.example.local:8008" not in prometheus and "db3.ekc.example.local:2381" in prometheus


def test_verify_checks_a_drained_database_node_as_an_etcd_member_only() -> None:
    checks = {check.id for check in cluster_checks(rendered(("db3", "drain")).manifest.hosts)}
    assert checks == {"db1:patroni", "db1:etcd", "db2:patroni", "db2:etcd", "db3:etcd"}


# --- rules ------------------------------------------------------------------------------------------------------


def test_the_ha_spec_passes_with_a_drained_asterisk_and_a_drained_database_node() -> None:
    assert issues(pbx1="drain", db3="drain") == []


def test_draining_every_asterisk_node_is_refused_at_the_first_ones_state() -> None:
    assert issues(pbx1="drain", pbx2="drain", pbx3="absent") == [(
        ("nodes", _index("pbx1"), "state"),
        "no asterisk node stays active (pbx1: drain, pbx2: drain, pbx3: absent): the departments' calls need one; "
        "set one of them back to active")]


def test_a_department_pinned_only_to_drained_nodes_is_refused_at_its_nodes() -> None:
    data = ha_data(pbx1="drain", pbx2="drain")
    data["telephony"]["departments"][0]["nodes"] = ["pbx1", "pbx2"]
    assert check_rules(Region.model_validate(data)) == [(
        ("telephony", "departments", 0, "nodes"),
        "every node department social may use is out of service (pbx1: drain, pbx2: drain): add an active "
        "asterisk node to this list, or set one of these back to active")]


def test_an_etcd_member_cannot_be_removed() -> None:
    assert issues(db3="absent") == [(
        ("nodes", _index("db3"), "state"),
        "db3 is an etcd member, and ekc does not change etcd's membership: removing it would leave the cluster's "
        "quorum one member short; set it back to active (drain keeps etcd running)")]


def test_no_database_node_left_active_is_refused() -> None:
    assert issues(db1="drain", db2="drain", db3="drain") == [(
        ("nodes", _index("db1"), "state"),
        "no postgresql node stays active (db1: drain, db2: drain, db3: drain): the call records and the CRM's "
        "data need one; set one of them back to active")]


def _without_etcd(data: dict[str, Any]) -> dict[str, Any]:
    """The ha spec with two database nodes only and etcd on mon1, crm1 and db1 (so that a database node may go)."""
    data["nodes"] = [n for n in data["nodes"] if n["name"] != "db3"]
    for node in data["nodes"]:
        if node["name"] in ("db2",):
            node["roles"] = ["postgresql"]
        if node["name"] in ("mon1", "crm1"):
            node["roles"] = [*node["roles"], "etcd"]
    return data


def test_a_patroni_cluster_does_not_shrink_to_one_node() -> None:
    data = _without_etcd(ha_data(db2="absent"))
    index = [n["name"] for n in data["nodes"]].index("db2")
    assert check_rules(Region.model_validate(data)) == [(
        ("nodes", index, "state"),
        "removing db2 leaves the Patroni cluster one postgresql node (db1), and ekc does not turn a cluster back "
        "into a single server: add a postgresql node first, or drain it instead")]


def test_drain_is_refused_on_a_node_without_a_role_that_drains() -> None:
    assert issues(crm1="drain") == [(
        ("nodes", _index("crm1"), "state"),
        "drain applies to asterisk and postgresql nodes (calls finish, the database leaves its cluster); crm1 has "
        "crm: set it to absent to take it out, or back to active")]


def test_a_flow_may_not_name_an_absent_node() -> None:
    data = ha_data(pbx3="absent")
    data.setdefault("security", {})["flows"] = [
        {"description": "x", "sources": ["10.56.0.0/24"], "targets": ["pbx3"], "ports": [22]}]
    assert check_rules(Region.model_validate(data)) == [(
        ("security", "flows", 0, "targets", 0), "node pbx3 is absent (its state): remove it from this flow")]


def test_a_state_mistake_is_reported_with_its_file_and_line(tmp_path: Path) -> None:
    text = HA.read_text(encoding="utf-8").replace("roles: [asterisk]}", "roles: [asterisk], state: drain}")
    spec = tmp_path / "region.yml"
    spec.write_text(text, encoding="utf-8")
    with pytest.raises(SpecErrors) as caught:
        load_spec(spec)
    [error] = caught.value.errors
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "name: pbx1," in row)
    column = text.splitlines()[line - 1].index("state: drain") + len("state: ") + 1  # the value's position
    assert str(error).endswith(f":{line}:{column}: nodes[0].state: "
                               "no asterisk node stays active (pbx1: drain, pbx2: drain, pbx3: drain): the "
                               "departments' calls need one; set one of them back to active"), str(error)
