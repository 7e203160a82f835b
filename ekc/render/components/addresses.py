"""Where one component is reached by another: names and ports that more than one component renders.

Kept apart so that components read each other's addresses without importing each other.
"""

from __future__ import annotations

from schemas.region import Node, Region

CRM_METRICS_PATH = "/appeals/metrics"
CRM_METRICS_PORT = 9189  # the appeals' task figures on each CRM node, for Prometheus (nginx, TLS)
CTI_PORT = 8444  # ekc-cti, click-to-call on every Asterisk node of a region with a CRM
CTI_PATH = "/ekc-cti/dial"  # where the CRM's own site takes a click and passes it on to an Asterisk node's ekc-cti
# node_exporter's textfile collector reads the metrics other components write here (a backup's last success,
# whether a proxy holds the SIP edge's virtual address).
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"


def crm_hostname(spec: Region) -> str:
    """The name the CRM is served at: ``crm.hostname`` or ``crm.<domain>``."""
    return spec.crm.hostname or f"crm.{spec.network.domain}"


def node_hostname(spec: Region, node: Node) -> str:
    """A node's name in the region's domain (in its certificate from the region CA)."""
    return f"{node.name}.{spec.network.domain}"


def click_to_call_nodes(spec: Region) -> list[Node]:
    """The Asterisk nodes the CRM passes clicks to, in the spec's order: the active ones (any of them rings any
    phone, through the edge when there is one), or all that are not absent when every one is drained; none
    without AMI, which the service asks."""
    if not spec.telephony.ami.enabled:
        return []
    nodes = [n for n in spec.nodes_with("asterisk") if n.state != "absent"]
    return [n for n in nodes if n.state == "active"] or nodes
