"""Asterisk's side of PostgreSQL: CDR (cdr_pgsql), CEL (cel_pgsql) and the realtime queue_log.

With a Patroni cluster queue_log has no realtime mapping (and the realtime driver is not loaded): app_queue
writes a realtime row in the thread of the call that logged the event, so while no member takes writes every
event would hold the call for the connect timeout of each member. The file is shipped by ekc-journal instead
(see asterisk_journal), and CDRs are posted in batch mode (cdr.conf), off the CDR engine's thread.

Rendered on asterisk nodes when the region has a postgresql node. Asterisk logs in as role ``asterisk`` over
TLS and verifies the server against the region's CA: cdr_pgsql has no sslmode option, so libpq reads
``PGSSLMODE``/``PGSSLROOTCERT`` from the environment a systemd drop-in gives asterisk.service. With a Patroni
cluster the modules list every member, and a libpq service file (``PGSERVICE``) asks for the member that
accepts writes and drops a connection to a member that died within seconds. Times are
written in UTC (the role's session time zone in the database is UTC too).
"""

from __future__ import annotations

from ekc.render.components.base import DAEMON_RELOAD
from ekc.render.components.dbcluster import CONNECT_TIMEOUT_S, PORT, client_hosts, is_cluster
from ekc.render.manifest import Trigger
from ekc.render.model import FileSpec, HostLayer, RenderContext
from schemas.region import Node

COMPONENT = "asterisk"
CA_FILE = "/etc/ekc/tls/postgresql-ca.crt"
DROP_IN = "/etc/systemd/system/asterisk.service.d/20-ekc-postgresql.conf"
SERVICE_FILE = "/etc/ekc/postgresql/pg_service.conf"
# How libpq treats a Patroni cluster's members (its service file): take the one that accepts writes, give up
# on a member that does not answer within the connect timeout, and notice a member that died under an open
# connection within seconds (TCP keepalives and the user timeout), not after the kernel's minutes.
CLUSTER_SERVICE = {
    "target_session_attrs": "read-write",
    "connect_timeout": str(CONNECT_TIMEOUT_S),
    "keepalives": "1",
    "keepalives_idle": "5",
    "keepalives_interval": "2",
    "keepalives_count": "2",
    "tcp_user_timeout": "5000",
}
CEL_EVENTS = ("CHAN_START", "CHAN_END", "ANSWER", "HANGUP", "BRIDGE_ENTER", "BRIDGE_EXIT", "APP_START", "APP_END",
              "BLINDTRANSFER", "ATTENDEDTRANSFER", "PICKUP", "LINKEDID_END", "USER_DEFINED")
CEL_APPS = ("dial", "queue", "queuelog", "voicemail", "mixmonitor")


def _module_reload(module: str) -> Trigger:
    return Trigger("reload", "asterisk", f"asterisk -rx 'module reload {module}'",
                   f"Asterisk reloads {module}; no call is dropped")


def asterisk_db_layer(ctx: RenderContext, node: Node) -> HostLayer:
    """The database modules' configuration on an asterisk node (nothing if the region has no database)."""

    region = ctx.spec.region
    databases = region.nodes_with("postgresql")
    if not databases:
        return HostLayer()
    cluster = is_cluster(region)
    conn = {
        # Every member of a Patroni cluster: libpq connects to the one that takes writes (the drop-in's
        # PGTARGETSESSIONATTRS), so a failover needs no change here.
        "host": client_hosts(region),
        "port": PORT,
        "dbname": "asterisk",
        "user": "asterisk",
        "password": ctx.secrets.get("postgresql", "asterisk"),
    }
    files = [
        _secret("/etc/asterisk/cdr_pgsql.conf", _module_reload("cdr_pgsql.so"), conn=conn),
        _secret("/etc/asterisk/cel_pgsql.conf", _module_reload("cel_pgsql.so"), conn=conn),
        _plain("/etc/asterisk/cel.conf", _module_reload("cel"), events=",".join(CEL_EVENTS),
               apps=",".join(CEL_APPS)),
        _plain("/etc/asterisk/extconfig.conf", _module_reload("config"), dbname=conn["dbname"],
               realtime_queue_log=not cluster),
        _file(CA_FILE, Trigger(impact="read by libpq at Asterisk's next database connection"), comment=None,
              pem=ctx.secrets.get("ca", "cert").strip()),
        _file(DROP_IN, DAEMON_RELOAD, ca=CA_FILE, service_file=SERVICE_FILE if cluster else None,
              hostaddr="127.0.0.1" if not cluster and databases[0].name == node.name else None),
    ]
    if not cluster:  # the realtime driver, for queue_log (none with a cluster, see above)
        files.append(_secret("/etc/asterisk/res_pgsql.conf", _module_reload("res_config_pgsql.so"), conn=conn))
    else:
        files.append(_file(SERVICE_FILE, Trigger(impact="read by libpq at Asterisk's next database connection"),
                           service=CLUSTER_SERVICE))
    # The package owns /etc/asterisk and the asterisk group these files belong to.
    return HostLayer(packages=["asterisk"], files=files)


def _file(path: str, trigger: Trigger, *, comment: str | None = "#", mode: str = "0644", group: str = "root",
          secret: bool = False, **data: object) -> FileSpec:

    return FileSpec(path, f"{COMPONENT}{path}.j2", COMPONENT, data, mode=mode, owner="root", group=group,
                    trigger=trigger, secret=secret, comment=comment)


def _plain(path: str, trigger: Trigger, **data: object) -> FileSpec:

    return FileSpec(path, f"{COMPONENT}{path}.j2", COMPONENT, data, mode="0640", group="asterisk",
                    trigger=trigger, comment=";")


def _secret(path: str, trigger: Trigger, **data: object) -> FileSpec:

    return FileSpec(path, f"{COMPONENT}{path}.j2", COMPONENT, data, mode="0640", group="asterisk",
                    trigger=trigger, secret=True, comment=";")
