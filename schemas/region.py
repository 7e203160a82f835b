"""The region spec: one declarative file that describes a region's unified contact center.

Every model forbids unknown fields, so a typo is an error and never a silently ignored setting.
Rules that relate one part of the spec to another live in ``schemas/rules.py``; this module only
describes shapes, ranges and single-field formats.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import date, time
from typing import Annotated, Any, Literal
from zoneinfo import available_timezones

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
)

API_VERSION = "ekc/v1"

Codec = Literal["alaw", "ulaw", "g722", "opus"]
Severity = Literal["critical", "warning"]
Role = Literal["asterisk", "postgresql", "crm", "monitoring"]
ROLES: tuple[Role, ...] = ("asterisk", "postgresql", "crm", "monitoring")

NAME_PATTERN = r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$"
ID_PATTERN = r"^[a-z][a-z0-9_]{0,30}$"
PROMPT_PATTERN = r"^[a-z0-9][a-z0-9_/-]*$"

Name = Annotated[str, Field(pattern=NAME_PATTERN, description="lower-case host-style name")]
Ident = Annotated[str, Field(pattern=ID_PATTERN, description="lower-case identifier (a-z, 0-9, _)")]
Prompt = Annotated[
    str,
    Field(pattern=PROMPT_PATTERN, description="a sound file name without extension, e.g. ivr/welcome"),
]
Extension = Annotated[str, Field(pattern=r"^[0-9]{2,6}$", description="2-6 digit internal number")]
Dtmf = Annotated[str, Field(pattern=r"^[0-9*#]$", description="one key: 0-9, * or #")]
ScheduleName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,40}$", description="a schedule name")]
Percent = Annotated[int, Field(ge=1, le=100, description="a percentage, 1-100")]


class Strict(BaseModel):
    """Base of every spec model: unknown fields are errors, values are not coerced silently."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _address(value: str) -> str:
    ipaddress.IPv4Address(value)
    return value


def _network(value: str) -> str:
    ipaddress.IPv4Network(value, strict=True)
    return value


def _address_or_network(value: str) -> str:
    ipaddress.IPv4Network(value, strict=True)
    return value


IPv4 = Annotated[str, AfterValidator(_address), Field(description="an IPv4 address, e.g. 10.54.0.11")]
CIDR = Annotated[str, AfterValidator(_network), Field(description="an IPv4 network, e.g. 10.54.0.0/24")]
Source = Annotated[
    str,
    AfterValidator(_address_or_network),
    Field(description="an IPv4 address or network, e.g. 10.54.0.5 or 10.54.1.0/24"),
]


# --- region and network ---------------------------------------------------------------------------


def _timezone(value: str) -> str:
    if value not in _zones():
        raise ValueError(f"unknown time zone '{value}' (expected an IANA name such as Asia/Novosibirsk)")
    return value


_ZONES: frozenset[str] = frozenset()


def _zones() -> frozenset[str]:
    global _ZONES  # noqa: PLW0603 - computed once, the zone database is large
    if not _ZONES:
        _ZONES = frozenset(available_timezones())
    return _ZONES


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


# --- telephony ------------------------------------------------------------------------------------


class Trunk(Strict):
    """A carrier trunk, identified by its source addresses (no registration)."""

    name: Ident
    peers: Annotated[list[IPv4], Field(min_length=1, description="carrier's SIP signalling addresses")]
    dids: Annotated[
        list[Annotated[str, Field(pattern=r"^\+?[0-9]{2,15}$")]],
        Field(min_length=1, description="numbers the carrier delivers to this region"),
    ]
    port: Annotated[int, Field(ge=1, le=65535)] = 5060
    codecs: list[Codec] = Field(default_factory=lambda: list[Codec](["alaw", "ulaw"]))
    max_channels: Annotated[int, Field(ge=1, le=10000)] = 60


class ServiceLevel(Strict):
    """A service-level target: ``target_pct`` percent of calls answered within ``within_s`` seconds."""

    within_s: Annotated[int, Field(ge=1, le=600)] = 20
    target_pct: Percent = 80


class Callback(Strict):
    """The caller may leave a number instead of waiting; it is dialled when an operator is free."""

    enabled: bool = True
    key: Dtmf = "1"
    offer_after_s: Annotated[int, Field(ge=10, le=3600)] = 60


class Queue(Strict):
    """A department's call queue."""

    number: Extension
    strategy: Literal["ringall", "leastrecent", "fewestcalls", "random", "rrmemory", "linear", "wrandom"] = (
        "rrmemory"
    )
    service_level: ServiceLevel = Field(default_factory=ServiceLevel)
    wrapup_s: Annotated[int, Field(ge=0, le=600)] = 10
    max_wait_s: Annotated[int, Field(ge=30, le=7200)] = 600
    announce_position: bool = True
    announce_holdtime: bool = True
    periodic_announce_s: Annotated[int, Field(ge=0, le=600)] = 60
    ring_s: Annotated[int, Field(ge=5, le=120)] = 20
    callback: Callback = Field(default_factory=Callback)


