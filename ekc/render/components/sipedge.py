"""Facts about the region's SIP edge that several components read: the proxies, the virtual address, the ports.

With ``sip-proxy`` nodes (and ``telephony.edge``, the schema's rule), trunks, operators' phones and Asterisk send
SIP to one virtual address that keepalived keeps on one proxy at a time; Kamailio on every proxy serves it
(``sip_proxy``), and Asterisk accepts SIP from the edge only. Kept apart so that the flow matrix, Asterisk,
monitoring and keepalived read the same facts without importing each other.
"""

from __future__ import annotations

import ipaddress

from schemas.region import Node, Region
from schemas.telephony import Edge
from schemas.types import Role

ROLE: Role = "sip-proxy"
METRICS_PORT = 9494  # Kamailio's xhttp_prom listener on each proxy's own address, for the monitoring nodes
REGISTERED_PATH = "/ekc/registered"  # on the same listener: the registered phones, for the Asterisk nodes
CONTACTS_PATH = "/ekc/contacts"  # and their contacts (where each phone registered from), for click-to-call
VRRP_INSTANCE = "EKC_EDGE"  # keepalived's name for the one VRRP instance (a label of its metrics)
VRRP_PROTOCOL = "vrrp"  # IP protocol 112, no ports: what the flow matrix and nftables call it


def proxies(region: Region) -> list[Node]:
    """The sip-proxy nodes, in spec order (the first holds the virtual address when all are up)."""
    return region.nodes_with(ROLE)


def edge(region: Region) -> Edge | None:
    """The edge's settings when the region has sip-proxy nodes, else None (trunks and phones reach Asterisk)."""
    return region.telephony.edge if proxies(region) else None


def virtual_prefix(region: Region, address: str) -> int:
    """The prefix length of the declared subnet that holds ``address`` (the schema's rule makes one hold it)."""
    ip = ipaddress.IPv4Address(address)
    nets = [ipaddress.IPv4Network(s.cidr) for s in region.network.subnets]
    return next(net.prefixlen for net in nets if ip in net)


def peers(region: Region, node: Node) -> list[Node]:
    """The other proxies of ``node``, in spec order."""
    return [n for n in proxies(region) if n.name != node.name]
