"""Rules about the nodes' roles: which components a role needs, and what a component needs of the spec.

Part of the rules of ``schemas/rules.py`` (which registers them with the sections they read): the database
cluster and its etcd members, the departments' pins to Asterisk nodes, the SIP edge and its virtual address, and
the nodes' lifecycle (what may be drained or removed without leaving a service without a node).
The types of a rule's findings live here, below ``schemas/rules.py``, which imports them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from schemas.region import Region
from schemas.types import Role

Path = tuple[str | int, ...]
Issue = tuple[Path, str]


def database_cluster(spec: Region) -> Iterator[Issue]:
    """Two or more postgresql nodes form one Patroni cluster, whose leader lives in etcd: 3 or 5 etcd members
    (an odd number, so that one of them failing leaves a quorum). A lone database node runs without either.
    Database nodes marked absent are not counted: they are no longer rendered (an etcd member may not be absent:
    node_lifecycle)."""
    databases = spec.without_absent().nodes_with("postgresql")
    members = spec.nodes_with("etcd")
    if len(databases) >= 2 and len(members) not in (3, 5):
        names = ", ".join(n.name for n in members) or "none"
        yield ("nodes",), (
            f"{len(databases)} postgresql nodes form a Patroni cluster, which keeps its leader in etcd: give the "
            f"role 'etcd' to 3 or 5 nodes (now {len(members)}: {names}), e.g. the database and monitoring nodes"
        )
    if len(spec.nodes_with("postgresql")) < 2:  # (a cluster that would shrink to one node: node_lifecycle)
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
    pool = {n.name: n.state for n in spec.nodes_with("asterisk")}
    listed = ", ".join(sorted(pool)) or "none"
    serving = "active" in pool.values()  # else node_lifecycle says that no node takes calls at all
    for index, department in enumerate(spec.telephony.departments):
        for position, name in enumerate(department.nodes):
            if name not in pool:
                yield ("telephony", "departments", index, "nodes", position), (
                    f"'{name}' is not an asterisk node (the asterisk nodes: {listed})"
                )
            elif department.nodes.index(name) != position:
                yield ("telephony", "departments", index, "nodes", position), f"'{name}' is listed twice"
        pins = [name for name in department.nodes if name in pool]
        if serving and pins and all(pool[name] != "active" for name in pins):
            states = ", ".join(f"{name}: {pool[name]}" for name in pins)
            yield ("telephony", "departments", index, "nodes"), (
                f"every node department {department.id} may use is out of service ({states}): add an active "
                "asterisk node to this list, or set one of these back to active"
            )


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
    present = spec.without_absent()
    if not present.nodes_with("sip-proxy"):
        yield ("telephony", "edge"), (
            "the SIP edge needs nodes with the role 'sip-proxy' (two, so that one may fail), or remove telephony.edge"
        )
    elif not present.nodes_with("asterisk"):
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
    present = spec.without_absent()
    pool = present.nodes_with("asterisk")
    if len(pool) >= 2 and not present.nodes_with("sip-proxy"):
        names = ", ".join(n.name for n in pool)
        yield ("nodes",), (
            f"{len(pool)} asterisk nodes ({names}) share the departments behind the SIP edge: add nodes with the "
            "role 'sip-proxy' (two, so that one may fail) and telephony.edge.virtual_address, or keep one "
            "asterisk node"
        )


def one_crm_node(spec: Region) -> Iterator[Issue]:
    """The CRM runs on one node: its uploads live on that node's disk, which a second one would not see."""
    nodes = spec.without_absent().nodes_with("crm")
    if len(nodes) > 1:
        names = ", ".join(n.name for n in nodes)
        yield ("nodes", spec.nodes.index(nodes[1]), "roles"), (
            f"the role 'crm' is on {len(nodes)} nodes ({names}): the CRM runs on one node (its uploaded files "
            "are on that node's disk); keep it on one"
        )


# Roles that ``drain`` takes out of service on a node: Asterisk finishes its calls, PostgreSQL leaves the cluster.
DRAINING_ROLES = ("asterisk", "postgresql")


def node_lifecycle(spec: Region) -> Iterator[Issue]:
    """What ``state`` may take out of service: a drain needs a role that drains, every service keeps a node that
    serves it, a Patroni cluster stays a cluster, and etcd keeps its members (so its quorum)."""
    for index, node in enumerate(spec.nodes):
        path: Path = ("nodes", index, "state")
        if node.state == "drain" and not set(DRAINING_ROLES) & set(node.roles):
            yield path, (
                f"drain applies to asterisk and postgresql nodes (calls finish, the database leaves its cluster); "
                f"{node.name} has {', '.join(node.roles)}: set it to absent to take it out, or back to active"
            )
        if node.state == "absent" and "etcd" in node.roles:
            yield path, (
                f"{node.name} is an etcd member, and ekc does not change etcd's membership: removing it would leave "
                "the cluster's quorum one member short; set it back to active (drain keeps etcd running)"
            )
    yield from _keeps_a_node(spec, "postgresql", "the call records and the CRM's data")
    if spec.telephony.departments:
        yield from _keeps_a_node(spec, "asterisk", "the departments' calls")
    yield from _cluster_stays_a_cluster(spec)


def _keeps_a_node(spec: Region, role: Role, what: str) -> Iterator[Issue]:
    """An issue at the first node of ``role`` that is out of service, when none of them stays active."""
    nodes = spec.nodes_with(role)
    if not nodes or spec.active_nodes_with(role):
        return
    states = ", ".join(f"{n.name}: {n.state}" for n in nodes)
    yield ("nodes", spec.nodes.index(nodes[0]), "state"), (
        f"no {role} node stays active ({states}): {what} need one; set one of them back to active"
    )


def _cluster_stays_a_cluster(spec: Region) -> Iterator[Issue]:
    """Removing database nodes never leaves a Patroni cluster with one node: ekc does not turn it back into a
    single server."""
    databases = spec.nodes_with("postgresql")
    staying = [n for n in databases if n.state != "absent"]
    if len(databases) < 2 or len(staying) >= 2 or not staying:
        return
    gone = next(n for n in databases if n.state == "absent")
    yield ("nodes", spec.nodes.index(gone), "state"), (
        f"removing {gone.name} leaves the Patroni cluster one postgresql node ({staying[0].name}), and ekc does "
        "not turn a cluster back into a single server: add a postgresql node first, or drain it instead"
    )
