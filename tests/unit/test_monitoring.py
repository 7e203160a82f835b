"""The monitoring render: targets from the spec, alert routing, wallboard tiles, secrets and bcrypt hashes."""

from __future__ import annotations

import re
from pathlib import Path

import bcrypt
import pytest
import yaml

from ekc.render.components.monitoring import monitoring_layer, wallboard_servers
from ekc.render.components.node_exporter import node_exporter_layer
from ekc.render.components.postgres_exporter import postgres_exporter_layer
from ekc.render.components.queue_exporter import queue_exporter_layer
from ekc.render.flows import flow_matrix
from ekc.render.model import RenderContext
from ekc.render.region import render_host
from ekc.spec.load import LoadedSpec, load_spec
from ekc.spec.secretgen import check_secrets, fill_secrets, secret_values
from ekc.spec.secrets import REDACTED, SecretsView, required_secrets
from tests.support.render import placeholder_tree

# A second Asterisk node, with the SIP edge that two of them need.
PBX2 = ("  - {name: pbx2, address: 10.54.0.12, roles: [asterisk]}\n"
        "  - {name: edge1, address: 10.54.0.51, roles: [sip-proxy]}\n"
        "  - {name: edge2, address: 10.54.0.52, roles: [sip-proxy]}\n")


def _spec(tmp_path: Path, edit: str = "") -> LoadedSpec:
    text = Path("inventories/example/region.yml").read_text(encoding="utf-8")
    if "sip-proxy" in edit:
        text = text.replace("telephony:\n", "telephony:\n  edge: {virtual_address: 10.54.0.50}\n", 1)
    if edit:
        text = text.replace("  - {name: mon1, address: 10.54.0.41, roles: [monitoring]}\n",
                            "  - {name: mon1, address: 10.54.0.41, roles: [monitoring]}\n" + edit)
    path = tmp_path / "region.yml"
    path.write_text(text, encoding="utf-8")
    return load_spec(str(path))


def _render(loaded: LoadedSpec, secrets: SecretsView | None = None) -> dict[str, bytes]:
    view = secrets or SecretsView(placeholder_tree(required_secrets(loaded.region)))
    ctx = RenderContext(loaded, view, flow_matrix(loaded.region))
    _, files = render_host(ctx, loaded.region.nodes_with("monitoring")[0], [monitoring_layer])
    return files


def _targets(files: dict[str, bytes]) -> dict[str, list[str]]:
    config = yaml.safe_load(files["/etc/prometheus/prometheus.yml"])
    return {job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
            for job in config["scrape_configs"]}


def test_every_node_and_role_is_a_target(tmp_path: Path) -> None:
    targets = _targets(_render(_spec(tmp_path)))
    domain = "ekc.example.local"
    assert targets["node"] == [f"{n}.{domain}:9100" for n in ("pbx1", "db1", "crm1", "mon1")]
    assert targets["asterisk"] == [f"pbx1.{domain}:8088"]
    assert targets["queues"] == [f"pbx1.{domain}:9250"]
    assert targets["postgres"] == [f"db1.{domain}:9187"]
    assert targets["crm_https"] == [f"https://crm1.{domain}/creme_login"]
    assert targets["sip"] == [f"pbx1.{domain}:5060"]


def test_a_node_added_to_the_spec_is_scraped(tmp_path: Path) -> None:
    loaded = _spec(tmp_path, PBX2)
    targets = _targets(_render(loaded))
    assert "pbx2.ekc.example.local:9100" in targets["node"]
    assert "pbx2.ekc.example.local:8088" in targets["asterisk"]
    assert "pbx2.ekc.example.local:9250" in targets["queues"]
    assert "pbx2.ekc.example.local:5060" in targets["sip"]


def test_a_node_added_opens_its_exporter_ports_to_the_monitoring_node_only(tmp_path: Path) -> None:
    loaded = _spec(tmp_path, PBX2)
    flows = [f for f in flow_matrix(loaded.region) if f.target == "pbx2" and f.port in (9100, 9250, 8088)]
    assert {(f.port, f.source_cidr) for f in flows} == {(9100, "10.54.0.41/32"), (9250, "10.54.0.41/32"),
                                                        (8088, "10.54.0.41/32")}


def test_alerts_route_by_severity_to_the_spec_receivers(tmp_path: Path) -> None:
    config = yaml.safe_load(_render(_spec(tmp_path))["/etc/prometheus/alertmanager.yml"])
    assert config["global"]["smtp_smarthost"] == "10.54.0.1:25"
    receivers = {r["name"]: [e["to"] for e in r.get("email_configs", [])] for r in config["receivers"]}
    assert receivers["critical"] == ["duty@example.local", "head@example.local"]
    assert receivers["warning"] == ["duty@example.local"]
    routes = {r["receiver"]: r["matchers"] for r in config["route"]["routes"]}
    assert routes == {"critical": ['severity="critical"'], "warning": ['severity="warning"']}


def test_service_level_rules_use_each_departments_target(tmp_path: Path) -> None:
    rules = _render(_spec(tmp_path))["/etc/prometheus/rules/ekc.rules.yml"].decode()
    assert re.search(r'service_level_pct\{department="health"\}\) < 90\b', rules)
    assert re.search(r'service_level_pct\{department="social"\}\) < 80\b', rules)


