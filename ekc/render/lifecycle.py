"""What the nodes' lifecycle states (``nodes[].state``) mean for a plan, in words, and what a removed node loses.

A drained node stays rendered: the render itself says what changes on it and on the hosts that talk to it. A node
marked absent is rendered nowhere, so the render alone cannot say what apply must stop there: :func:`departures`
lists its roles' services (from its components, as if it were still rendered; the base layer's SSH, firewall,
time and audit keep running) and the data it holds, which the region
loses with it. :func:`lifecycle_lines` turns both, and the departments that move between the previous placement
and the new one, into the lines ``deploy.py plan`` prints above the per-host changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ekc.render.components.base import base_layer
from ekc.render.components.registry import components_for
from ekc.render.flows import flow_matrix
from ekc.render.model import RenderContext
from ekc.render.pool import Placement, describe, moves
from ekc.spec.load import LoadedSpec
from ekc.spec.secrets import SecretsView
from schemas.region import Node, Region

# What a node of each role holds that nothing else in the region has a copy of, once the node is gone. A
# database member's data is also on the other members, but a lone server's is not, and a removed member's
# disk still holds every record: removing it is never undone by the next apply.
HELD_DATA = {"postgresql": "database files", "asterisk": "call recordings and voicemail"}


@dataclass(frozen=True)
class Departure:
    """A node marked absent: the units apply stops and disables there, and the data it holds."""

    name: str
    address: str
    roles: tuple[str, ...]
    services: tuple[str, ...]
    data: tuple[str, ...]


def departures(spec: LoadedSpec, secrets: SecretsView) -> tuple[Departure, ...]:
    """Every node marked absent, with the services its components would run (none of its files is rendered)."""
    region = spec.region
    leaving = [node for node in region.nodes if node.state == "absent"]
    if not leaving:
        return ()
    ctx = RenderContext(spec=spec, secrets=secrets, flows=flow_matrix(region))
    return tuple(_departure(ctx, node) for node in leaving)


def _departure(ctx: RenderContext, node: Node) -> Departure:
    """What apply stops on a node marked absent: the services of its roles (and node_exporter: the region no
    longer watches it). The base layer's keep running (SSH, the firewall, time, audit): the server stays
    reachable for its administrators and closed to everyone else until it is wiped or given a new role."""
    kept = {s.name for s in base_layer(ctx, node).services}
    services = sorted({s.name for component in components_for(node) for s in component(ctx, node).services} - kept)
    data = tuple(HELD_DATA[role] for role in node.roles if role in HELD_DATA)
    return Departure(node.name, node.address, tuple(node.roles), tuple(services), data)


def data_loss_refusal(departing: Sequence[Departure]) -> str | None:
    """Why apply refuses without ``--allow-data-loss``: the absent nodes that hold data; None when none does."""
    holders = [d for d in departing if d.data]
    if not holders:
        return None
    names = "; ".join(f"{d.name} ({', '.join(d.data)})" for d in holders)
    return (f"these nodes are marked absent and hold data that leaves the region with them: {names}. apply would "
            "stop their services; nothing was changed on any host. Pass --allow-data-loss to remove them, or set "
            "them to drain (or back to active) in the spec")


def lifecycle_lines(region: Region, before: Mapping[str, Placement] | None, after: Mapping[str, Placement],
                    departing: Sequence[Departure], calls: Mapping[str, int | None] | None = None) -> tuple[str, ...]:
    """The plan's lines about nodes entering or leaving service: moves, drained nodes, removed nodes.

    ``before`` is the placement of the previous build (None when it recorded none); ``calls`` the calls in
    progress on the drained or removed Asterisk nodes, as the live plan read them (None: not readable).
    """
    calls = calls or {}
    lines = _move_lines(before, after) + _left_out_lines(region, before)
    for node in region.nodes:
        if node.state == "drain":
            lines += _drain_lines(region, node, calls)
    for departure in departing:
        lines += _departure_lines(departure, calls)
    return tuple(lines)


def _move_lines(before: Mapping[str, Placement] | None, after: Mapping[str, Placement]) -> list[str]:
    if not after and not before:
        return []
    if before is None:
        return ["departments: the previous build recorded no placement (render once to compare the next plan)"]
    changes = describe(moves(before, after))
    return [f"departments that move ({len(changes)}):", *(f"  {line}" for line in changes)] if changes else []


def _left_out_lines(region: Region, before: Mapping[str, Placement] | None) -> list[str]:
    """The Asterisk nodes the previous build placed departments on that the spec no longer has."""
    named = {node.name for node in region.nodes}
    placed = {name for p in (before or {}).values() for name in (p.primary, p.standby) if name is not None}
    return [f"{name} is no longer in the spec: ekc leaves it alone, and its services keep running with their last "
            f"configuration; its departments move (above). A node leaves service by state: drain, then state: "
            f"absent, each applied, before it is taken out of the spec" for name in sorted(placed - named)]


def _calls(name: str, calls: Mapping[str, int | None], fate: str) -> str:
    """The calls in progress on a node, as a tail for its line (empty when they were not asked for)."""
    if name not in calls:
        return ""
    count = calls[name]
    return "; calls in progress could not be read" if count is None else f"; {count} call(s) in progress {fate}"


def _drain_lines(region: Region, node: Node, calls: Mapping[str, int | None]) -> list[str]:
    lines = []
    if "asterisk" in node.roles:
        lines.append(f"{node.name} drains: Asterisk keeps running and its calls end normally, Kamailio sends it no "
                     f"new call (admin-disabled in the dispatcher); it serves no department"
                     f"{_calls(node.name, calls, 'finish there')}")
    if "postgresql" in node.roles:
        lines.append(f"{node.name} leaves the database cluster: if it leads, apply first switches the leader over "
                     f"to a healthy replica (patronictl switchover), then stops and disables Patroni there; clients "
                     f"no longer list it")
    if "etcd" in node.roles:
        members = len(region.nodes_with("etcd"))
        lines.append(f"{node.name} stays an etcd member: etcd keeps running there ({members} members, quorum "
                     f"{members // 2 + 1}, unchanged)")
    return lines


def _departure_lines(departure: Departure, calls: Mapping[str, int | None]) -> list[str]:
    held = f"; it holds {', '.join(departure.data)} (apply needs --allow-data-loss)" if departure.data else ""
    return [f"{departure.name} is absent: apply stops and disables {', '.join(departure.services)}{held}"
            f"{_calls(departure.name, calls, 'are dropped')}"]
