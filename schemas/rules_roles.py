"""Rules about the nodes' roles: which components a role needs, and what a component needs of the spec.

Part of the rules of ``schemas/rules.py`` (which registers them with the sections they read): the database
cluster and its etcd members, the departments' pins to Asterisk nodes, the SIP edge and its virtual address.
The types of a rule's findings live here, below ``schemas/rules.py``, which imports them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from schemas.region import Region

Path = tuple[str | int, ...]
Issue = tuple[Path, str]


def database_cluster(spec: Region) -> Iterator[Issue]:
    """Two or more postgresql nodes form one Patroni cluster, whose leader lives in etcd: 3 or 5 etcd members
    (an odd number, so that one of them failing leaves a quorum). A lone database node runs without either."""
    databases = spec.nodes_with("postgresql")
    members = spec.nodes_with("etcd")
    if len(databases) >= 2 and len(members) not in (3, 5):
        names = ", ".join(n.name for n in members) or "none"
        yield ("nodes",), (
            f"{len(databases)} postgresql nodes form a Patroni cluster, which keeps its leader in etcd: give the "
            f"role 'etcd' to 3 or 5 nodes (now {len(members)}: {names}), e.g. the database and monitoring nodes"
        )
    if len(databases) < 2:
        for index, node in enumerate(spec.nodes):
            if "etcd" in node.roles:
                yield ("nodes", index, "roles"), (
                    "etcd holds the leader of a Patroni cluster, which needs two or more postgresql nodes "
                    f"(this region has {len(databases)}); remove the role 'etcd'"
                )
        if spec.database.synchronous:
            yield ("database", "synchronous"), (
                "synchronous replication needs two or more postgresql nodes (a replica to wait for)"
            )


def pins_name_asterisk_nodes(spec: Region) -> Iterator[Issue]:
    """A department's ``nodes`` (where it may be placed) name asterisk nodes, each once."""
    pool = {n.name for n in spec.nodes_with("asterisk")}
    listed = ", ".join(sorted(pool)) or "none"
    for index, department in enumerate(spec.telephony.departments):
        for position, name in enumerate(department.nodes):
            if name not in pool:
                yield ("telephony", "departments", index, "nodes", position), (
                    f"'{name}' is not an asterisk node (the asterisk nodes: {listed})"
                )
            elif department.nodes.index(name) != position:
                yield ("telephony", "departments", index, "nodes", position), f"'{name}' is listed twice"


def sip_edge(spec: Region) -> Iterator[Issue]:
    """The SIP edge: sip-proxy nodes and ``telephony.edge`` come together, and the edge has Asterisk nodes to relay
    to; a proxy is not also an Asterisk node (both listen on the SIP port); its virtual address lies in a declared
    subnet and is nobody else's. The edge speaks SIP over UDP and TCP only, so phones cannot use TLS with it."""
    edge = spec.telephony.edge
    for index, node in enumerate(spec.nodes):
        if "sip-proxy" not in node.roles:
            continue
        if edge is None:
            yield ("nodes", index, "roles"), (
                "a sip-proxy node holds the SIP edge's virtual address: set telephony.edge.virtual_address "
                "(the address trunks and phones use), or remove the role 'sip-proxy'"
            )
        if "asterisk" in node.roles:
            yield ("nodes", index, "roles"), (
                "Kamailio (sip-proxy) and Asterisk both listen on the SIP port: put them on different nodes"
            )
    if edge is None:
        return
    if not spec.nodes_with("sip-proxy"):
        yield ("telephony", "edge"), (
            "the SIP edge needs nodes with the role 'sip-proxy' (two, so that one may fail), or remove telephony.edge"
        )
    elif not spec.nodes_with("asterisk"):
        yield ("telephony", "edge"), "the SIP edge relays calls to Asterisk: give the role 'asterisk' to a node"
    if spec.telephony.sip_tls.enabled:
        yield ("telephony", "sip_tls", "enabled"), (
            "phones reach the SIP edge over UDP or TCP, not TLS: set it to false, or remove telephony.edge"
        )
    yield from _virtual_address_problems(spec, edge.virtual_address)


def _virtual_address_problems(spec: Region, virtual: str) -> Iterator[Issue]:
    path: Path = ("telephony", "edge", "virtual_address")
    address = ipaddress.IPv4Address(virtual)
    subnets = spec.network.subnets
    if not any(address in ipaddress.IPv4Network(s.cidr) for s in subnets):
        yield path, f"{virtual} is in no declared subnet ({', '.join(s.cidr for s in subnets)})"
    for node in spec.nodes:
        if node.address == virtual:
            yield path, f"{virtual} is already the address of node {node.name} (the virtual address is nobody's own)"
    if spec.network.deploy_host == virtual:
        yield path, f"{virtual} is the deploy host's address"
    for subnet in subnets:
        if subnet.gateway == virtual:
            yield path, f"{virtual} is the gateway of subnet {subnet.name}"


def asterisk_pool_behind_the_edge(spec: Region) -> Iterator[Issue]:
    """Two or more asterisk nodes serve their departments behind the SIP edge: without it each phone registers
    at one node, and a call the carrier sends to another one finds no operator."""
    pool = spec.nodes_with("asterisk")
    if len(pool) >= 2 and not spec.nodes_with("sip-proxy"):
        names = ", ".join(n.name for n in pool)
        yield ("nodes",), (
            f"{len(pool)} asterisk nodes ({names}) share the departments behind the SIP edge: add nodes with the "
            "role 'sip-proxy' (two, so that one may fail) and telephony.edge.virtual_address, or keep one "
            "asterisk node"
        )
