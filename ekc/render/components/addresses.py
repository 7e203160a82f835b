"""Where one component is reached by another: names and ports that more than one component renders.

Kept apart so that components read each other's addresses without importing each other.
"""

from __future__ import annotations

from schemas.region import Node, Region

CRM_METRICS_PATH = "/appeals/metrics"
CRM_METRICS_PORT = 9189  # the appeals' task figures on each CRM node, for Prometheus (nginx, TLS)
CTI_PORT = 8444  # ekc-cti, click-to-call on every Asterisk node of a region with a CRM
CTI_PATH = "/ekc-cti/dial"  # where the CRM's own site takes a click and passes it on to an Asterisk node's ekc-cti
# A call's recording: the card's player asks the CRM for <RECORDINGS_PATH>/<node>/<call id>, which nginx passes to
# that node's ekc-cti as <CTI_RECORDING_PATH>/<call id> once the CRM has said the user may listen.
RECORDINGS_PATH = "/appeals-recordings"
CTI_RECORDING_PATH = "/recording"
# A channel's UNIQUEID: <systemname>-<epoch>.<sequence> (ekc sets every node's systemname; without one, no prefix).
# No slash, no glob character, a dot only between digits: no name of it can leave the recordings' directory.
CALL_ID_PATTERN = r"(?:[a-z][a-z0-9-]{0,31}-)?[0-9]{1,12}\.[0-9]{1,12}"
MONITOR_DIR = "/var/spool/asterisk/monitor"  # MixMonitor's recordings: <department>/<time>-<UNIQUEID>.<format>
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


def recording_nodes(spec: Region) -> list[Node]:
    """The Asterisk nodes whose recordings the CRM can play (their ekc-cti serves them): every one, drained or
    not (a drained node keeps its recordings), in a region that records calls and has a CRM and AMI."""
    if not (spec.telephony.recording.enabled and spec.telephony.ami.enabled and spec.nodes_with("crm")):
        return []
    return [n for n in spec.nodes_with("asterisk") if n.state != "absent"]
