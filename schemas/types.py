"""The spec's building blocks: the strict base model, names, identifiers, addresses and time zones."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal
from zoneinfo import available_timezones

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
)

API_VERSION = "ekc/v1"

Codec = Literal["alaw", "ulaw", "g722", "opus"]
Severity = Literal["critical", "warning"]
# etcd: a member of the consensus store that Patroni keeps the PostgreSQL leader in (two or more postgresql nodes).
# sip-proxy: the SIP edge (Kamailio and keepalived), which holds telephony.edge's virtual address.
Role = Literal["asterisk", "postgresql", "crm", "monitoring", "etcd", "sip-proxy"]
ROLES: tuple[Role, ...] = ("asterisk", "postgresql", "crm", "monitoring", "etcd", "sip-proxy")
# A node's place in its region's lifecycle: in service; drained (running, taking no new work, leaving its
# cluster); absent (not rendered; apply stops its services).
NodeState = Literal["active", "drain", "absent"]

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
