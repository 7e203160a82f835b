"""keepalived on the ``sip-proxy`` nodes: one VRRP instance keeps the SIP edge's virtual address on one proxy.

VRRP version 3, one advert a second (``advert_int 1``): a proxy that dies loses the address to the next in about
3-4 s. Adverts go unicast from the proxy's own address to the other proxies (``unicast_src_ip``,
``unicast_peer``); VRRP 3 has no authentication, so each proxy's firewall admits IP protocol 112 (vrrp) from the
other proxies only (the flow matrix). keepalived checks Kamailio every second (a ``vrrp_script``:
``systemctl is-active kamailio``): a proxy whose Kamailio fails two checks in a row goes to FAULT and gives the
address up, while a restart of Kamailio (under a second) does not move it. Not ``track_process``: it learns of
processes from the kernel's process-event connector, which a node in its own network namespace (a container, such
as the lab's nodes) cannot reach, so it would never see Kamailio at all.

Priority follows the proxies' order in the spec (the first highest), so a fresh region puts the address on the
first proxy. ``nopreempt``: a proxy that comes back does not take the address back. Every proxy serves the same
registrations and calls (DMQ), so there is nothing to gain from moving it, and every move costs about 3 s in which
SIP to the edge goes unanswered (UDP requests are retransmitted, TCP connections are made again).

The interface: the spec names none, and servers call theirs eth0, ens18 or host0 (the lab). The VRRP instance
and the address go on the interface that holds the node's address, found when keepalived starts
(``INTERFACE_SCRIPT``, an ``ExecStartPre`` of the unit) and handed to the configuration as the parameter
``$EKC_INTERFACE`` in an included file under /run. A ``notify`` script writes, for node_exporter's textfile
collector, whether this proxy holds the address (``ekc_vrrp_master``), its state changes and their time.
"""

from __future__ import annotations

from ekc.render.components.addresses import TEXTFILE_DIR
from ekc.render.components.base import DAEMON_RELOAD
from ekc.render.components.sipedge import VRRP_INSTANCE, peers, proxies, virtual_prefix
from ekc.render.files import header
from ekc.render.manifest import ServiceState, Trigger
from ekc.render.model import FileSpec, HostLayer, RenderContext
from schemas.region import Node

COMPONENT = "keepalived"
SERVICE = "keepalived"
CONFIG = "/etc/keepalived/keepalived.conf"
DROP_IN = f"/etc/systemd/system/{SERVICE}.service.d/10-ekc.conf"
INTERFACE_SCRIPT = "/usr/local/lib/ekc/keepalived-interface"
NOTIFY_SCRIPT = "/usr/local/lib/ekc/keepalived-notify"
RUN_DIR = "/run/ekc-keepalived"  # the unit's RuntimeDirectory
INTERFACE_FILE = f"{RUN_DIR}/interface.conf"
TRACKED_UNIT = "kamailio.service"
CHECK = f"/usr/bin/systemctl is-active --quiet {TRACKED_UNIT}"
CHECK_INTERVAL_S = 1
CHECK_FALL = 2  # failed checks in a row before the proxy gives the address up (about 2 s)
CHECK_RISE = 2  # passed checks in a row before it may hold it again
FIRST_PRIORITY = 150
PRIORITY_STEP = 10
ADVERT_INTERVAL_S = 1

# Not tied to the service running: the package starts keepalived when it is installed, before this configuration
# exists, and its unit's ConditionFileNotEmpty then skips it; reload-or-restart starts it once the file is there.
RELOAD = Trigger("reload", None, f"systemctl reload-or-restart {SERVICE}",
                 "keepalived rereads its configuration (started if it was not running); the virtual address stays "
                 "where it is")
NO_TRIGGER = Trigger("none", None, None, "read when keepalived next starts or changes state; nothing to run")


def priority(index: int) -> int:
    """The VRRP priority of the proxy at ``index`` among the sip-proxy nodes: the first highest (1-254)."""
    return max(1, FIRST_PRIORITY - PRIORITY_STEP * index)


def keepalived_layer(ctx: RenderContext, node: Node) -> HostLayer:
    """keepalived's configuration, its unit drop-in and its two scripts on a sip-proxy node."""
    region = ctx.spec.region
    edge = region.telephony.edge
    assert edge is not None  # the schema's rule: sip-proxy nodes come with telephony.edge
    index = [n.name for n in proxies(region)].index(node.name)
    vrrp = {
        "node": node.name,
        "address": node.address,
        "peers": [p.address for p in peers(region, node)],
        "instance": VRRP_INSTANCE,
        "router_id": edge.vrrp_router_id,
        "priority": priority(index),
        "advert_int": ADVERT_INTERVAL_S,
        "virtual": f"{edge.virtual_address}/{virtual_prefix(region, edge.virtual_address)}",
        "interface_file": INTERFACE_FILE,
        "check": CHECK,
        "check_interval_s": CHECK_INTERVAL_S,
        "fall": CHECK_FALL,
        "rise": CHECK_RISE,
        "notify": NOTIFY_SCRIPT,
    }
    files = [
        _file(CONFIG, RELOAD, vrrp=vrrp),
        _file(DROP_IN, DAEMON_RELOAD, run_dir=RUN_DIR.removeprefix("/run/"), script=INTERFACE_SCRIPT,
              after=TRACKED_UNIT),
        _file(INTERFACE_SCRIPT, mode="0755", comment=None, header=header(ctx.spec, "#"), address=node.address,
              file=INTERFACE_FILE),
        _file(NOTIFY_SCRIPT, mode="0755", comment=None, header=header(ctx.spec, "#"), textfile_dir=TEXTFILE_DIR),
    ]
    return HostLayer(packages=["keepalived"], services=[ServiceState(SERVICE)], files=files)


def _file(path: str, trigger: Trigger = NO_TRIGGER, *, mode: str = "0644", comment: str | None = "#",
          **data: object) -> FileSpec:

    return FileSpec(path, f"{COMPONENT}{path}.j2", COMPONENT, data, mode=mode, trigger=trigger, comment=comment)
