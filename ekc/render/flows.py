"""The flow matrix: every connection a host accepts, from the components' needs and the spec's own rules.

Each host's firewall is rendered from this list and nothing else, and the audit report prints it, so the
reviewed matrix is exactly what the hosts enforce.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ekc.render.components.addresses import CRM_METRICS_PORT, recording_nodes
from ekc.render.components.addresses import CTI_PORT as PORT
from ekc.render.components.dbcluster import (
    ETCD_CLIENT_PORT,
    ETCD_METRICS_PORT,
    ETCD_PEER_PORT,
    PATRONI_PORT,
    is_cluster,
)
from ekc.render.components.sipedge import METRICS_PORT as KAMAILIO_METRICS_PORT
from ekc.render.components.sipedge import VRRP_PROTOCOL, edge
from ekc.render.manifest import Flow
from schemas.region import Node, Region
from schemas.types import Role


@dataclass(frozen=True)
class Service:
    """A port a component listens on, and who may reach it."""

    role: Role | None  # None: every node
    port: int  # 0 for a protocol without ports (vrrp)
    proto: str
    purpose: str
    sources: tuple[str, ...]  # 'admin', 'deploy', 'role:<r>', 'operators', 'trunks', 'edge' (its virtual address)
    port_end: int | None = None
    # The monitoring node scrapes its own exporters through its own address too (its node_exporter, and on
    # a node with several roles the others'): such a port is listed for the node itself.
    self_source: bool = False


def component_services(spec: Region) -> tuple[Service, ...]:
    """What the components listen on. Later components add their ports here, in one table."""
    tel = spec.telephony
    rtp_first, rtp_last = tel.rtp_ports
    services = [
        Service(None, 22, "tcp", "SSH administration", ("admin", "deploy")),
        Service(None, 9100, "tcp", "node_exporter metrics", ("role:monitoring",), self_source=True),
        *_asterisk_sip(spec),
        Service("asterisk", rtp_first, "udp", "RTP media", ("trunks", "operators"), port_end=rtp_last),
        Service("asterisk", 8088, "tcp", "Asterisk metrics (res_prometheus)", ("role:monitoring",), self_source=True),
        Service("postgresql", 5432, "tcp", "PostgreSQL clients",
                ("role:asterisk", "role:crm", "role:monitoring")),
        Service("crm", 443, "tcp", "CRM over HTTPS", ("operators", "admin", "role:monitoring")),
        Service("crm", 80, "tcp", "CRM redirect to HTTPS", ("operators", "admin")),
        Service("crm", CRM_METRICS_PORT, "tcp", "appeals' task figures (HTTPS)", ("role:monitoring",),
                self_source=True),
        *_click_to_call(spec),
        Service("monitoring", 9090, "tcp", "Prometheus", ("admin",)),
        Service("monitoring", 9093, "tcp", "Alertmanager", ("admin",)),
        Service("monitoring", 443, "tcp", "Wallboard over HTTPS", ("admin",)),
        Service("postgresql", 9187, "tcp", "postgres_exporter metrics", ("role:monitoring",), self_source=True),
        Service("asterisk", 9250, "tcp", "queue exporter metrics (AMI)", ("role:monitoring",), self_source=True),
        Service("asterisk", tel.sip_port, "tcp", "SIP port probe (blackbox)", ("role:monitoring",),
                self_source=True),
    ]
    services += _database_cluster(spec)
    services += _sip_edge(spec)
    if tel.sip_tls.enabled:
        services.append(Service("asterisk", tel.sip_tls.port, "tcp", "SIP over TLS", ("operators",)))
    return tuple(services)


def _database_cluster(spec: Region) -> list[Service]:
    """A Patroni cluster's ports: replication and the REST API between members, etcd for its members and
    Patroni, and the metrics of both for the monitoring node."""
    if not is_cluster(spec):
        return []
    return [
        Service("postgresql", 5432, "tcp", "PostgreSQL streaming replication", ("role:postgresql",)),
        Service("postgresql", PATRONI_PORT, "tcp", "Patroni REST API (health, switchover, metrics)",
                ("role:postgresql", "role:monitoring"), self_source=True),
        Service("etcd", ETCD_CLIENT_PORT, "tcp", "etcd clients (Patroni)", ("role:postgresql", "role:etcd"),
                self_source=True),
        Service("etcd", ETCD_PEER_PORT, "tcp", "etcd members", ("role:etcd",)),
        Service("etcd", ETCD_METRICS_PORT, "tcp", "etcd metrics", ("role:monitoring",), self_source=True),
    ]


def _asterisk_sip(spec: Region) -> list[Service]:
    """Asterisk's SIP port: from trunks and phones, or with an edge from the edge alone (its virtual address,
    which every request Kamailio relays leaves from, and the proxies' own addresses, which its probes leave from).
    RTP stays open to trunks and phones either way: media does not pass the edge."""
    port = spec.telephony.sip_port
    if edge(spec) is None:
        return [Service("asterisk", port, proto, "SIP signalling", ("trunks", "operators")) for proto in ("udp", "tcp")]
    rtp_first, rtp_last = spec.telephony.rtp_ports
    return [*(Service("asterisk", port, proto, "SIP from the SIP edge (Kamailio)", ("edge", "role:sip-proxy"))
              for proto in ("udp", "tcp")),
            # A call the IVR of one node hands to the node that serves its department: media between the two.
            Service("asterisk", rtp_first, "udp", "RTP media between Asterisk nodes (calls handed over)",
                    ("role:asterisk",), port_end=rtp_last)]


def _sip_edge(spec: Region) -> list[Service]:
    """The proxies' ports: SIP from trunks, phones and Asterisk (and DMQ between the proxies, on the same port),
    Kamailio's metrics for the monitoring nodes, VRRP between the proxies."""
    if edge(spec) is None:
        return []
    port = spec.telephony.sip_port
    services = []
    for proto in ("udp", "tcp"):
        services += [
            Service("sip-proxy", port, proto, "SIP to the edge from trunks and phones", ("trunks", "operators")),
            Service("sip-proxy", port, proto, "SIP to the edge from Asterisk", ("role:asterisk",)),
        ]
    return [
        *services,
        Service("sip-proxy", port, "udp", "DMQ between the proxies (registrations, calls)", ("role:sip-proxy",)),
        Service("sip-proxy", KAMAILIO_METRICS_PORT, "tcp", "Kamailio metrics (xhttp_prom)", ("role:monitoring",),
                self_source=True),
        Service("sip-proxy", KAMAILIO_METRICS_PORT, "tcp", "the phones registered at the edge, for queue members",
                ("role:asterisk",)),
        Service("sip-proxy", 0, VRRP_PROTOCOL, "VRRP between the proxies (keepalived, the virtual address)",
                ("role:sip-proxy",)),
    ]


