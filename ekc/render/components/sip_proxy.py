"""Kamailio 6.1 on the ``sip-proxy`` nodes: the SIP edge that trunks, operators' phones and Asterisk talk to.

Every proxy listens on its own address and on the edge's virtual address (``telephony.edge``), which keepalived
keeps on one proxy at a time (``keepalived``); the others bind it too (``ip_nonlocal_bind``), so the one that
takes the address over serves it at once. Every request Kamailio relays leaves from the virtual address and is
record-routed through it, so trunks, phones and Asterisk see one address, and in-dialog requests reach whichever
proxy holds it. What a proxy sends on its own (DMQ, the dispatcher's probes) leaves from its own address.

Registrar: Kamailio is the phones' registrar; registrations live in memory (``usrloc`` ``db_mode`` 0) and are
replicated to the other proxies by DMQ (``dmq_usrloc``), not kept in PostgreSQL: a registration must not depend
on the database's leader (a database failover must not unregister a phone), DMQ replicates one in under a
millisecond, and a restarted proxy gets every registration back from its peer in about 0.1 s. Phones
authenticate by digest against HA1 = md5(extension:realm:password) (realm = ``network.domain``, the password the
vault's ``sip.<extension>``), from an htable that Kamailio loads at start and rereads on ``htable.reload``: the
table files are db_text tables (``/etc/kamailio/ekc-*.htable``; db_text's format has no comment lines, so they
carry no header). Adding an operator or moving a department therefore reloads tables; it restarts nothing.

Routing contract with Asterisk (X-EKC-Route is set by the edge only: any incoming one is removed first):

1. From a trunk peer (``telephony.trunks[].peers``) to one of that trunk's ``dids``: to dispatcher set 1 (every
   Asterisk node), round robin, with failover; header ``X-EKC-Route: trunk;name=<trunk>``. Any other R-URI from a
   trunk: 404. A trunk's INVITEs pass a rate limit of the trunks' ``max_channels`` together, per second.
2. From an Asterisk node (an address of set 1) to ``dept-<department id>``: to that department's set (its primary,
   priority 10; its standby, priority 5, while the primary fails its probes); header
   ``X-EKC-Route: department;id=<id>``. An unknown department: 404.
3. From an Asterisk node to an operator's or supervisor's extension: to the phone registered for it (not
   registered: 480); while the extension has a call, 486 Busy Here. The call state is a dialog profile
   (``callee``, replicated by DMQ), so two Asterisk nodes that ring the same operator through either proxy never
   ring the phone twice. A call the phone itself placed counts too. A dialog whose BYE never came is forgotten
   after ``DIALOG_TIMEOUT_S`` (4 h): longer than any call, short enough that a lost BYE does not keep an operator
   "busy" for a day.
4. From a phone (``telephony.operator_networks``, or every subnet when none is declared), authenticated (407, the
   From user must be the authenticated extension): to the set of the caller's first department, R-URI unchanged,
   header ``X-EKC-Route: operator;ext=<extension>``.
5. Anything else (another source, an anonymous From, a REGISTER from outside the operators' networks, a wrong
   password): 403. Every source that is not a trunk peer, an Asterisk node or a proxy passes pike (flood
   detection: over ``telephony.edge.flood_per_source`` requests a second, averaged over 2 s, it is dropped);
   in-dialog requests follow their Route (loose_route); every relayed dialog is record-routed.
6. OPTIONS to the proxy itself: 200.

Asterisk identifies the edge by the virtual address (relayed requests) and by each proxy's address (the
dispatcher's OPTIONS probes every second, which it must answer 200 for the node to stay in the sets).

Metrics (xhttp_prom, ``METRICS_PORT`` on the proxy's own address, for the monitoring nodes): Kamailio's own
statistics (``kamailio_*``), ``kamailio_ds_target_up{set, uri, asterisk}`` for every Asterisk node of set 1
(1 while it answers the probes; set every second from the start), and ``kamailio_refusals_total{reason}``.
"""

from __future__ import annotations

import hashlib
import math

from ekc.render.components.asterisk_pool import department_placements
from ekc.render.components.base import DAEMON_RELOAD
from ekc.render.components.sipedge import CONTACTS_PATH, METRICS_PORT, REGISTERED_PATH, peers, proxies
from ekc.render.files import header
from ekc.render.manifest import ServiceState, Trigger
from ekc.render.model import FileSpec, HostLayer, RenderContext
from schemas.region import Node, Region
from schemas.telephony import Telephony