def test_wallboard_has_one_tile_per_department(tmp_path: Path) -> None:
    html = _render(_spec(tmp_path))["/var/www/ekc-wallboard/index.html"].decode()
    assert re.findall(r'data-department="([a-z]+)"', html) == ["social", "health", "housing", "transport", "info"]
    assert "http://" not in html and "https://" not in html  # no external assets


def test_wallboard_proxies_only_the_query_api(tmp_path: Path) -> None:
    conf = _render(_spec(tmp_path))["/etc/nginx/conf.d/ekc-wallboard.conf"].decode()
    assert "location = /api/v1/query" in conf and "proxy_pass" in conf
    assert conf.count("proxy_pass") == 1 and "limit_except GET" in conf


def test_real_render_is_byte_identical_and_carries_bcrypt_hashes(tmp_path: Path) -> None:
    loaded = _spec(tmp_path)
    tree, _ = fill_secrets({}, required_secrets(loaded.region))
    first, second = _render(loaded, SecretsView(tree)), _render(loaded, SecretsView(tree))
    assert first == second
    web = yaml.safe_load(first["/etc/prometheus/web.yml"])
    for user in ("prometheus_admin", "wallboard"):
        assert bcrypt.checkpw(tree["monitoring"][user].encode(), web["basic_auth_users"][user].encode())
    assert check_secrets(tree, required_secrets(loaded.region)) == []


def test_redacted_render_shows_hashes_but_no_password(tmp_path: Path) -> None:
    loaded = _spec(tmp_path)
    tree, _ = fill_secrets({}, required_secrets(loaded.region))
    files = _render(loaded, SecretsView(tree).redact())
    assert files["/etc/prometheus/ekc/prometheus_admin.pass"].strip() == REDACTED.encode()
    assert tree["monitoring"]["bcrypt"]["wallboard"].encode() in files["/etc/prometheus/web.yml"]
    everything = b"".join(files.values())
    assert not any(value.encode() in everything for value in secret_values(tree) if len(value) >= 20)


def test_a_hash_of_another_password_is_replaced() -> None:
    loaded = load_spec("example")
    reqs = required_secrets(loaded.region)
    tree, _ = fill_secrets({}, reqs)
    tree["monitoring"]["wallboard"] = "Zq8" + tree["monitoring"]["wallboard"][3:] + "x"
    problems = dict(check_secrets(tree, reqs))
    assert ("monitoring", "bcrypt", "wallboard") in problems
    fixed, report = fill_secrets(tree, reqs)
    assert any("monitoring.bcrypt.wallboard" in line for line in report)
    monitoring = fixed["monitoring"]
    assert bcrypt.checkpw(monitoring["wallboard"].encode(), monitoring["bcrypt"]["wallboard"].encode())


@pytest.mark.parametrize("layer", [node_exporter_layer, queue_exporter_layer, postgres_exporter_layer])
def test_exporter_layers_render(layer: object) -> None:
    loaded = load_spec("example")
    ctx = RenderContext(loaded, SecretsView(placeholder_tree(required_secrets(loaded.region))),
                        flow_matrix(loaded.region))
    node = {"queue_exporter_layer": "pbx1", "postgres_exporter_layer": "db1"}.get(layer.__name__, "crm1")  # type: ignore[attr-defined]
    _, files = render_host(ctx, next(n for n in loaded.region.nodes if n.name == node), [layer])  # type: ignore[list-item]
    assert files



def test_demo_prints_the_wallboard_and_prometheus_addresses() -> None:
    from ekc.render.components.monitoring import monitoring_urls  # noqa: PLC0415

    (line,) = monitoring_urls(load_spec("example").region)
    assert "wallboard https://10.54.0.41/" in line and "Prometheus https://10.54.0.41:9090/" in line


def test_a_monitoring_node_may_scrape_its_own_exporters() -> None:
    """On one node with every role, the exporters' ports are listed for the node itself (verify and nftables)."""
    region = load_spec("small").region
    own = {f.port for f in flow_matrix(region) if f.source_cidr == f"{f.target_address}/32"}
    assert {9100, 8088, 9187, 9250} <= own


def test_the_wallboards_servers_carry_each_roles_facts() -> None:
    """Every node that is not absent gets a tile; a proxy shows the virtual address, an Asterisk node behind the
    edge the dispatcher, a cluster member its Patroni role; without edge or cluster, Asterisk and PostgreSQL up."""
    ha = load_spec("ha").region
    facts = {s["name"]: s["facts"] for s in wallboard_servers(ha)}
    assert facts["edge1"] == ["up", "vip"] and facts["pbx2"] == ["up", "dispatcher"]
    assert facts["db3"] == ["up", "leader"] and facts["crm1"] == ["up"] and len(facts) == len(ha.nodes)
    example = {s["name"]: s for s in wallboard_servers(load_spec("example").region)}
    assert example["pbx1"]["facts"] == ["up", "asterisk"] and example["db1"]["facts"] == ["up", "database"]
    assert example["pbx1"]["roles"] == "Asterisk" and example["pbx1"]["state_name"] == "в работе"
    drained = ha.model_copy(update={"nodes": [n.model_copy(update={"state": "drain" if n.name == "pbx1" else
                                                                    "absent" if n.name == "pbx3" else n.state})
                                              for n in ha.nodes]})
    tiles = {s["name"]: s for s in wallboard_servers(drained)}
    assert "pbx3" not in tiles and tiles["pbx1"]["state"] == "drain" and tiles["pbx1"]["state_name"] == "выводится"