def _click_to_call(spec: Region) -> list[Service]:
    """The click-to-call service on Asterisk nodes: the CRM's nginx passes the operators' clicks to it, and the
    cards' players when the region records calls (regions with a CRM); the workstations reach the CRM only."""
    if not spec.nodes_with("crm") or not spec.telephony.ami.enabled:
        return []
    what = "click-to-call and call recordings" if recording_nodes(spec) else "click-to-call"
    return [Service("asterisk", PORT, "tcp", f"{what} passed on by the CRM (HTTPS)", ("role:crm",))]


def _source_cidrs(spec: Region, source: str) -> Iterator[tuple[str, str]]:
    """(label, cidr) pairs for a symbolic source."""
    if source == "admin":
        yield from ((f"admin {net}", net) for net in spec.network.admin_networks)
    elif source == "deploy":
        yield "deploy host", f"{spec.network.deploy_host}/32"
    elif source == "operators":
        nets = spec.telephony.operator_networks or [s.cidr for s in spec.network.subnets]
        yield from ((f"operators {net}", net) for net in nets)
    elif source == "edge":
        if spec.telephony.edge is not None:
            virtual = spec.telephony.edge.virtual_address
            yield f"SIP edge {virtual}", f"{virtual}/32"
    elif source == "trunks":
        for trunk in spec.telephony.trunks:
            yield from ((f"trunk {trunk.name}", f"{peer}/32") for peer in trunk.peers)
    elif source.startswith("role:"):
        yield from ((n.name, f"{n.address}/32") for n in spec.nodes_with(source.removeprefix("role:")))  # type: ignore[arg-type]
    elif any(n.name == source for n in spec.nodes):
        node = next(n for n in spec.nodes if n.name == source)
        yield node.name, f"{node.address}/32"
    else:
        yield source, source if "/" in source else f"{source}/32"


def _targets(spec: Region, target: str) -> list[Node]:
    if target.startswith("role:"):
        return spec.nodes_with(target.removeprefix("role:"))  # type: ignore[arg-type]
    return [n for n in spec.nodes if n.name == target]


def flow_matrix(spec: Region) -> tuple[Flow, ...]:
    """Every allowed connection to every node: component services first, then the spec's rules."""
    flows: set[Flow] = set()
    for svc in component_services(spec):
        targets = spec.nodes if svc.role is None else spec.nodes_with(svc.role)
        for node in targets:
            for source in svc.sources:
                for label, cidr in _source_cidrs(spec, source):
                    if cidr != f"{node.address}/32" or svc.self_source:
                        flows.add(_flow(label, cidr, node, svc.port, svc.proto, svc.purpose, svc.port_end))
    for rule in spec.security.flows:
        for target in rule.targets:
            for node in _targets(spec, target):
                for source in rule.sources:
                    for label, cidr in _source_cidrs(spec, source):
                        for port in rule.ports:
                            flows.add(_flow(label, cidr, node, port, rule.proto, rule.description, None))
    return tuple(sorted(flows, key=lambda f: (f.target, f.proto, f.port, f.source_cidr, f.purpose, f.source)))


def _flow(label: str, cidr: str, node: Node, port: int, proto: str, purpose: str, end: int | None) -> Flow:
    return Flow(
        source=label,
        source_cidr=cidr,
        target=node.name,
        target_address=node.address,
        port=port,
        proto="udp" if proto == "udp" else "vrrp" if proto == VRRP_PROTOCOL else "tcp",
        purpose=purpose,
        port_end=end,
    )
