"""Asterisk behind the SIP edge: with sip-proxy nodes, each asterisk node serves its own departments only.

Without an edge (one Asterisk node, trunks and phones talking to it directly) every node renders the whole region,
as before. With one, the pool (``asterisk_pool``) gives every department a primary and a standby node, and a node
renders the queues, members and department dialplan of the departments it is primary or standby of; the phones
register at the proxies, so no node has an endpoint per phone: one endpoint ``edge`` stands for the proxies.

The contract with Kamailio (``sip_proxy``), both directions through the virtual address:

- Kamailio to Asterisk, header ``X-EKC-Route`` (set by the proxy, never taken from outside):
  ``trunk;name=<trunk>`` a call from a trunk for one of its DIDs (any node: every node runs the IVR);
  ``department;id=<id>`` a call the IVR of another node (or this one) chose for a department this node serves
  (R-URI user ``dept-<id>``): it goes straight to the department's queue;
  ``operator;ext=<extension>`` a call from a phone the proxy authenticated: it runs in that phone's context.
- Asterisk to Kamailio: ``PJSIP/dept-<id>@edge`` hands a call to the node that serves department ``<id>`` (its
  primary, or its standby when the primary does not answer the proxy's OPTIONS); ``PJSIP/<extension>@edge``
  rings a phone wherever it registered (480 when it is not registered, 486 when it is in a call through any node:
  the proxies share their dialogs, so a phone in two departments on two nodes never rings twice).

A node's IVR sends a department it is not the primary of to the edge, even when it is the standby: while the
primary answers, the department has one queue, one service level and one set of operators' wrap-up times.
Queue members are ``PJSIP/<extension>@edge``, with a device state of their own (``Custom:ekc-op-<extension>``):
the device state of the endpoint ``edge`` would be "in use" whenever any call runs through the proxies. The
service ``ekc-member-states`` keeps it on the phone's registration: every few seconds it reads the proxies'
location (``sip_proxy``'s HTTP route for the Asterisk nodes) and marks a member not in use while its phone is
registered, unavailable while it is not. Until its first pass has set them (after Asterisk started) the global
``EKC_MEMBERS_READY`` is unset and the node queues no department's call: it refuses it with 503 before answering,
and the edge tries the department's standby, so a new or restarted node takes no call its members' stale states
would leave unanswered.
"""

from __future__ import annotations

from dataclasses import dataclass

from ekc.render.components.asterisk_pool import department_placements
from ekc.render.components.base import DAEMON_RELOAD
from ekc.render.components.sipedge import METRICS_PORT, REGISTERED_PATH, edge, proxies
from ekc.render.files import header
from ekc.render.manifest import ServiceState, Trigger
from ekc.render.model import FileSpec, HostLayer, RenderContext
from schemas.region import Node, Region

ENDPOINT = "edge"
ROUTE_HEADER = "X-EKC-Route"
FORWARD_PREFIX = "dept-"  # the R-URI user of a call handed to the node that serves a department
EDGE_CONTEXT = "ekc-from-edge"
TO_EDGE_CONTEXT = "ekc-to-edge"
COMPONENT = "asterisk_edge"
STATES_UNIT = "ekc-member-states"
STATES_SCRIPT = "/usr/local/lib/ekc/member-states"
STATES_INTERVAL_S = 2  # how often the members' states follow the proxies' location
STATES_RESYNC_S = 60  # every state set again, also those that did not change
READY_VAR = "EKC_MEMBERS_READY"  # a global ekc-member-states sets once the members' states follow the edge
STATES_RESTART = Trigger("restart", STATES_UNIT, f"systemctl restart {STATES_UNIT}",
                         "the queue members' states are read from the edge again; no call is dropped")


@dataclass(frozen=True, slots=True)
class EdgeView:
    """What Asterisk's files print of the edge: the virtual address, the proxies' own addresses."""

    address: str
    port: int
    proxies: tuple[str, ...]
    endpoint: str = ENDPOINT
    header: str = ROUTE_HEADER
    context: str = EDGE_CONTEXT
    to_edge: str = TO_EDGE_CONTEXT
    forward_prefix: str = FORWARD_PREFIX
    ready: str = READY_VAR


def edge_view(region: Region) -> EdgeView | None:
    """The edge as Asterisk sees it, or None when trunks and phones talk to Asterisk directly."""
    settings = edge(region)
    if settings is None:
        return None
    return EdgeView(settings.virtual_address, region.telephony.sip_port, tuple(n.address for n in proxies(region)))


def served(ctx: RenderContext, node: Node) -> dict[str, str]:
    """The departments ``node`` serves: department id -> ``primary`` or ``standby`` (every department, as
    primary, when the region has no edge)."""
    region = ctx.spec.region
    if edge(region) is None:
        return {d.id: "primary" for d in region.telephony.departments}
    return ctx.once("asterisk_edge.duties", lambda: _duties(ctx)).get(node.name, {})


def _duties(ctx: RenderContext) -> dict[str, dict[str, str]]:
    """Every node's duties, from one pass over the placements (in department id order)."""
    duties: dict[str, dict[str, str]] = {}
    for department, placement in department_placements(ctx).items():
        duties.setdefault(placement.primary, {})[department] = "primary"
        if placement.standby is not None:
            duties.setdefault(placement.standby, {})[department] = "standby"
    return duties


def member_interface(extension: str, view: EdgeView | None) -> tuple[str, str]:
    """A phone as a queue member: (interface, state interface)."""
    if view is None:
        return f"PJSIP/{extension}", f"PJSIP/{extension}"
    return f"PJSIP/{extension}@{view.endpoint}", f"Custom:ekc-op-{extension}"


def asterisk_edge_layer(ctx: RenderContext, node: Node) -> HostLayer:
    """Behind the SIP edge: the service that keeps the node's queue members' states on their phones' registration."""
    region = ctx.spec.region
    view = edge_view(region)
    if view is None:
        return HostLayer()
    duties = served(ctx, node)
    extensions = sorted({op.extension for op in region.telephony.operators
                         if any(skill.department in duties for skill in op.skills())})
    files = [
        FileSpec(STATES_SCRIPT, f"{COMPONENT}{STATES_SCRIPT}.j2", COMPONENT,
                 {"header": header(ctx.spec, "#"), "extensions": extensions, "proxies": list(view.proxies),
                  "port": METRICS_PORT, "path": REGISTERED_PATH, "interval_s": STATES_INTERVAL_S,
                  "resync_s": STATES_RESYNC_S,
                  "ready": READY_VAR}, mode="0755", trigger=STATES_RESTART, comment=None),
        FileSpec(f"/etc/systemd/system/{STATES_UNIT}.service",
                 f"{COMPONENT}/etc/systemd/system/{STATES_UNIT}.service.j2", COMPONENT, {"script": STATES_SCRIPT},
                 trigger=DAEMON_RELOAD),
    ]
    return HostLayer(services=[ServiceState(STATES_UNIT)], files=files)
