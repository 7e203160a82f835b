"""node_exporter on every node of a region that has a monitoring node: the machine's metrics on port 9100.

Its textfile directory also carries metrics other components write (the database backup writes the time of
its last success there: ``ekc_backup_last_success_timestamp_seconds``; keepalived whether a proxy holds the
SIP edge's virtual address: ``ekc_vrrp_master``).
"""

from __future__ import annotations

from ekc.render.components.addresses import TEXTFILE_DIR
from ekc.render.manifest import ServiceState, Trigger
from ekc.render.model import FileSpec, HostLayer, RenderContext
from schemas.region import Node

COMPONENT = "node_exporter"
SERVICE = "prometheus-node-exporter"
PORT = 9100
RESTART = Trigger("restart", SERVICE, f"systemctl restart {SERVICE}", "node_exporter restarts; no calls dropped")


def node_exporter_layer(ctx: RenderContext, node: Node) -> HostLayer:
    """The package, its command line and its service (nothing in a region without a monitoring node)."""

    if not ctx.spec.region.nodes_with("monitoring"):
        return HostLayer()  # nobody would scrape it
    args = f"--web.listen-address=:{PORT} --collector.textfile.directory={TEXTFILE_DIR}"
    path = f"/etc/default/{SERVICE}"
    files = [FileSpec(path, f"{COMPONENT}{path}.j2", COMPONENT, {"args": args}, trigger=RESTART)]
    return HostLayer(packages=[SERVICE], services=[ServiceState(SERVICE)], files=files)
