"""Patroni on every PostgreSQL node of a region with two or more: one cluster, its leader kept in etcd.

Patroni runs PostgreSQL (Debian's ``patroni@18-main``, configured in ``/etc/patroni/18-main.yml``) in the same
data and configuration directories Debian's cluster 18/main uses, so the drop-ins, ``pg_hba.conf`` and the
certificate the postgresql component renders stay in force. The seed (the first postgresql node) is the only
member with a ``bootstrap`` section: its Patroni makes the cluster from the data directory it finds (Debian's
fresh one, or the data of a region grown from one database node); the others have none, so they never make a
cluster of their own, and clone the leader instead. A member's prepare step stops Debian's unit, and removes a
data directory only when it is one Debian created and nothing ever used (no database but the three initdb
makes, never run by Patroni), which a new replica must not keep.

Failover: Patroni's leader key lives ``ttl`` seconds in etcd; a leader that dies stops renewing it, and a
replica no further behind than ``database.max_lag_mb`` takes over within ``ttl`` plus one loop. The REST API
(port 8008, health checks, ``patronictl``, Prometheus' ``/metrics``) and the etcd client connections use TLS
with the node's certificate from the region's CA; the API's changing requests need a password.
"""

from __future__ import annotations

from ekc.render.components import dbcluster
from ekc.render.components.base import DAEMON_RELOAD
from ekc.render.components.dbcluster import (
    INSTANCE,
    PATRONI_CONFIG,
    PATRONI_PORT,
    PATRONI_UNIT,
    PORT,
    TIMING,
    VERSION,
    is_cluster,
)
from ekc.render.files import header
from ekc.render.manifest import Trigger
from ekc.render.model import FileSpec, HostLayer, RenderContext
from schemas.region import Node

COMPONENT = "patroni"
TLS_DIR = "/etc/patroni"
CERT = f"{TLS_DIR}/ekc-node.crt"
KEY = f"{TLS_DIR}/ekc-node.key"
CA = f"{TLS_DIR}/ekc-ca.crt"
PREPARE_SCRIPT = "/usr/local/lib/ekc/patroni-prepare"
DATA_DIR = f"/var/lib/postgresql/{VERSION}/main"
CONF_DIR = f"/etc/postgresql/{VERSION}/main"
REST_USER = "ekc"

RELOAD = Trigger("reload", PATRONI_UNIT, f"systemctl reload {PATRONI_UNIT}",
                 "Patroni rereads its configuration; PostgreSQL keeps running, no connection is dropped")
TLS_RELOAD = Trigger("reload", PATRONI_UNIT, f"systemctl reload {PATRONI_UNIT}",
                     "Patroni reloads its REST API certificate; no connection is dropped")
NO_TRIGGER = Trigger()


def patroni_layer(ctx: RenderContext, node: Node) -> HostLayer:
    """Patroni's configuration, TLS files and prepare step on a postgresql node of a cluster (else nothing)."""
    region = ctx.spec.region
    if not is_cluster(region):
        return HostLayer()
    tls = ("tls", node.name)
    files = [
        _file(PATRONI_CONFIG, RELOAD, owner="postgres", mode="0600", secret=True, patroni=config(ctx, node)),
        _file(CERT, TLS_RELOAD, owner="postgres", comment=None, pem=ctx.secrets.get(*tls, "cert").strip()),
        _file(KEY, TLS_RELOAD, owner="postgres", mode="0600", secret=True, comment=None,
              pem=ctx.secrets.get(*tls, "key").strip()),
        _file(CA, TLS_RELOAD, comment=None, pem=ctx.secrets.get("ca", "cert").strip()),
        _file(f"{CONF_DIR}/start.conf", owner="postgres"),
        _file(PREPARE_SCRIPT, mode="0755", comment=None, header=header(ctx.spec, "#"), data_dir=DATA_DIR,
              seed=node.name == dbcluster.seed(region).name, debian_unit=f"postgresql@{INSTANCE}"),
        _file(f"/etc/systemd/system/{PATRONI_UNIT}.service.d/10-ekc.conf", DAEMON_RELOAD, script=PREPARE_SCRIPT),
    ]
    # python3-etcd: the client of Patroni's etcd3 implementation (Debian packages it apart).
    return HostLayer(packages=["patroni", "python3-etcd"], files=files)


def config(ctx: RenderContext, node: Node) -> dict[str, object]:
    """The values of ``/etc/patroni/18-main.yml`` for ``node``."""
    region = ctx.spec.region
    database = region.database
    bootstrap = None
    if node.name == dbcluster.seed(region).name:
        bootstrap = {
            **TIMING,
            "maximum_lag_on_failover": database.max_lag_mb * 1024 * 1024,
            "synchronous_mode": database.synchronous,
            "max_connections": database.max_connections,
        }
    return {
        "scope": dbcluster.scope(region),
        "name": node.name,
        "address": node.address,
        "rest_port": PATRONI_PORT,
        "port": PORT,
        "rest_user": REST_USER,
        "rest_password": ctx.secrets.get("patroni", "rest"),
        "replication_user": "replicator",
        "replication_password": ctx.secrets.get("postgresql", "replication"),
        "etcd_hosts": dbcluster.etcd_hosts(region),
        "cert": CERT,
        "key": KEY,
        "ca": CA,
        "data_dir": DATA_DIR,
        "bin_dir": f"/usr/lib/postgresql/{VERSION}/bin",
        "config_dir": CONF_DIR,
        "pgpass": f"/var/lib/postgresql/{INSTANCE}.pgpass",
        "bootstrap": bootstrap,
    }


def _file(path: str, trigger: Trigger = NO_TRIGGER, *, owner: str = "root", mode: str = "0644",
          secret: bool = False, comment: str | None = "#", **data: object) -> FileSpec:

    group = "postgres" if owner == "postgres" else "root"
    return FileSpec(path, f"{COMPONENT}{path}.j2", COMPONENT, data, mode=mode, owner=owner, group=group,
                    trigger=trigger, secret=secret, comment=comment)
