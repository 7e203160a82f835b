"""Asterisk's side of PostgreSQL: CDR (cdr_pgsql), CEL (cel_pgsql) and the realtime queue_log.

Rendered on asterisk nodes when the region has a postgresql node. Asterisk logs in as role ``asterisk`` over
TLS and verifies the server against the region's CA: cdr_pgsql has no sslmode option, so libpq reads
``PGSSLMODE``/``PGSSLROOTCERT`` from the environment a systemd drop-in gives asterisk.service. Times are
written in UTC (the role's session time zone in the database is UTC too).
"""

from __future__ import annotations

from ekc.render.components.base import DAEMON_RELOAD
from ekc.render.components.postgresql import PORT, server_fqdn
from ekc.render.manifest import Trigger
from ekc.render.model import FileSpec, HostLayer, RenderContext
from schemas.region import Node

COMPONENT = "asterisk"
CA_FILE = "/etc/ekc/tls/postgresql-ca.crt"
DROP_IN = "/etc/systemd/system/asterisk.service.d/20-ekc-postgresql.conf"
CEL_EVENTS = ("CHAN_START", "CHAN_END", "ANSWER", "HANGUP", "BRIDGE_ENTER", "BRIDGE_EXIT", "APP_START", "APP_END",
              "BLINDTRANSFER", "ATTENDEDTRANSFER", "PICKUP", "LINKEDID_END", "USER_DEFINED")
CEL_APPS = ("dial", "queue", "queuelog", "voicemail", "mixmonitor")


def _module_reload(module: str) -> Trigger:
    return Trigger("reload", "asterisk", f"asterisk -rx 'module reload {module}'",
                   f"Asterisk reloads {module}; no call is dropped")


def asterisk_db_layer(ctx: RenderContext, node: Node) -> HostLayer:
    """The database modules' configuration on an asterisk node (nothing if the region has no database)."""

    databases = ctx.spec.region.nodes_with("postgresql")
    if not databases:
        return HostLayer()
    conn = {
        "host": server_fqdn(ctx, databases[0]),
        "port": PORT,
        "dbname": "asterisk",
        "user": "asterisk",
        "password": ctx.secrets.get("postgresql", "asterisk"),
    }
    files = [
        _secret("/etc/asterisk/cdr_pgsql.conf", _module_reload("cdr_pgsql.so"), conn=conn),
        _secret("/etc/asterisk/cel_pgsql.conf", _module_reload("cel_pgsql.so"), conn=conn),
        _secret("/etc/asterisk/res_pgsql.conf", _module_reload("res_config_pgsql.so"), conn=conn),
        _plain("/etc/asterisk/cel.conf", _module_reload("cel"), events=",".join(CEL_EVENTS),
               apps=",".join(CEL_APPS)),
        _plain("/etc/asterisk/extconfig.conf", _module_reload("config"), dbname=conn["dbname"]),
        _file(CA_FILE, Trigger(impact="read by libpq at Asterisk's next database connection"), comment=None,
              pem=ctx.secrets.get("ca", "cert").strip()),
        _file(DROP_IN, DAEMON_RELOAD, ca=CA_FILE,
              hostaddr="127.0.0.1" if databases[0].name == node.name else None),
    ]
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
