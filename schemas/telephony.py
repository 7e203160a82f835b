"""The telephony part of the spec: trunks, departments and their queues, schedules, the IVR, operators."""

from __future__ import annotations

import re
from datetime import date, time
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    Discriminator,
    Field,
    Tag,
    field_validator,
)

from schemas.types import (
    CIDR,
    Codec,
    Dtmf,
    Extension,
    Ident,
    IPv4,
    Name,
    Percent,
    Prompt,
    ScheduleName,
    Strict,
)


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


class Incident(Strict):
    """An announcement played before the queue while an incident is switched on (no reload needed)."""

    default_message: Prompt = "ekc/incident"


AfterHours = AfterHoursVoicemail | AfterHoursMessage


class Topic(Strict):
    """A topic (тематика) of citizens' appeals to a department: what the operator picks on the call card.

    The code is the topic's identity in the CRM: renaming a topic keeps the cards that carry it; a topic taken
    out of the spec is retired there (kept on its cards, no longer offered).
    """

    code: Ident
    name: Annotated[str, Field(min_length=1, max_length=200)]


class Deadlines(Strict):
    """The legal deadlines of an appeal's task to the department (59-FZ: registered within 3 days, answered
    within 30). Registration counts working days of the department's calendar (its schedule's days, mon-fri for
    'always', minus the region's holidays); the answer counts calendar days, moved to the next working day when
    it falls on a day off."""

    register_working_days: Annotated[int, Field(ge=1, le=30)] = 3
    answer_days: Annotated[int, Field(ge=1, le=365)] = 30
    near_due_days: Annotated[int, Field(ge=0, le=30)] = Field(
        default=3, description="a task this many days before its answer deadline is listed (and alerted) as near due"
    )


class Department(Strict):
    """A department (ведомство) and its queue."""

    id: Ident
    name: Annotated[str, Field(min_length=1, max_length=200)]
    queue: Queue
    hours: ScheduleName = Field(default="always", description="a schedule name, or 'always'")
    after_hours: AfterHours = Field(default_factory=lambda: AfterHoursMessage(message="ekc/closed"))
    incident: Incident = Field(default_factory=Incident)
    nodes: list[Name] = Field(
        default_factory=list,
        description="asterisk nodes this department may be placed on (its primary and standby); empty: any",
    )
    topics: list[Topic] = Field(
        default_factory=list, description="the topics an operator picks on this department's call cards"
    )
    deadlines: Deadlines = Field(default_factory=Deadlines)

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


class Edge(Strict):
    """The SIP edge: Kamailio on the sip-proxy nodes, behind one virtual address (keepalived, VRRP).

    The address sits on one proxy at a time. Trunks, operators' phones and Asterisk send SIP there, not to each
    other; media still flows directly between them and Asterisk.
    """

    virtual_address: IPv4 = Field(
        description="the address trunks and phones use (phones register there); inside a declared subnet, "
        "no node's or the deploy host's address",
    )
    vrrp_router_id: Annotated[int, Field(ge=1, le=255)] = Field(
        default=51,
        description="VRRP's virtual router id (1-255) of the proxies' address; unique among the VRRP routers "
        "of the network the proxies are on",
    )
    flood_per_source: Annotated[int, Field(ge=2, le=10000)] = Field(
        default=8,
        description="SIP requests per second one address may send to the edge before the proxies drop it as a "
        "flood (pike); trunks, Asterisk nodes and the proxies are exempt. Raise it where many phones share one "
        "address (behind NAT)",
    )


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
    edge: Edge | None = Field(
        default=None,
        description="the SIP edge (nodes with the role sip-proxy) and its virtual address; none: trunks and "
        "phones talk to Asterisk directly",
    )

    @field_validator("rtp_ports")
    @classmethod
    def _rtp_range(cls, value: tuple[int, int]) -> tuple[int, int]:
        first, last = value
        if not 1024 <= first < last <= 65535:
            raise ValueError("expected [first, last] with 1024 <= first < last <= 65535")
        return value
