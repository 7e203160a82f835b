"""The region spec: one declarative file that describes a region's unified contact center.

Every model forbids unknown fields, so a typo is an error and never a silently ignored setting.
Rules that relate one part of the spec to another live in ``schemas/rules.py``; this module only
describes shapes, ranges and single-field formats.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    Field,
    field_validator,
)

from schemas.telephony import (
    Telephony,
)
from schemas.types import (
    CIDR,
    Ident,
    IPv4,
    Name,
    NodeState,
    Role,
    Severity,
    Strict,
    _timezone,
)


class RegionInfo(Strict):
    """Which region this is."""

    code: Annotated[str, Field(pattern=r"^[0-9]{2,3}$", description="the region's code, e.g. '54'")]
    name: Annotated[str, Field(min_length=1, max_length=200)]
    timezone: Annotated[str, AfterValidator(_timezone), Field(description="IANA time zone")]


class Subnet(Strict):
    """A server network of the contour."""

    name: Ident
    cidr: CIDR
    gateway: IPv4 | None = None


class Network(Strict):
    """The contour's network: where servers live and who administers them."""

    domain: Annotated[
        str,
        Field(pattern=r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$", description="DNS domain"),
    ]
    subnets: Annotated[list[Subnet], Field(min_length=1)]
    dns: list[IPv4] = Field(default_factory=list, description="the contour's DNS resolvers")
    ntp: Annotated[list[IPv4], Field(min_length=1, description="NTP servers inside the contour")]
    admin_networks: Annotated[
        list[CIDR], Field(min_length=1, description="networks allowed to reach SSH on every host")
    ]
    deploy_host: IPv4 = Field(description="the host that runs ekc and serves the bundle to the nodes")
    bundle_port: Annotated[int, Field(ge=1, le=65535)] = 8080


class Node(Strict):
    """One server and the components it runs."""

    name: Name
    address: IPv4
    roles: Annotated[list[Role], Field(min_length=1)]
    state: NodeState = Field(
        default="active",
        description="active: in service; drain: keeps running and finishes its calls, but gets no new calls and "
        "leaves the database cluster; absent: not rendered, apply stops its services (README, Node lifecycle)",
    )

    @field_validator("roles")
    @classmethod
    def _unique_roles(cls, roles: list[Role]) -> list[Role]:
        if len(set(roles)) != len(roles):
            raise ValueError("a role is listed twice")
        return roles


class Access(Strict):
    """Who may log in to the servers (keys only; passwords are never accepted)."""

    ssh_authorized_keys: list[
        Annotated[str, Field(pattern=r"^(ssh-ed25519|ecdsa-sha2-nistp(256|384|521)|ssh-rsa) [A-Za-z0-9+/=]+( .*)?$")]
    ] = Field(default_factory=list, description="administrators' public keys for root")


# --- data, CRM, monitoring, security --------------------------------------------------------------


class Backup(Strict):
    """Base backups and WAL archiving."""

    location: Annotated[
        str, Field(pattern=r"^/[A-Za-z0-9._/-]*$", description="absolute path on the database node")
    ] = "/var/backups/ekc"
    retention_days: Annotated[int, Field(ge=1, le=3650)] = 14
    schedule: Annotated[str, Field(min_length=1, description="a systemd OnCalendar expression")] = "*-*-* 02:30"


class Database(Strict):
    """PostgreSQL: call records, queue log and the CRM's data."""

    max_connections: Annotated[int, Field(ge=20, le=5000)] = 200
    backup: Backup = Field(default_factory=Backup)
    # Two or more postgresql nodes form one Patroni cluster; these two settings apply to it.
    synchronous: bool = Field(
        default=False,
        description="Patroni's synchronous mode: a commit waits for one replica, so a failover loses no "
        "committed row (commits wait while no replica is in sync)",
    )
    max_lag_mb: Annotated[int, Field(ge=1, le=102400)] = Field(
        default=16,
        description="a replica further behind than this is never promoted, and the lag alert fires over it",
    )


class Crm(Strict):
    """Creme CRM, the operator's single window."""

    hostname: Annotated[str, Field(pattern=r"^[a-z0-9.-]+$")] | None = Field(
        default=None, description="the CRM's DNS name; defaults to crm.<domain>"
    )
    admin_username: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_.-]{2,30}$")] = "admin"
    admin_email: Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")] = "admin@localhost"
    admin_name: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^\S+( \S+)*$")] = Field(
        default="Администратор ЕКЦ", description="the administrator's name as the CRM shows it (first word: "
        "first name, the rest: last name)")
    language: Literal["ru", "en", "fr"] = "ru"
    mail_from: Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")] | None = Field(
        default=None, description="the sender of the letters to citizens about their appeals (through "
        "monitoring.smtp's relay; no letters without one); defaults to appeals@<domain>")


class AlertReceiver(Strict):
    """Who gets alerts by e-mail."""

    name: Ident
    email: Annotated[list[Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")]], Field(min_length=1)]
    severities: list[Severity] = Field(default_factory=lambda: list[Severity](["critical", "warning"]))


class Smtp(Strict):
    """The ministry's internal mail relay."""

    relay: IPv4
    port: Annotated[int, Field(ge=1, le=65535)] = 25
    sender: Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")]
    tls: bool = False


class Monitoring(Strict):
    """Prometheus and Alertmanager: metrics, service-level alerts, wallboard."""

    retention_days: Annotated[int, Field(ge=1, le=3650)] = 30
    scrape_interval_s: Annotated[int, Field(ge=5, le=300)] = 15
    smtp: Smtp | None = None
    alert_receivers: list[AlertReceiver] = Field(default_factory=list)


class FlowRule(Strict):
    """Who may reach whom: sources (node names, role names or networks) to targets on ports."""

    description: Annotated[str, Field(min_length=1, max_length=200)]
    sources: Annotated[list[str], Field(min_length=1, description="node names, 'role:<role>' or networks")]
    targets: Annotated[list[str], Field(min_length=1, description="node names or 'role:<role>'")]
    ports: Annotated[list[Annotated[int, Field(ge=1, le=65535)]], Field(min_length=1)]
    proto: Literal["tcp", "udp"] = "tcp"


class Security(Strict):
    """The flow matrix: extra allowed connections besides those the components need."""

    flows: list[FlowRule] = Field(default_factory=list)


class Region(Strict):
    """A region's unified contact center (ЕКЦ): the whole spec."""

    api_version: Literal["ekc/v1"] = Field(alias="apiVersion")
    region: RegionInfo
    platform: Literal["debian-forky"] = "debian-forky"
    network: Network
    nodes: Annotated[list[Node], Field(min_length=1)]
    access: Access = Field(default_factory=Access)
    telephony: Telephony
    database: Database = Field(default_factory=Database)
    crm: Crm = Field(default_factory=Crm)
    monitoring: Monitoring = Field(default_factory=Monitoring)
    security: Security = Field(default_factory=Security)

    def nodes_with(self, role: Role) -> list[Node]:
        """The nodes that carry ``role``, in spec order."""
        return [node for node in self.nodes if role in node.roles]

    def active_nodes_with(self, role: Role) -> list[Node]:
        """The nodes that carry ``role`` and are in service (not drained, not absent), in spec order."""
        return [node for node in self.nodes_with(role) if node.state == "active"]

    def without_absent(self) -> Region:
        """The region as it is rendered: the nodes marked ``absent`` left out (they get nothing any more)."""
        if all(node.state != "absent" for node in self.nodes):
            return self
        return self.model_copy(update={"nodes": [node for node in self.nodes if node.state != "absent"]})