COMPONENT = "sip_proxy"
SERVICE = "kamailio"
CONFIG = "/etc/kamailio/kamailio.cfg"
TABLE_DIR = "/etc/kamailio"
USERS = f"{TABLE_DIR}/ekc-users.htable"
DEPARTMENTS = f"{TABLE_DIR}/ekc-departments.htable"
EXTENSIONS = f"{TABLE_DIR}/ekc-extensions.htable"
DISPATCHER = f"{TABLE_DIR}/dispatcher.list"
POOL = f"{TABLE_DIR}/ekc-pool.htable"
POOL_TABLE_SIZE = 8  # 2^8 slots: three rows per Asterisk node
SYSCTL = "/etc/sysctl.d/60-ekc-nonlocal-bind.conf"
DROP_IN = f"/etc/systemd/system/{SERVICE}.service.d/10-ekc.conf"
RESTART_SCRIPT = "/usr/local/lib/ekc/kamailio-restart"
CTL_SOCKET = "unix:/run/kamailio/kamailio_ctl"
KAMCMD = f"/usr/sbin/kamcmd -s {CTL_SOCKET}"

POOL_SET = 1  # every Asterisk node: trunk calls, and the list of Asterisk addresses
DEPARTMENT_SET_BASE = 100  # a department's set: 100 + its index in telephony.departments
PRIMARY_PRIORITY = 10  # higher is tried first (ds_select_dst algorithm 8)
STANDBY_PRIORITY = 5
DISABLED_FLAG = 4  # the dispatcher's "admin disabled" destination flag: never selected, never probed
PING_INTERVAL_S = 1  # OPTIONS to every destination of every set, from each proxy
PIKE_UNIT_S = 2  # pike's sampling period: a source over flood_per_source requests a second, averaged over it
PROBING_THRESHOLD = 2  # failed probes before a destination is taken out (and answered ones to take it back)
PING_TIMEOUT_MS = 500
TM_TICKS_PER_S = 16  # ds_ping_fr_timer is handed to tm raw, in its timer ticks (1/16 s), not in ms
BRANCH_TIMEOUT_MS = 1500  # no provisional reply from an Asterisk node in this time: the next one is tried
DIALOG_TIMEOUT_S = 4 * 3600
REGISTER_EXPIRES_S = 600  # a phone registers again within 10 min: a lost registration heals by then
REGISTER_BURST_S = 10  # the REGISTER rate limit lets every phone register again within this after an outage
MIN_REGISTER_RATE = 20
RESTART_STAGGER_S = 10  # proxy i restarts i * this after the first: each gets the registrations from a peer
SHM_MB = 128
PKG_MB = 16
# Why a request was refused: the label values of kamailio_refusals_total (all present from the start).
REFUSALS = ("pike", "ratelimit", "untrusted", "anonymous", "register_source", "bad_auth", "unknown_number",
            "unknown_department", "not_registered", "busy", "no_destination", "method")

RESTART = Trigger("restart", SERVICE, RESTART_SCRIPT,
                  "Kamailio restarts on this proxy, one proxy after the other: each gets the registrations and "
                  "calls back from a peer (DMQ) in about 0.1 s; established calls keep their media")
NO_TRIGGER = Trigger()
SYSCTL_APPLY = Trigger("reload", None, f"/usr/lib/systemd/systemd-sysctl {SYSCTL}",
                       "the kernel lets Kamailio bind the virtual address before it holds it; no calls dropped")


def _reload(command: str, what: str) -> Trigger:
    return Trigger("reload", SERVICE, f"{KAMCMD} {command}", f"{what}; no registration or call is dropped")


DISPATCHER_RELOAD = _reload("dispatcher.reload", "Kamailio rereads the dispatcher sets (probing starts again)")


def _table_reload(table: str) -> Trigger:
    return _reload(f"htable.reload {table}", f"Kamailio rereads its {table} table")


def sip_proxy_layer(ctx: RenderContext, node: Node) -> HostLayer:
    """Kamailio's configuration, tables and unit drop-in on a sip-proxy node."""
    region = ctx.spec.region
    index = [n.name for n in proxies(region)].index(node.name)
    files = [
        _file(CONFIG, RESTART, kamailio=kamailio_config(ctx, node)),
        *ctx.once(f"{COMPONENT}.tables", lambda: _table_files(ctx)),
        _file(SYSCTL, SYSCTL_APPLY),
        _file(DROP_IN, DAEMON_RELOAD, shm_mb=SHM_MB, pkg_mb=PKG_MB, config=CONFIG),
        _file(RESTART_SCRIPT, mode="0755", comment=None, header=header(ctx.spec, "#"), config=CONFIG,
              service=SERVICE, delay_s=index * RESTART_STAGGER_S, node=node.name),
    ]
    return HostLayer(packages=["kamailio"], services=[ServiceState(SERVICE)], files=files)


