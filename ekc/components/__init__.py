"""The components a host can carry. The base layer applies to every node; the others follow the node's roles.

A component is a function ``(RenderContext, Node) -> HostLayer``; the component issues add theirs to
``ROLE_COMPONENTS`` and nothing else has to change.
"""

from __future__ import annotations

from ekc.components.base import base_layer
from ekc.render import Component
from schemas.region import Node, Role

ROLE_COMPONENTS: dict[Role, tuple[Component, ...]] = {}


def components_for(node: Node) -> list[Component]:
    """The base layer, then each role's components in the order the node lists its roles."""
    return [base_layer, *(c for role in node.roles for c in ROLE_COMPONENTS.get(role, ()))]
