"""The PostgreSQL component's render: TLS-only pg_hba, secrets kept out of auditors' files, stable verifiers."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from ekc.engines.dbops import DbOpsError, Ssh, database_node, primary
from ekc.render.components.asterisk_db import asterisk_db_layer
from ekc.render.components.postgresql import ROLES_SQL, SHARE, UNIT, postgresql_layer, scram_verifier
from ekc.render.flows import flow_matrix
from ekc.render.manifest import BuildManifest
from ekc.render.model import RenderContext, RenderResult
from ekc.render.region import render_host
from ekc.spec.load import load_spec
from ekc.spec.secrets import SecretsView, required_secrets
from tests.support.render import placeholder_tree, real_secrets

HBA = "/etc/postgresql/18/main/pg_hba.conf"


def render_db(spec: str, secrets: SecretsView | None = None) -> RenderResult:
    """The render of this component alone (postgresql nodes; Asterisk's database files on asterisk nodes)."""
    loaded = load_spec(spec)
    view = secrets or SecretsView(placeholder_tree(required_secrets(loaded.region)))
    ctx = RenderContext(spec=loaded, secrets=view, flows=flow_matrix(loaded.region))
    hosts, contents = [], {}
    for node in loaded.region.nodes:
        layers = ([postgresql_layer] if "postgresql" in node.roles else []) + (
            [asterisk_db_layer] if "asterisk" in node.roles else [])
        host, files = render_host(ctx, node, layers)
        hosts.append(host)
        contents.update({(node.name, path): data for path, data in files.items()})
    manifest = BuildManifest("test", spec, loaded.sha256, "0", "test", view.redacted, tuple(hosts), ctx.flows)
    return RenderResult(manifest=manifest, contents=contents)


@pytest.fixture(scope="module")
def example() -> RenderResult:
    return render_db("inventories/example")


def _lines(result: RenderResult, host: str, path: str) -> list[str]:
    text = result.contents[(host, path)].decode()
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_pg_hba_is_peer_for_postgres_then_hostssl_scram_only(example: RenderResult) -> None:
    lines = [line.split() for line in _lines(example, "db1", HBA)]
    assert lines[:2] == [["local", "all", "postgres", "peer"], ["local", "replication", "postgres", "peer"]]
    remote = lines[2:]
    assert remote and all(line[0] == "hostssl" and line[-1] == "scram-sha-256" for line in remote)
    assert {(line[2], line[3]) for line in remote} == {
        ("asterisk", "10.54.0.11/32"), ("crm", "10.54.0.31/32"), ("monitoring", "10.54.0.41/32"),
        ("monitoring", "10.54.0.21/32"), ("monitoring", "127.0.0.1/32")}  # the exporter on db1 itself


def test_a_single_node_listens_on_loopback_only_and_asterisk_connects_there() -> None:
    """No other node may reach PostgreSQL (the flow matrix has no line), so it does not listen on the network."""
    result = render_db("inventories/small")
    node = load_spec("inventories/small").region.nodes[0]
    remote = [line.split() for line in _lines(result, node.name, HBA)][2:]
    assert {line[3] for line in remote} == {f"{node.address}/32", "127.0.0.1/32"}
    assert not any(word in {"trust", "md5", "password", "host", "hostnossl"} for line in remote for word in line)
    conf = result.contents[(node.name, "/etc/postgresql/18/main/conf.d/10-ekc-restart.conf")].decode()
    assert "listen_addresses = 'localhost'\n" in conf
    dropin = result.contents[(node.name, "/etc/systemd/system/asterisk.service.d/20-ekc-postgresql.conf")]
    assert b"Environment=PGHOSTADDR=127.0.0.1" in dropin


def test_restart_only_for_settings_that_need_it(example: RenderResult) -> None:
    host = example.manifest.host("db1")
    assert host is not None
    restart = host.file("/etc/postgresql/18/main/conf.d/10-ekc-restart.conf")
    reload_ = host.file("/etc/postgresql/18/main/conf.d/20-ekc.conf")
    assert restart is not None and reload_ is not None
    assert (restart.trigger.action, restart.trigger.service) == ("restart", UNIT)
    assert not restart.trigger.drops_calls and "CDR" in restart.trigger.impact
    assert (reload_.trigger.action, host.file(HBA).trigger.action) == ("reload", "reload")  # type: ignore[union-attr]
    text = example.contents[("db1", "/etc/postgresql/18/main/conf.d/10-ekc-restart.conf")].decode()
    assert "listen_addresses = 'localhost,10.54.0.21'" in text and "max_connections = 200" in text


def test_key_and_roles_are_secret_files(example: RenderResult) -> None:
    host = example.manifest.host("db1")
    assert host is not None
    for path, mode in ((ROLES_SQL, "0600"), ("/etc/postgresql/18/main/ekc-server.key", "0600")):
        managed = host.file(path)
        assert managed is not None and managed.secret and managed.mode == mode and managed.owner == "postgres"


def test_scram_verifier_matches_rfc7677_shape_and_is_stable() -> None:
    one = scram_verifier("pencil", "asterisk")
    assert one == scram_verifier("pencil", "asterisk")
    assert one != scram_verifier("pencil", "crm")
    match = re.fullmatch(r"SCRAM-SHA-256\$4096:([^$]+)\$([^:]+):(.+)", one)
    assert match is not None
    assert [len(base64.b64decode(part)) for part in match.groups()] == [16, 32, 32]


def test_redacted_render_has_no_password_nor_verifier() -> None:
    loaded = load_spec("inventories/example")
    secrets = real_secrets(loaded)
    real = render_db("inventories/example", secrets)
    redacted = render_db("inventories/example", secrets.redact())
    password = secrets.get("postgresql", "asterisk")
    verifier = scram_verifier(password, "asterisk")
    assert verifier.encode() in real.contents[("db1", ROLES_SQL)]
    assert password.encode() not in real.contents[("db1", ROLES_SQL)]
    for (_, _), data in redacted.contents.items():
        assert password.encode() not in data and verifier.encode() not in data
    assert password.encode() in real.contents[("pbx1", "/etc/asterisk/cdr_pgsql.conf")]
    assert b"password=<redacted>" in redacted.contents[("pbx1", "/etc/asterisk/cdr_pgsql.conf")]


def test_departments_follow_the_spec(example: RenderResult) -> None:
    text = example.contents[("db1", f"{SHARE}/departments.sql")].decode()
    assert "VALUES ('health', 'Министерство здравоохранения', '602', 15, 90)" in text
    assert "DELETE FROM ekc.departments WHERE id NOT IN ('social', 'health', 'housing', 'transport', 'info')" in text


def test_asterisk_writes_over_verified_tls(example: RenderResult) -> None:
    dropin = example.contents[("pbx1", "/etc/systemd/system/asterisk.service.d/20-ekc-postgresql.conf")].decode()
    assert "PGSSLMODE=verify-full" in dropin and "PGSSLROOTCERT=/etc/ekc/tls/postgresql-ca.crt" in dropin
    assert "PGHOSTADDR" not in dropin
    extconfig = example.contents[("pbx1", "/etc/asterisk/extconfig.conf")].decode()
    assert "queue_log => pgsql,asterisk,queue_log" in extconfig
    cdr = example.contents[("pbx1", "/etc/asterisk/cdr_pgsql.conf")].decode()
    assert "hostname=db1.ekc.example.local" in cdr and "timezone=UTC" in cdr
    host = example.manifest.host("pbx1")
    assert host is not None
    managed = host.file("/etc/asterisk/cdr_pgsql.conf")
    assert managed is not None and managed.secret and managed.mode == "0640" and managed.group == "asterisk"
    assert managed.trigger.command == "asterisk -rx 'module reload cdr_pgsql.so'" and not managed.trigger.drops_calls


def test_db_commands_pick_the_primary_and_name_unknown_nodes() -> None:
    region = load_spec("inventories/example").region
    assert primary(region).name == "db1" and database_node(region, None).name == "db1"
    with pytest.raises(DbOpsError, match=re.escape("no postgresql node called pbx1 (the region has: db1)")):
        database_node(region, "pbx1")
    argv = Ssh(Path("/k"), Path("/kh")).argv("10.54.0.21", "true")
    assert argv[-2:] == ["root@10.54.0.21", "true"] and "UserKnownHostsFile=/kh" in argv and "BatchMode=yes" in argv
