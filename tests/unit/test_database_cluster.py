"""The render of a Patroni cluster (inventories/ha): who may create it, how clients find the leader, what the
firewall lets through, and that a region with one database node renders none of it."""

from __future__ import annotations

from functools import cache

import yaml

from ekc.render.model import RenderResult
from tests.support.render import placeholder_render

MEMBERS = ("db1", "db2", "db3")


@cache
def _render(case: str) -> RenderResult:
    return placeholder_render(case)


def _file(case: str, host: str, path: str) -> str:
    return _render(case).contents[(host, path)].decode()


def _patroni(host: str) -> dict[str, object]:
    config = yaml.safe_load(_file("ha", host, "/etc/patroni/18-main.yml"))
    assert isinstance(config, dict)
    return config


def test_only_the_seed_may_create_the_cluster() -> None:
    """db1 (first in the spec) has the bootstrap section; db2 and db3 have none, so they clone, never create."""
    assert "bootstrap" in _patroni("db1")
    assert all("bootstrap" not in _patroni(host) for host in ("db2", "db3"))
    dcs = _patroni("db1")["bootstrap"]["dcs"]  # type: ignore[index]
    assert dcs["synchronous_mode"] is True and dcs["maximum_lag_on_failover"] == 16 * 1024 * 1024
    # Patroni's own rule, which it refuses to run without: loop_wait + 2 * retry_timeout <= ttl.
    assert dcs["loop_wait"] + 2 * dcs["retry_timeout"] <= dcs["ttl"] <= 25


def test_every_member_reaches_all_etcd_members_over_tls() -> None:
    for host in MEMBERS:
        etcd = _patroni(host)["etcd3"]
        assert etcd["protocol"] == "https" and len(etcd["hosts"]) == 3, etcd  # type: ignore[index]
        assert _patroni(host)["name"] == host
    for host in MEMBERS:
        settings = _file("ha", host, "/etc/default/etcd")
        assert "ETCD_CLIENT_CERT_AUTH=true" in settings and "ETCD_PEER_CLIENT_CERT_AUTH=true" in settings
        assert f"ETCD_NAME={host}\n" in settings and "ETCD_DATA_DIR=/var/lib/etcd/ekc-54\n" in settings


def test_no_database_write_can_hold_a_call_with_a_cluster() -> None:
    """queue_log has no realtime mapping (its writes run in the call's thread) and the realtime driver is not
    loaded; CDRs are posted off the CDR engine's thread (the dialplan's CDR() waits for that engine)."""
    assert "queue_log =>" not in _file("ha", "pbx1", "/etc/asterisk/extconfig.conf")
    assert "res_config_pgsql.so" not in _file("ha", "pbx1", "/etc/asterisk/modules.conf")
    assert "batch = yes" in _file("ha", "pbx1", "/etc/asterisk/cdr.conf")
    # A lone database keeps the realtime queue_log (no journal there) and posts CDRs directly.
    assert "queue_log => pgsql" in _file("example", "pbx1", "/etc/asterisk/extconfig.conf")
    assert "batch" not in _file("example", "pbx1", "/etc/asterisk/cdr.conf")


def test_clients_list_every_member_and_ask_for_the_one_that_writes() -> None:
    hosts = "db1.ekc.example.local,db2.ekc.example.local,db3.ekc.example.local"
    for path in ("/etc/asterisk/cdr_pgsql.conf", "/etc/asterisk/cel_pgsql.conf"):
        assert hosts in _file("ha", "pbx1", path), path
    drop_in = _file("ha", "pbx1", "/etc/systemd/system/asterisk.service.d/20-ekc-postgresql.conf")
    assert "PGSERVICE=ekc" in drop_in and "PGHOSTADDR" not in drop_in
    service = _file("ha", "pbx1", "/etc/ekc/postgresql/pg_service.conf")
    assert "target_session_attrs=read-write" in service and "tcp_user_timeout=5000" in service
    settings = _file("ha", "crm1", "/etc/ekc-crm/ekc_crm_settings.py")
    assert f'"HOST": "{hosts}"' in settings and '"target_session_attrs": "read-write"' in settings


def test_replication_is_allowed_from_the_other_members_only() -> None:
    hba = _file("ha", "db2", "/etc/postgresql/18/main/pg_hba.conf")
    lines = [line.split() for line in hba.splitlines() if line.startswith("hostssl") and "replication" in line]
    assert sorted(line[3] for line in lines) == ["10.56.0.21/32", "10.56.0.23/32"], lines
    assert all(line[2] == "replicator" and line[4] == "scram-sha-256" for line in lines)
    assert not any(line.startswith(("host ", "local   all  all")) for line in hba.splitlines())


def test_the_flow_matrix_opens_the_cluster_ports_between_members_only() -> None:
    flows = _render("ha").manifest.flows
    def sources(target: str, port: int) -> set[str]:
        return {f.source for f in flows if f.target == target and f.port == port}
    assert sources("db1", 2380) == {"db2", "db3"}
    assert sources("db1", 2379) == {"db1", "db2", "db3"}
    assert sources("db1", 8008) == {"db1", "db2", "db3", "mon1"}
    assert sources("db1", 2381) == {"mon1"}
    assert "pbx1" not in sources("db1", 2379) | sources("db1", 8008)


def test_the_server_is_reloaded_and_restarted_through_patroni() -> None:
    host = next(h for h in _render("ha").manifest.hosts if h.name == "db2")
    triggers = {f.path: f.trigger for f in host.files}
    restart = triggers["/etc/postgresql/18/main/conf.d/10-ekc-restart.conf"]
    assert restart.command == "patronictl -c /etc/patroni/18-main.yml restart --force ekc-54 db2", restart
    assert triggers["/etc/postgresql/18/main/pg_hba.conf"].service == "patroni@18-main"
    services = {s.name for s in host.services}
    assert {"patroni@18-main", "etcd", "ekc-postgresql-setup"} <= services and "postgresql" not in services


def test_a_region_with_one_database_node_renders_no_cluster() -> None:
    for case in ("example", "small"):
        result = _render(case)
        components = {f.component for h in result.manifest.hosts for f in h.files}
        assert not components & {"patroni", "etcd"}, case
        assert not any(f.port in (2379, 2380, 2381, 8008) for f in result.manifest.flows), case


def test_the_cluster_alerts_are_rendered_for_the_cluster_only() -> None:
    rules = _file("ha", "mon1", "/etc/prometheus/rules/ekc.rules.yml")
    for alert in ("EkcDatabaseNoLeader", "EkcReplicationLag", "EkcEtcdQuorumLost", "EkcDatabaseMemberDown"):
        assert f"alert: {alert}" in rules, alert
    assert "EkcDatabaseNoLeader" not in _file("example", "mon1", "/etc/prometheus/rules/ekc.rules.yml")
    prometheus = _file("ha", "mon1", "/etc/prometheus/prometheus.yml")
    assert "job_name: patroni" in prometheus and "job_name: etcd" in prometheus