def _table_files(ctx: RenderContext) -> list[FileSpec]:
    """The region-wide tables (the same on every proxy): users, departments, extensions, dispatcher sets."""
    region = ctx.spec.region
    return [
        _file(USERS, _table_reload("users"), mode="0640", group="kamailio", secret=True, comment=None,
              rows=user_rows(ctx)),
        _file(DEPARTMENTS, _table_reload("departments"), comment=None,
              rows=[(d, str(s)) for d, s in department_sets(region.telephony).items()]),
        _file(EXTENSIONS, _table_reload("extensions"), comment=None, rows=extension_rows(region.telephony)),
        _file(DISPATCHER, DISPATCHER_RELOAD, destinations=dispatcher_list(ctx)),
        _file(POOL, _table_reload("pool"), comment=None, rows=pool_rows(region)),
    ]


def pool_rows(region: Region) -> list[tuple[str, int, str]]:
    """The pool table: every Asterisk node by index (its address and name, for the probes' metric) and by
    address (who may read the registered phones), and how many there are. It is reloaded, not compiled into
    ``kamailio.cfg``: adding or removing an Asterisk node restarts no proxy, so no call in setup is lost."""
    nodes = region.nodes_with("asterisk")
    rows: list[tuple[str, int, str]] = [("count", 1, str(len(nodes)))]
    for index, n in enumerate(nodes):
        rows += [(f"addr.{index}", 0, n.address), (f"name.{index}", 0, n.name), (f"src.{n.address}", 1, "1")]
    return rows


def ha1(extension: str, realm: str, password: str) -> str:
    """The digest HA1 of an extension: md5 of ``extension:realm:password`` (RFC 2617), what Kamailio checks."""
    return hashlib.md5(f"{extension}:{realm}:{password}".encode(), usedforsecurity=False).hexdigest()


def user_rows(ctx: RenderContext) -> list[tuple[str, str]]:
    """(extension, HA1) of every operator and supervisor; an auditors' render shows no HA1 (it is the password's
    equivalent for this realm)."""
    tel = ctx.spec.region.telephony
    realm = ctx.spec.region.network.domain
    extensions = [p.extension for p in tel.operators] + [p.extension for p in tel.supervisors]
    rows = []
    for extension in extensions:
        password = ctx.secrets.get("sip", extension)
        rows.append((extension, password if ctx.redacted else ha1(extension, realm, password)))
    return rows


def department_sets(tel: Telephony) -> dict[str, int]:
    """Each department's dispatcher set id, by department id: ``DEPARTMENT_SET_BASE`` + its index."""
    return {d.id: DEPARTMENT_SET_BASE + index for index, d in enumerate(tel.departments)}


def extension_rows(tel: Telephony) -> list[tuple[str, str]]:
    """(extension, department id) of every operator and supervisor: the department a call they place goes to
    (their first one)."""
    rows = [(op.extension, op.skills()[0].department) for op in tel.operators]
    return rows + [(sup.extension, sup.departments[0]) for sup in tel.supervisors]


def sip_uri(region: Region, node: Node) -> str:
    """The dispatcher's destination of an Asterisk node."""
    return f"sip:{node.address}:{region.telephony.sip_port}"


def dispatcher_list(ctx: RenderContext) -> list[dict[str, object]]:
    """Every destination of ``dispatcher.list``: set 1 (each Asterisk node, priority 0), then each department's
    set (its primary at ``PRIMARY_PRIORITY``, its standby, if it has one, at ``STANDBY_PRIORITY``).

    A drained node stays in set 1 with the dispatcher's admin-disabled flag, rather than leaving it: set 1 is
    also how Kamailio knows an Asterisk node's address (``ds_is_from_list``, which matches a disabled
    destination too), and a drained node still sends requests for the calls it finishes, e.g. a caller in its
    IVR who picks a department now served elsewhere. A disabled destination is never selected and never probed,
    and a probe's late answer does not enable it again. The pool gives a drained node no department, so it is
    in no department's set."""
    region = ctx.spec.region
    nodes = {n.name: n for n in region.nodes_with("asterisk")}
    rows: list[dict[str, object]] = [
        {"set": POOL_SET, "uri": sip_uri(region, n), "flags": DISABLED_FLAG if n.state == "drain" else 0,
         "priority": 0, "attrs": f"node={n.name}"}
        for n in nodes.values()
    ]
    placements = department_placements(ctx)
    for department, set_id in department_sets(region.telephony).items():
        placement = placements[department]
        chosen = [(placement.primary, PRIMARY_PRIORITY, "primary"), (placement.standby, STANDBY_PRIORITY, "standby")]
        rows += [{"set": set_id, "uri": sip_uri(region, nodes[name]), "flags": 0, "priority": priority,
                  "attrs": f"node={name};department={department};role={role}"}
                 for name, priority, role in chosen if name is not None]
    return rows


