"""PostgreSQL 18: TLS-only access, one role per application, the call-record schema, KPI views, backups.

Debian's postgresql-common creates cluster 18/main when the package is installed; ekc configures it with two
drop-ins in ``conf.d`` (settings a reload applies, and settings that need a restart, so that the plan tells
the two apart), renders ``pg_hba.conf`` whole, and runs an idempotent setup unit that creates the roles, the
databases, the schema and the KPI views. Role passwords never reach a rendered file in clear: the setup reads
SCRAM-SHA-256 verifiers computed at render time, with a salt derived from the secret so a rerender is
byte-identical.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from ekc.render.components import dbcluster
from ekc.render.components.base import DAEMON_RELOAD
from ekc.render.components.dbcluster import PATRONI_CONFIG, PATRONI_UNIT, PORT, TIMING, VERSION, is_cluster
from ekc.render.files import header
from ekc.render.manifest import ServiceState, Trigger
from ekc.render.model import FileSpec, HostLayer, RenderContext
from ekc.spec.secrets import REDACTED
from schemas.region import Node
from schemas.types import Role

COMPONENT = "postgresql"
CLUSTER = f"{VERSION}/main"
UNIT = f"postgresql@{VERSION}-main"
CONF_DIR = f"/etc/postgresql/{CLUSTER}"
SERVER_CERT = f"{CONF_DIR}/ekc-server.crt"
SERVER_KEY = f"{CONF_DIR}/ekc-server.key"
SHARE = "/usr/local/share/ekc/postgresql"
SETUP_UNIT = "ekc-postgresql-setup"
SETUP_SCRIPT = "/usr/local/lib/ekc/postgresql-setup"
BACKUP_UNIT = "ekc-postgresql-backup"
BACKUP_SCRIPT = "/usr/local/lib/ekc/postgresql-backup"
RESTORE_SCRIPT = "/usr/local/lib/ekc/postgresql-restore"
ROLES_SQL = "/etc/ekc/postgresql/roles.sql"
SCRAM_ITERATIONS = 4096
REPLICATION_ROLE = "replicator"

# Connection limits per application role: the CRM's workers and Asterisk's three modules need few.
ROLE_LIMITS = {"asterisk": 20, "crm": 40, "monitoring": 5}
CLIENT_ROLES: dict[Role, str] = {"asterisk": "asterisk", "crm": "crm", "monitoring": "monitoring"}
# The CRM also reads the queue log (a view of it in database asterisk) to keep a card of every call.
ROLE_DATABASES = {"asterisk": "asterisk", "crm": "crm,asterisk", "monitoring": "asterisk,postgres"}

RELOAD_PG = Trigger("reload", UNIT, f"systemctl reload {UNIT}",
                    "PostgreSQL rereads its configuration; no connection is dropped")
RESTART_PG = Trigger(
    "restart", UNIT, f"systemctl restart {UNIT}",
    "PostgreSQL restarts (seconds): no call is dropped, but CDR, CEL and queue_log rows written meanwhile miss "
    "the database (cdr_pgsql does not buffer; they stay in Master.csv and /var/log/asterisk/queue_log); "
    "the CRM's requests fail until it is back",
)
RERUN_SETUP = Trigger("restart", SETUP_UNIT, f"systemctl restart {SETUP_UNIT}",
                      "roles, databases, schema and KPI views brought up to date in place; no connection dropped")
NO_TRIGGER = Trigger()
# In a Patroni cluster Patroni runs PostgreSQL: a reload goes to the server itself, a restart through Patroni.
RELOAD_CLUSTER_PG = Trigger("reload", PATRONI_UNIT, "runuser -u postgres -- psql -X -q -c 'SELECT pg_reload_conf()'",
                            "PostgreSQL rereads its configuration; no connection is dropped")
RESTART_CLUSTER_PG = Trigger(
    "restart", PATRONI_UNIT, f"patronictl -c {PATRONI_CONFIG} restart --force {{scope}} {{member}}",
    "Patroni restarts this member's PostgreSQL (seconds; the leader's restart is not a failover): CDR, CEL and "
    "queue_log rows written meanwhile on the leader miss the database; the CRM's requests fail until it is back",
)


def postgresql_layer(ctx: RenderContext, node: Node) -> HostLayer:
    """Packages, configuration, setup and backup units of a PostgreSQL node."""

    files = [
        *_server_files(ctx, node),
        *_setup_files(ctx, node),
        *_backup_files(ctx),
    ]
    # The backup service itself is started by its timer (or `deploy.py db backup`), never at apply. On a drained
    # node everything is stopped and disabled: it has left the cluster (the apply switches a leader over first).
    server = PATRONI_UNIT if is_cluster(ctx.spec.region) else "postgresql"
    serving = node.state == "active"
    services = [ServiceState(unit, enabled=serving, running=serving)
                for unit in (server, SETUP_UNIT, f"{BACKUP_UNIT}.timer")]
    return HostLayer(packages=[f"postgresql-{VERSION}", "postgresql-client-common"], services=services,
                     files=files)


def _script(ctx: RenderContext, path: str, trigger: Trigger = NO_TRIGGER, **data: object) -> FileSpec:
    """An executable: the generated-by header goes after its ``#!`` line, where the kernel still finds that."""

    return FileSpec(path, f"{COMPONENT}{path}.j2", COMPONENT, {**data, "header": header(ctx.spec, "#")},
                    mode="0755", trigger=trigger, comment=None)


