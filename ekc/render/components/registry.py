"""The components a host can carry. The base layer applies to every node; the others follow the node's roles.

A component is a function ``(RenderContext, Node) -> HostLayer``. Roles are optional: a region renders exactly
the components its nodes carry, and a component that meets another one renders that part only when the other
has a node (Asterisk's database modules need a PostgreSQL node, click-to-call and the screen pop a CRM node,
the exporters and node_exporter a monitoring node).
"""

from __future__ import annotations

from ekc.render.components.asterisk import asterisk_layer
from ekc.render.components.asterisk_db import asterisk_db_layer
from ekc.render.components.asterisk_edge import asterisk_edge_layer
from ekc.render.components.asterisk_journal import asterisk_journal_layer
from ekc.render.components.base import base_layer
from ekc.render.components.crm import crm_layer
from ekc.render.components.cti import cti_layer
from ekc.render.components.etcd import etcd_layer
from ekc.render.components.keepalived import keepalived_layer
from ekc.render.components.monitoring import monitoring_layer
from ekc.render.components.node_exporter import node_exporter_layer
from ekc.render.components.patroni import patroni_layer
from ekc.render.components.postgres_exporter import postgres_exporter_layer
from ekc.render.components.postgresql import postgresql_layer
from ekc.render.components.queue_exporter import queue_exporter_layer
from ekc.render.components.sip_proxy import sip_proxy_layer
from ekc.render.model import Component
from schemas.region import Node
from schemas.types import Role

# Every node: the base layer, and node_exporter when the region has a monitoring node.
NODE_COMPONENTS: tuple[Component, ...] = (base_layer, node_exporter_layer)

ROLE_COMPONENTS: dict[Role, tuple[Component, ...]] = {
    # Asterisk; its call records in PostgreSQL, click-to-call for the CRM, the AMI queue exporter.
    # With a Patroni cluster, the journal that replays the rows a failover would lose.
    "asterisk": (asterisk_layer, asterisk_db_layer, asterisk_journal_layer, asterisk_edge_layer, cti_layer,
                 queue_exporter_layer),
    # PostgreSQL; Patroni when the region has two or more database nodes; the metrics exporter.
    "postgresql": (postgresql_layer, patroni_layer, postgres_exporter_layer),
    "etcd": (etcd_layer,),
    "crm": (crm_layer,),
    "monitoring": (monitoring_layer,),
    # The SIP edge: Kamailio, and keepalived holding its virtual address.
    "sip-proxy": (sip_proxy_layer, keepalived_layer),
}


def components_for(node: Node) -> list[Component]:
    """The components of every node, then each role's components in the order the node lists its roles."""
    return [*NODE_COMPONENTS, *(c for role in node.roles for c in ROLE_COMPONENTS.get(role, ()))]
