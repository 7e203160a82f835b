"""The components a host can carry. The base layer applies to every node; the others follow the node's roles.

A component is a function ``(RenderContext, Node) -> HostLayer``. Roles are optional: a region renders exactly
the components its nodes carry, and a component that meets another one renders that part only when the other
has a node (Asterisk's database modules need a PostgreSQL node, click-to-call and the screen pop a CRM node,
the exporters and node_exporter a monitoring node).
"""