class AfterHoursVoicemail(Strict):
    """After hours: the caller leaves a message in a voicemail box."""

    voicemail: Ident


class AfterHoursMessage(Strict):
    """After hours: the caller hears a message and the call ends."""

    message: Prompt


AfterHours = AfterHoursVoicemail | AfterHoursMessage


class Incident(Strict):
    """An announcement played before the queue while an incident is switched on (no reload needed)."""

    default_message: Prompt = "ekc/incident"


class Department(Strict):
    """A department (ведомство) and its queue."""

    id: Ident
    name: Annotated[str, Field(min_length=1, max_length=200)]
    queue: Queue
    hours: ScheduleName = Field(default="always", description="a schedule name, or 'always'")
    after_hours: AfterHours = Field(default_factory=lambda: AfterHoursMessage(message="ekc/closed"))
    incident: Incident = Field(default_factory=Incident)


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAYS_RE = re.compile(r"^(mon|tue|wed|thu|fri|sat|sun)(-(mon|tue|wed|thu|fri|sat|sun))?$")
_RANGE_RE = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])-([01][0-9]|2[0-4]):([0-5][0-9])$")


def _schedule(value: dict[str, str]) -> dict[str, str]:
    """Check ``{"mon-fri": "08:00-20:00", "sat": "10:00-16:00"}``: known days, well-formed ranges."""
    if not value:
        raise ValueError("a schedule needs at least one day range, e.g. mon-fri: '08:00-20:00'")
    for days, hours in value.items():
        if not _DAYS_RE.match(days):
            raise ValueError(f"'{days}' is not a day or day range (expected e.g. mon, mon-fri)")
        match = _RANGE_RE.match(hours)
        if not match:
            raise ValueError(f"'{hours}' for {days} is not a time range (expected HH:MM-HH:MM)")
        start = time(int(match[1]), int(match[2]))
        end_h, end_m = int(match[3]), int(match[4])
        if end_h == 24 and end_m != 0:
            raise ValueError(f"'{hours}' for {days}: 24:MM is only valid as 24:00")
        if (end_h, end_m) <= (start.hour, start.minute):
            raise ValueError(f"'{hours}' for {days}: the range ends before it starts")
    return value


Schedule = Annotated[dict[str, str], AfterValidator(_schedule)]


class IvrDepartment(Strict):
    """Send the caller to a department's queue."""

    department: Ident


class IvrMenu(Strict):
    """Go to a sub-menu."""

    menu: Ident


class IvrVoicemail(Strict):
    """Let the caller leave a message."""

    voicemail: Ident


class IvrCallback(Strict):
    """Ask for a callback from a department."""

    callback: Ident


class IvrMessage(Strict):
    """Play a message, then return to the menu."""

    message: Prompt


class IvrRepeat(Strict):
    """Repeat the current menu."""

    repeat: Literal[True]


def _ivr_kind(value: Any) -> str | None:
    """Discriminate an IVR target by the one key it carries (the sketch's compact syntax)."""
    if isinstance(value, dict):
        keys = set(value) & {"department", "menu", "voicemail", "callback", "message", "repeat"}
        return next(iter(keys)) if len(keys) == 1 else None
    if isinstance(value, BaseModel):
        return next(k for k in ("department", "menu", "voicemail", "callback", "message", "repeat")
                    if k in type(value).model_fields)
    return None


IvrTarget = Annotated[
    Annotated[IvrDepartment, Tag("department")]
    | Annotated[IvrMenu, Tag("menu")]
    | Annotated[IvrVoicemail, Tag("voicemail")]
    | Annotated[IvrCallback, Tag("callback")]
    | Annotated[IvrMessage, Tag("message")]
    | Annotated[IvrRepeat, Tag("repeat")],
    Discriminator(
        _ivr_kind,
        custom_error_type="ivr_target",
        custom_error_message=(
            "expected exactly one of: department, menu, voicemail, callback, message, repeat"
        ),
    ),
]


class Menu(Strict):
    """A menu: a prompt and what each key does."""

    prompt: Prompt
    options: Annotated[dict[Dtmf, IvrTarget], Field(min_length=1)]
    timeout_s: Annotated[int, Field(ge=1, le=60)] = 5
    retries: Annotated[int, Field(ge=0, le=5)] = 2
    on_timeout: IvrTarget | None = Field(default=None, description="where to go after the last retry")


class Ivr(Menu):
    """The main menu every call on a trunk DID reaches, and its sub-menus."""

    prompt: Prompt = "ekc/welcome"
    language: Literal["ru", "en"] = "ru"
    menus: dict[Ident, Menu] = Field(default_factory=dict)


class Skill(Strict):
    """An operator's membership in a department, with a penalty (higher = asked later)."""

    department: Ident
    penalty: Annotated[int, Field(ge=0, le=10)] = 0