def _spec(path: str, trigger: Trigger = NO_TRIGGER, *, mode: str = "0644", owner: str = "root",
          group: str = "root", secret: bool = False, comment: str | None = "#", **data: object) -> FileSpec:

    return FileSpec(path, f"{COMPONENT}{path}.j2", COMPONENT, data, mode=mode, owner=owner, group=group,
                    trigger=trigger, secret=secret, comment=comment)


def triggers(ctx: RenderContext, node: Node) -> tuple[Trigger, Trigger]:
    """The reload and restart triggers of the server's configuration, by who runs PostgreSQL here."""
    region = ctx.spec.region
    if not is_cluster(region):
        return RELOAD_PG, RESTART_PG
    command = RESTART_CLUSTER_PG.command or ""
    restart = Trigger(RESTART_CLUSTER_PG.action, RESTART_CLUSTER_PG.service,
                      command.format(scope=dbcluster.scope(region), member=node.name), RESTART_CLUSTER_PG.impact)
    return RELOAD_CLUSTER_PG, restart


def _server_files(ctx: RenderContext, node: Node) -> list[FileSpec]:
    """The cluster's drop-ins, pg_hba.conf and the server's certificate and key."""
    region = ctx.spec.region
    tls = ("tls", node.name)
    location = region.database.backup.location
    reload, restart = triggers(ctx, node)
    return [
        _spec(f"{CONF_DIR}/conf.d/10-ekc-restart.conf", restart, listen=listen_addresses(ctx, node),
              port=PORT, max_connections=region.database.max_connections, archive_mode="on",
              patroni=is_cluster(region)),
        _spec(f"{CONF_DIR}/conf.d/20-ekc.conf", reload, cert=SERVER_CERT, key=SERVER_KEY,
              archive_command=f"test ! -f {location}/wal/%f && cp %p {location}/wal/%f",
              timezone=region.region.timezone),
        _spec(f"{CONF_DIR}/pg_hba.conf", reload, owner="postgres", group="postgres", mode="0640",
              rules=hba_rules(ctx, node)),
        _spec(SERVER_CERT, reload, owner="postgres", group="postgres", comment=None,
              pem=ctx.secrets.get(*tls, "cert").strip()),
        _spec(SERVER_KEY, reload, owner="postgres", group="postgres", mode="0600", secret=True, comment=None,
              pem=ctx.secrets.get(*tls, "key").strip()),
    ]


def _setup_files(ctx: RenderContext, node: Node) -> list[FileSpec]:
    """The setup unit, its script and its SQL: roles, databases, schema, KPI views, departments.

    In a Patroni cluster the unit runs on every member and does its work on the leader only (the replicas get
    it by replication); there it also brings Patroni's cluster-wide settings to the spec's.
    """
    region = ctx.spec.region
    cluster = is_cluster(region)
    departments = [
        {"id": d.id, "name": d.name.replace("'", "''"), "queue": d.queue.number,
         "within_s": d.queue.service_level.within_s, "target_pct": d.queue.service_level.target_pct}
        for d in region.telephony.departments
    ]
    roles = [{"name": role, "limit": limit, "verifier": role_verifier(ctx, role), "replication": False}
             for role, limit in ROLE_LIMITS.items()]
    if cluster:
        roles.append({"name": REPLICATION_ROLE, "limit": 10, "replication": True,
                      "verifier": role_verifier(ctx, "replication", REPLICATION_ROLE)})
    unit = PATRONI_UNIT if cluster else UNIT
    patroni = {
        "config": PATRONI_CONFIG,
        "settings": {**TIMING, "synchronous_mode": str(region.database.synchronous).lower(),
                     "maximum_lag_on_failover": region.database.max_lag_mb * 1024 * 1024},
        "parameters": {"max_connections": region.database.max_connections},
    } if cluster else None
    return [
        _spec(f"{SHARE}/schema.sql", RERUN_SETUP, comment="--"),
        _spec(f"{SHARE}/kpi.sql", RERUN_SETUP, comment="--", timezone=region.region.timezone),
        _spec(f"{SHARE}/departments.sql", RERUN_SETUP, comment="--", departments=departments),
        *([_spec(f"{SHARE}/journal.sql", RERUN_SETUP, comment="--")] if cluster else []),
        _spec(ROLES_SQL, RERUN_SETUP, owner="postgres", group="postgres", mode="0600", secret=True,
              comment="--", roles=roles),
        _script(ctx, SETUP_SCRIPT, RERUN_SETUP, share=SHARE, roles_sql=ROLES_SQL, unit=unit,
                location=region.database.backup.location, patroni=patroni),
        _spec(f"/etc/systemd/system/{SETUP_UNIT}.service", DAEMON_RELOAD, unit=unit, script=SETUP_SCRIPT),
    ]


