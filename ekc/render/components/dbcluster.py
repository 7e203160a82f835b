"""Facts about the region's PostgreSQL that every component reads: one node, or one Patroni cluster of several.

With one ``postgresql`` node, Debian's cluster 18/main runs under ``postgresql@18-main`` as it always did. With
two or more, the nodes form one Patroni cluster whose leader lives in etcd (the nodes with the role ``etcd``);
Patroni runs PostgreSQL, and the first postgresql node in the spec is the seed: the only one whose Patroni may
create the cluster (from its data directory, so a region grown from one database node keeps its data); the
others clone it. Clients list every database node in service and ask libpq for the one that takes writes
(``target_session_attrs=read-write``), so a failover needs no change on any client. A drained node (``state:
drain``) stays rendered, with Patroni stopped and disabled: it has left the cluster, and no client lists it.
"""

from __future__ import annotations

from schemas.region import Node, Region

VERSION = "18"
CLUSTER_NAME = "main"
INSTANCE = f"{VERSION}-{CLUSTER_NAME}"
PORT = 5432
PATRONI_UNIT = f"patroni@{INSTANCE}"
PATRONI_CONFIG = f"/etc/patroni/{INSTANCE}.yml"
PATRONI_PORT = 8008
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
ETCD_METRICS_PORT = 2381
# Patroni's leader key lifetime and loop (loop_wait + 2 * retry_timeout <= ttl): a dead leader is replaced
# within about ttl + loop_wait seconds.
TIMING = {"ttl": 15, "loop_wait": 3, "retry_timeout": 6}
# A client tries each database node for this long before the next one (a stopped node answers nothing).
CONNECT_TIMEOUT_S = 3


def database_nodes(region: Region) -> list[Node]:
    """The postgresql nodes, in spec order."""
    return region.nodes_with("postgresql")


def is_cluster(region: Region) -> bool:
    """Whether the region's database is a Patroni cluster (two or more postgresql nodes)."""
    return len(database_nodes(region)) >= 2


def scope(region: Region) -> str:
    """The Patroni cluster's name (its key in etcd): one per region."""
    return f"ekc-{region.region.code}"


def seed(region: Region) -> Node:
    """The node whose Patroni may create the cluster: the first postgresql node of the spec."""
    return database_nodes(region)[0]


def fqdn(region: Region, node: Node) -> str:
    """The name clients verify a database server's certificate against (``verify-full``)."""
    return f"{node.name}.{region.network.domain}"


def serving_nodes(region: Region) -> list[Node]:
    """The postgresql nodes in service: a drained node has left the cluster (its Patroni is stopped)."""
    return region.active_nodes_with("postgresql")


def client_hosts(region: Region) -> str:
    """libpq's ``host``: the database node, or every node of the cluster in service, comma-separated."""
    return ",".join(fqdn(region, node) for node in serving_nodes(region))


def etcd_hosts(region: Region) -> list[str]:
    """The etcd members' client endpoints, ``address:port``."""
    return [f"{node.address}:{ETCD_CLIENT_PORT}" for node in region.nodes_with("etcd")]