class Operator(Strict):
    """An operator (agent) with a SIP phone."""

    extension: Extension
    name: Annotated[str, Field(min_length=1, max_length=200)]
    departments: Annotated[
        list[Ident | Skill],
        Field(min_length=1, description="department ids, or {department, penalty} for a lower priority"),
    ]

    def skills(self) -> list[Skill]:
        """Every department of this operator with its penalty (0 when given as a bare id)."""
        return [Skill(department=d) if isinstance(d, str) else d for d in self.departments]


class Supervisor(Strict):
    """A supervisor who may listen, whisper and barge into the calls of their departments."""

    extension: Extension
    name: Annotated[str, Field(min_length=1, max_length=200)]
    departments: Annotated[list[Ident], Field(min_length=1)]


class FeatureCodes(Strict):
    """Codes dialled from a phone. They must not collide with extensions or queue numbers."""

    listen: Annotated[str, Field(pattern=r"^\*[0-9]{1,3}$")] = "*11"
    whisper: Annotated[str, Field(pattern=r"^\*[0-9]{1,3}$")] = "*12"
    barge: Annotated[str, Field(pattern=r"^\*[0-9]{1,3}$")] = "*13"
    voicemail: Annotated[str, Field(pattern=r"^\*[0-9]{1,3}$")] = "*97"
    pause: Annotated[str, Field(pattern=r"^\*[0-9]{1,3}$")] = "*21"
    unpause: Annotated[str, Field(pattern=r"^\*[0-9]{1,3}$")] = "*22"


class VoicemailBox(Strict):
    """A voicemail box; messages may be e-mailed through the contour's relay."""

    id: Ident
    name: Annotated[str, Field(min_length=1, max_length=200)]
    email: list[Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")]] = Field(default_factory=list)


class Recording(Strict):
    """Call recording, announced to the caller, deleted after the retention period."""

    enabled: bool = True
    retention_days: Annotated[int, Field(ge=1, le=3650)] = 90
    announce: Prompt | None = "ekc/recorded"
    format: Literal["wav", "wav49", "gsm"] = "wav"


class Rating(Strict):
    """After the operator hangs up, the caller rates the call 1-5."""

    enabled: bool = True
    prompt: Prompt = "ekc/rate-call"
    timeout_s: Annotated[int, Field(ge=1, le=30)] = 6


class ManagerInterface(Strict):
    """AMI or ARI: loopback only unless TLS is on."""

    enabled: bool = True
    bind: IPv4 = "127.0.0.1"
    tls: bool = False


class SipTls(Strict):
    """SIP over TLS for operators' phones (certificates from the region's CA)."""

    enabled: bool = False
    port: Annotated[int, Field(ge=1, le=65535)] = 5061


class Telephony(Strict):
    """Everything Asterisk does: trunks, departments and their queues, IVR, operators."""

    trunks: Annotated[list[Trunk], Field(min_length=1)]
    departments: Annotated[list[Department], Field(min_length=1)]
    schedules: dict[ScheduleName, Schedule] = Field(default_factory=dict)
    holidays: list[date] = Field(default_factory=list, description="dates (YYYY-MM-DD) the region rests")
    ivr: Ivr
    operators: Annotated[list[Operator], Field(min_length=1)]
    supervisors: list[Supervisor] = Field(default_factory=list)
    feature_codes: FeatureCodes = Field(default_factory=FeatureCodes)
    voicemail: list[VoicemailBox] = Field(default_factory=list)
    recording: Recording = Field(default_factory=Recording)
    rating: Rating = Field(default_factory=Rating)
    ami: ManagerInterface = Field(default_factory=ManagerInterface)
    ari: ManagerInterface = Field(default_factory=lambda: ManagerInterface(enabled=False))
    sip_tls: SipTls = Field(default_factory=SipTls)
    operator_networks: list[CIDR] = Field(
        default_factory=list, description="networks operators' phones register from (besides server subnets)"
    )
    sip_port: Annotated[int, Field(ge=1, le=65535)] = 5060
    prompts: dict[Prompt, Annotated[str, Field(min_length=1, max_length=2000)]] = Field(
        default_factory=dict,
        description="Russian texts of ekc's own prompts (ekc/...), synthesized on the node; adds or overrides",
    )
    rtp_ports: Annotated[tuple[int, int], Field(description="RTP port range [first, last]")] = (10000, 10999)

    @field_validator("rtp_ports")
    @classmethod
    def _rtp_range(cls, value: tuple[int, int]) -> tuple[int, int]:
        first, last = value
        if not 1024 <= first < last <= 65535:
            raise ValueError("expected [first, last] with 1024 <= first < last <= 65535")
        return value


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


class Crm(Strict):
    """Creme CRM, the operator's single window."""

    hostname: Annotated[str, Field(pattern=r"^[a-z0-9.-]+$")] | None = Field(
        default=None, description="the CRM's DNS name; defaults to crm.<domain>"
    )
    admin_username: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_.-]{2,30}$")] = "admin"
    admin_email: Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")] = "admin@localhost"
    language: Literal["ru", "en", "fr"] = "ru"


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
