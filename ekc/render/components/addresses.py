"""Where one component is reached by another: names and ports that more than one component renders.

Kept apart so that components read each other's addresses without importing each other.
"""

from __future__ import annotations

from schemas.region import Node, Region

CTI_PORT = 8444  # ekc-cti, click-to-call on every Asterisk node of a region with a CRM
# node_exporter's textfile collector reads the metrics other components write here (a backup's last success,
# whether a proxy holds the SIP edge's virtual address).
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"


def crm_hostname(spec: Region) -> str:
    """The name the CRM is served at: ``crm.hostname`` or ``crm.<domain>``."""
    return spec.crm.hostname or f"crm.{spec.network.domain}"


def dial_url(spec: Region, node: Node) -> str:
    """The click-to-call address Creme's pages call on ``node``."""
    return f"https://{node.name}.{spec.network.domain}:{CTI_PORT}/dial"
