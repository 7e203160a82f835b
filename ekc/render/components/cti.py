"""Click-to-call for Creme: a small HTTPS service on the Asterisk node that rings the operator's own phone.

Creme's ``ABCTI_URL`` is opened by the operator's browser (``GET <url>?n_tel=<number>``): the CRM's own
``/ekc-cti/dial``, which the CRM's nginx passes to this service on the first Asterisk node that answers (the next
when one is down), with the workstation's address in ``X-Forwarded-For``. The service finds the operator's
extension by that address (the phone registered from that workstation,
read over AMI), then originates a call from that phone to the number in the phones' own dialplan context, so
a click can reach exactly what the operator could dial by hand. AMI is reached on loopback as ``ekc_cti``.
It answers over TLS with the node's certificate from the region CA, since the CRM's pages are HTTPS and a
browser refuses plain HTTP from them (and nginx checks the certificate); CORS admits the CRM's origin only.

In a region that records calls it also serves a call's recording (``GET /recording/<call id>``) to the CRM's nodes
alone: the CRM's nginx asks it once the CRM has said that the user may listen. The unit reads the recordings as a
member of group ``asterisk`` (Debian's spool directories are ``0750 asterisk:asterisk``), and sees nothing else of
Asterisk's: its spool is an empty read-only directory but for the recordings, its settings, state and logs are
inaccessible.
"""

from __future__ import annotations

from ekc.render.components.addresses import (
    CALL_ID_PATTERN,
    CTI_PATH,
    CTI_PORT,
    CTI_RECORDING_PATH,
    MONITOR_DIR,
    crm_hostname,
    recording_nodes,
)
from ekc.render.components.asterisk_edge import edge_view
from ekc.render.components.base import DAEMON_RELOAD
from ekc.render.components.sipedge import CONTACTS_PATH, METRICS_PORT
from ekc.render.manifest import ServiceState, Trigger
from ekc.render.model import FileSpec, HostLayer, RenderContext
from schemas.region import Node

COMPONENT = "cti"
PORT = CTI_PORT
UNIT = "ekc-cti"
SCRIPT = "/usr/local/lib/ekc/ekc-cti"
CONF_DIR = "/etc/ekc-cti"
CONFIG = f"{CONF_DIR}/ekc-cti.json"
TLS_CERT = f"{CONF_DIR}/tls.crt"
TLS_KEY = f"{CONF_DIR}/tls.key"
CA_CERT = f"{CONF_DIR}/region-ca.crt"  # what checks the service's certificate on the node (verify)
AMI_USER = "ekc_cti"
AMI_PORT = 5038
OPERATORS_CONTEXT = "ekc-operators"
SPOOL_DIR = "/var/spool/asterisk"
# What the unit must not see although group asterisk could read it (settings with secrets, AstDB, logs).
ASTERISK_PRIVATE = ("/etc/asterisk", "/var/lib/asterisk", "/var/log/asterisk")
# A recording's media type by the file's extension (MixMonitor names wav49 files .WAV: GSM in a WAV container).
MEDIA_TYPES = {"wav": "audio/wav", "WAV": "audio/wav", "gsm": "audio/x-gsm"}

RESTART_CTI = Trigger("restart", UNIT, f"systemctl restart {UNIT}",
                      "click-to-call unavailable for a second; no call dropped")


def cti_layer(ctx: RenderContext, node: Node) -> HostLayer:
    """The click-to-call service on an Asterisk node of a region with a CRM (nothing otherwise)."""
    region = ctx.spec.region
    if not region.nodes_with("crm") or not region.telephony.ami.enabled:
        return HostLayer()

    def spec(path: str, trigger: Trigger = RESTART_CTI, *, mode: str = "0644", secret: bool = False,
             comment: str | None = "#", **data: object) -> FileSpec:
        return FileSpec(path, f"{COMPONENT}{path}.j2", COMPONENT, data, mode=mode, trigger=trigger,
                        secret=secret, comment=comment)

    tls = ("tls", node.name)
    view = edge_view(region)
    config = {
        "listen": node.address,
        "port": PORT,
        "origin": f"https://{crm_hostname(region)}",
        "path": CTI_PATH,
        # The CRM's nginx passes the clicks on, with the workstation's address in X-Forwarded-For.
        "trusted_proxies": [n.address for n in region.nodes_with("crm")],
        "ami_host": "127.0.0.1",
        "ami_port": AMI_PORT,
        "ami_user": AMI_USER,
        "ami_password": ctx.secrets.get("ami", AMI_USER),
        "context": OPERATORS_CONTEXT,
        # Behind the SIP edge the phones register at the proxies: found in their location, rung through them.
        "edge": None if view is None else {"proxies": list(view.proxies), "port": METRICS_PORT,
                                           "path": CONTACTS_PATH},
        "channel_suffix": "" if view is None else f"@{view.endpoint}",
        "extensions": ctx.once(f"{COMPONENT}.extensions",
                               lambda: sorted(op.extension for op in region.telephony.operators)),
        "recordings": _recordings(ctx, node),
    }
    files = [
        spec(SCRIPT, mode="0755", comment="#"),
        spec(CONFIG, mode="0600", secret=True, comment=None, config=config),
        spec(TLS_CERT, comment=None, pem=ctx.secrets.get(*tls, "cert").strip()),
        spec(TLS_KEY, mode="0600", secret=True, comment=None, pem=ctx.secrets.get(*tls, "key").strip()),
        spec(CA_CERT, Trigger(), comment=None, pem=ctx.secrets.get("ca", "cert").strip()),
        spec(f"/etc/systemd/system/{UNIT}.service", DAEMON_RELOAD, script=SCRIPT, config=CONFIG, cert=TLS_CERT,
             key=TLS_KEY, address=node.address, port=PORT,
             recordings={"spool": SPOOL_DIR, "directory": MONITOR_DIR, "private": list(ASTERISK_PRIVATE)}
             if config["recordings"] else None),
    ]
    return HostLayer(packages=["python3"], services=[ServiceState(UNIT)], files=files)


def _recordings(ctx: RenderContext, node: Node) -> dict[str, object] | None:
    """Where the node's recordings are and how they are named (None when the CRM cannot play them)."""
    region = ctx.spec.region
    if node not in recording_nodes(region):
        return None
    return {
        "path": CTI_RECORDING_PATH,
        "directory": MONITOR_DIR,
        "call_id": CALL_ID_PATTERN,
        "departments": ctx.once(f"{COMPONENT}.departments",
                                lambda: sorted(d.id for d in region.telephony.departments)),
        "media_types": MEDIA_TYPES,
    }
