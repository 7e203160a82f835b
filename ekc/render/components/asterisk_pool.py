"""Where each department of the region is served: its primary Asterisk node and its standby (render/pool).

A department's weight is its number of operators (at least 1, so that a department without operators yet still
counts); its pins are the spec's ``departments[].nodes``. The placement is computed once per render and shared
by every component that needs it (Asterisk's queues and endpoints, the SIP edge's dispatcher sets).

A build keeps its placement in ``placements.json`` beside the manifest, so that the next plan can say which
departments move (``ekc.render.pool.moves``) when a node is added, drained or removed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from ekc.render.components.sipedge import edge
from ekc.render.model import RenderContext
from ekc.render.pool import Placement, PoolDepartment, PoolNode, assign
from schemas.region import Region

PLACEMENTS_NAME = "placements.json"


def pool_departments(region: Region) -> list[PoolDepartment]:
    """The region's departments as the pool places them: weight by operators, pins from the spec."""
    operators: dict[str, int] = {}
    for operator in region.telephony.operators:
        for skill in operator.skills():
            operators[skill.department] = operators.get(skill.department, 0) + 1
    return [PoolDepartment(d.id, max(1, operators.get(d.id, 0)), tuple(d.nodes))
            for d in region.telephony.departments]


def placements(region: Region) -> dict[str, Placement]:
    """Each department's primary and standby node, by department id: only active nodes take departments, so a
    drained node's departments go to their standby, and an absent node's as well."""
    nodes = [PoolNode(n.name, n.state) for n in region.nodes_with("asterisk")]
    return assign(pool_departments(region), nodes)


def department_placements(ctx: RenderContext) -> dict[str, Placement]:
    """``placements`` of the region being rendered, computed once per render."""
    return ctx.once("asterisk_pool.placements", lambda: placements(ctx.spec.region))


def region_placements(ctx: RenderContext) -> dict[str, Placement]:
    """The placement a build records: that of the pool behind the SIP edge (none without an edge, where every
    Asterisk node serves every department)."""
    return department_placements(ctx) if edge(ctx.spec.region) is not None else {}


def dump_placements(placed: Mapping[str, Placement]) -> str:
    """``placements.json``: department id -> primary and standby, as stable JSON text."""
    document = {d: {"primary": p.primary, "standby": p.standby} for d, p in sorted(placed.items())}
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def load_placements(build_dir: Path) -> dict[str, Placement] | None:
    """The placement recorded in a build directory, or None when it has none (an older build, or no edge)."""
    path = build_dir / PLACEMENTS_NAME
    if not path.is_file():
        return None
    raw = json.loads(path.read_text(encoding="utf-8"))
    return {d: Placement(d, p["primary"], p["standby"]) for d, p in raw.items()}