def _backup_files(ctx: RenderContext) -> list[FileSpec]:
    """Base backups on a timer, with retention; the restore script `deploy.py db restore` runs."""
    backup = ctx.spec.region.database.backup
    return [
        _script(ctx, BACKUP_SCRIPT, location=backup.location, retention_days=backup.retention_days,
                cluster=is_cluster(ctx.spec.region)),
        _script(ctx, RESTORE_SCRIPT, location=backup.location, unit=UNIT, data_dir=f"/var/lib/postgresql/{CLUSTER}",
                conf_dir=CONF_DIR, setup_unit=SETUP_UNIT),
        _spec(f"/etc/systemd/system/{BACKUP_UNIT}.service", DAEMON_RELOAD, script=BACKUP_SCRIPT, unit=UNIT),
        _spec(f"/etc/systemd/system/{BACKUP_UNIT}.timer", DAEMON_RELOAD, schedule=backup.schedule),
    ]


def listen_addresses(ctx: RenderContext, node: Node) -> list[str]:
    """Loopback, and the node's address only when the flow matrix lets another node reach PostgreSQL here.

    Clients on the database node itself connect to 127.0.0.1 and still verify the certificate against the
    node's name (libpq ``host=<fqdn> hostaddr=127.0.0.1``), so a lone node listens on loopback alone.
    """
    remote = any(flow.target == node.name and flow.port == PORT and flow.proto == "tcp" for flow in ctx.flows)
    return ["localhost", node.address] if remote else ["localhost"]


def hba_rules(ctx: RenderContext, node: Node) -> list[dict[str, str]]:
    """pg_hba lines after the local peer ones: ``hostssl`` + scram-sha-256 from the flow matrix's clients only.

    Each client role may log in to its own database only, from the nodes that carry the application. An
    application on the database node itself comes from 127.0.0.1 (or the node's own address); so does the
    metrics exporter every database node runs when the region has a monitoring node.
    """
    region = ctx.spec.region
    clients: list[tuple[str, str, str]] = [
        (role, client.name, client.address)
        for app, role in CLIENT_ROLES.items()
        for client in region.nodes_with(app)
    ]
    if region.nodes_with("monitoring"):
        clients.append(("monitoring", node.name, node.address))
    rules: list[dict[str, str]] = []
    for role, name, address in dict.fromkeys(clients):
        sources = [f"{address}/32", "127.0.0.1/32"] if name == node.name else [f"{address}/32"]
        rules.extend({"database": ROLE_DATABASES[role], "user": role, "address": src, "client": name}
                     for src in sources)
    if is_cluster(region):
        # Streaming replication (a replica's base copy and its WAL stream) from the other members only.
        rules.extend({"database": "replication", "user": REPLICATION_ROLE, "address": f"{peer.address}/32",
                      "client": peer.name}
                     for peer in dbcluster.database_nodes(region) if peer.name != node.name)
    return rules


def scram_verifier(password: str, salt_key: str, iterations: int = SCRAM_ITERATIONS) -> str:
    """PostgreSQL's SCRAM-SHA-256 verifier of ``password`` with a salt derived from it (byte-identical renders).

    The salt is HMAC-SHA256(password, ``salt_key``)[:16]: unique per role and secret, and stable.
    """
    salt = hmac.new(password.encode(), f"ekc-scram-salt:{salt_key}".encode(), hashlib.sha256).digest()[:16]
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = base64.b64encode
    return f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}${b64(stored_key).decode()}:{b64(server_key).decode()}"


def role_verifier(ctx: RenderContext, secret: str, role: str | None = None) -> str:
    """The verifier of a role's vault password (``postgresql.<secret>``), or ``<redacted>`` in auditors' renders."""
    password = ctx.secrets.get("postgresql", secret)
    return REDACTED if password == REDACTED else scram_verifier(password, role or secret)


def server_fqdn(ctx: RenderContext, node: Node) -> str:
    """The name clients verify the server's certificate against (``verify-full``)."""
    return dbcluster.fqdn(ctx.spec.region, node)
