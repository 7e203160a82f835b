"""etcd on the nodes with the role ``etcd``: the consensus store that holds the Patroni cluster's leader.

Three or five members (the schema's rule), so that one member failing leaves a quorum. Members and clients
(Patroni) talk TLS with the nodes' certificates from the region's CA, and each side checks the other's
certificate (``client-cert-auth``); metrics are served apart, without TLS, on a port only the monitoring node
may reach. The member list is read at a member's first start only: etcd keeps its membership in its data
directory (``/var/lib/etcd/<scope>``, not Debian's ``default``, which the package's own first start fills with
a one-member cluster).
"""

from __future__ import annotations

from ekc.render.components import dbcluster
from ekc.render.components.base import DAEMON_RELOAD
from ekc.render.components.dbcluster import ETCD_CLIENT_PORT, ETCD_METRICS_PORT, ETCD_PEER_PORT
from ekc.render.manifest import ServiceState, Trigger
from ekc.render.model import FileSpec, HostLayer, RenderContext
from schemas.region import Node

COMPONENT = "etcd"
SERVICE = "etcd"
TLS_DIR = "/etc/etcd"
CERT = f"{TLS_DIR}/ekc-node.crt"
KEY = f"{TLS_DIR}/ekc-node.key"
CA = f"{TLS_DIR}/ekc-ca.crt"
RESTART = Trigger("restart", SERVICE, f"systemctl restart {SERVICE}",
                  "this etcd member restarts (seconds); the others keep the quorum, so Patroni keeps its leader")


def etcd_layer(ctx: RenderContext, node: Node) -> HostLayer:
    """The package, the member's settings, its TLS files and a unit drop-in."""
    region = ctx.spec.region
    scope = dbcluster.scope(region)
    members = region.nodes_with("etcd")
    settings = {
        "ETCD_NAME": node.name,
        "ETCD_DATA_DIR": f"/var/lib/etcd/{scope}",
        "ETCD_LISTEN_PEER_URLS": f"https://{node.address}:{ETCD_PEER_PORT}",
        "ETCD_INITIAL_ADVERTISE_PEER_URLS": f"https://{node.address}:{ETCD_PEER_PORT}",
        "ETCD_LISTEN_CLIENT_URLS": f"https://{node.address}:{ETCD_CLIENT_PORT}",
        "ETCD_ADVERTISE_CLIENT_URLS": f"https://{node.address}:{ETCD_CLIENT_PORT}",
        "ETCD_INITIAL_CLUSTER": ",".join(f"{m.name}=https://{m.address}:{ETCD_PEER_PORT}" for m in members),
        "ETCD_INITIAL_CLUSTER_STATE": "new",
        "ETCD_INITIAL_CLUSTER_TOKEN": scope,
        "ETCD_CERT_FILE": CERT,
        "ETCD_KEY_FILE": KEY,
        "ETCD_TRUSTED_CA_FILE": CA,
        "ETCD_CLIENT_CERT_AUTH": "true",
        "ETCD_PEER_CERT_FILE": CERT,
        "ETCD_PEER_KEY_FILE": KEY,
        "ETCD_PEER_TRUSTED_CA_FILE": CA,
        "ETCD_PEER_CLIENT_CERT_AUTH": "true",
        "ETCD_AUTO_COMPACTION_RETENTION": "1",
        # Heartbeat and election timeout (ms) above etcd's LAN defaults (100/1000), for virtualised hosts whose
        # shared disk makes a WAL fsync slow (etcd's tuning guide), yet well under Patroni's retry_timeout: a
        # member that dies with the database's leader is replaced before Patroni gives up on etcd.
        "ETCD_HEARTBEAT_INTERVAL": "250",
        "ETCD_ELECTION_TIMEOUT": "2500",
    }
    if region.nodes_with("monitoring"):
        # Metrics apart, without TLS, for the monitoring node only (the flow matrix has no such port otherwise).
        settings["ETCD_LISTEN_METRICS_URLS"] = f"http://{node.address}:{ETCD_METRICS_PORT}"
    tls = ("tls", node.name)
    files = [
        _file("/etc/default/etcd", RESTART, settings=settings),
        _file(CERT, RESTART, owner="etcd", comment=None, pem=ctx.secrets.get(*tls, "cert").strip()),
        _file(KEY, RESTART, owner="etcd", mode="0600", secret=True, comment=None,
              pem=ctx.secrets.get(*tls, "key").strip()),
        _file(CA, RESTART, comment=None, pem=ctx.secrets.get("ca", "cert").strip()),
        _file("/etc/systemd/system/etcd.service.d/10-ekc.conf", DAEMON_RELOAD),
    ]
    return HostLayer(packages=["etcd-server", "etcd-client"], services=[ServiceState(SERVICE)], files=files)


def _file(path: str, trigger: Trigger, *, owner: str = "root", mode: str = "0644", secret: bool = False,
          comment: str | None = "#", **data: object) -> FileSpec:

    group = "etcd" if owner == "etcd" else "root"
    return FileSpec(path, f"{COMPONENT}{path}.j2", COMPONENT, data, mode=mode, owner=owner, group=group,
                    trigger=trigger, secret=secret, comment=comment)