def _table_size(entries: int) -> int:
    """htable's ``size``: the table has 2^size slots, about one per entry (between 2^4 and 2^16)."""
    return min(16, max(4, math.ceil(math.log2(max(entries, 1)))))


def kamailio_config(ctx: RenderContext, node: Node) -> dict[str, object]:
    """The values of ``kamailio.cfg`` for ``node``: only its address and its peers differ between proxies."""
    others = [p.address for p in peers(ctx.spec.region, node)]
    return {
        "address": node.address,
        "peers": others,
        "peer_nets": ",".join(f"{address}/32" for address in others),
        **ctx.once(f"{COMPONENT}.shared", lambda: _shared_config(ctx.spec.region)),
    }


def _shared_config(region: Region) -> dict[str, object]:
    """The values of ``kamailio.cfg`` that every proxy shares."""
    tel = region.telephony
    assert tel.edge is not None  # the schema's rule: sip-proxy nodes come with telephony.edge
    people = len(tel.operators) + len(tel.supervisors)
    operator_nets = tel.operator_networks or [s.cidr for s in region.network.subnets]
    return {
        "virtual": tel.edge.virtual_address,
        "port": tel.sip_port,
        "metrics_port": METRICS_PORT,
        "realm": region.network.domain,
        "ctl_socket": CTL_SOCKET,
        "table_dir": TABLE_DIR,
        # db_text names a table by its file in the table directory.
        "tables": [{"name": "users", "file": USERS.removeprefix(f"{TABLE_DIR}/"), "size": _table_size(people)},
                   {"name": "departments", "file": DEPARTMENTS.removeprefix(f"{TABLE_DIR}/"),
                    "size": _table_size(len(tel.departments))},
                   {"name": "extensions", "file": EXTENSIONS.removeprefix(f"{TABLE_DIR}/"),
                    "size": _table_size(people)},
                   # A fixed size: the pool's size must not change kamailio.cfg (entries beyond it chain).
                   {"name": "pool", "file": POOL.removeprefix(f"{TABLE_DIR}/"), "size": POOL_TABLE_SIZE}],
        "dispatcher": DISPATCHER,
        "trunks": [{"name": t.name, "peers": ",".join(f"{p}/32" for p in t.peers), "dids": t.dids}
                   for t in tel.trunks],
        "operator_nets": ",".join(operator_nets),
        "pool_set": POOL_SET,
        "registered_path": REGISTERED_PATH,
        "contacts_path": CONTACTS_PATH,
        "trunk_rate": sum(t.max_channels for t in tel.trunks),
        "pike_unit_s": PIKE_UNIT_S,
        "pike_density": tel.edge.flood_per_source * PIKE_UNIT_S,
        "register_rate": max(MIN_REGISTER_RATE, math.ceil(people / REGISTER_BURST_S)),
        "ping_interval_s": PING_INTERVAL_S,
        "ping_ticks": PING_TIMEOUT_MS * TM_TICKS_PER_S // 1000,
        "probing_threshold": PROBING_THRESHOLD,
        "branch_timeout_ms": BRANCH_TIMEOUT_MS,
        "dialog_timeout_s": DIALOG_TIMEOUT_S,
        "expires_s": REGISTER_EXPIRES_S,
        "refusals": list(REFUSALS),
    }


def _file(path: str, trigger: Trigger = NO_TRIGGER, *, mode: str = "0644", group: str = "root",
          secret: bool = False, comment: str | None = "#", **data: object) -> FileSpec:

    return FileSpec(path, f"{COMPONENT}{path}.j2", COMPONENT, data, mode=mode, owner="root", group=group,
                    trigger=trigger, secret=secret, comment=comment)
