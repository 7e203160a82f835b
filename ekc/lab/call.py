"""A real test call through a region's lab: the carrier calls a DID, an operator's phone answers.

The deploy host plays both ends with SIPp (``ekc.lab.sipp``) from the addresses the lab gives it
(``ekc.lab.net``): the carrier from a trunk peer's address, the operator's phone from the operators'
network, registered with the operator's own SIP password from the vault. The call goes through the IVR
(a DTMF digit), the department's queue, the operator (who hangs up after a few seconds) and the rating (the
caller presses a digit). What the node recorded is then read back: the call's queue_log lines and its CDR
lines, found by the caller's number (unique per call) and the caller channel's unique id.

``deploy.py lab call`` and the lab's call tests use the same pieces.
"""

from __future__ import annotations

import contextlib
import csv
import io
import ipaddress
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from ekc.lab.net import CallNetwork
from ekc.lab.sipp import (
    PCAP_DIR,
    SippResult,
    SippRun,
    SippServer,
    authentication,
    dtmf_press,
    press_steps,
    run_sipp,
)
from ekc.render.components.asterisk_dialplan import normalise_number
from ekc.render.components.asterisk_pool import placements
from schemas.region import Region
from schemas.telephony import Department, IvrDepartment

QUEUE_LOG = "/var/log/asterisk/queue_log"
CDR_CSV = "/var/log/asterisk/cdr-csv/Master.csv"
CDR_COLUMNS = ("accountcode", "src", "dst", "dcontext", "clid", "channel", "dstchannel", "lastapp", "lastdata",
               "start", "answer", "end", "duration", "billsec", "disposition", "amaflags", "uniqueid", "userfield")
CARRIER_PORT = 5062  # the carrier's calling side; the trunk peer's own SIP port is left to a detector
PHONE_PORT = 5070  # the first operator phone; more phones take the ports above it
MEDIA_PORT = 16000
AT_ONCE_S = 0.1  # calls placed "at the same moment" all start within this many seconds

Runner = Callable[[str], str]  # a shell command on the asterisk node -> its output


class LabCallError(RuntimeError):
    """The test call could not be set up (no DID, no department, no operator); the message says why."""


@dataclass(frozen=True)
class CallPlan:
    """Who calls whom: the node, the carrier's and the phone's addresses, the digit, the operator."""

    node: str
    node_address: str
    sip_port: int
    trunk_peer: str
    did: str
    department: str
    digit: str
    operator: str
    operator_address: str
    sip_address: str = ""  # where the carrier and the phone send SIP: the node, or the SIP edge's address

    @property
    def target(self) -> str:
        """``address:port`` the carrier calls and the phone registers at (the node's, or the edge's)."""
        return f"{self.sip_address or self.node_address}:{self.sip_port}"


@dataclass(frozen=True)
class Timing:
    """The call's rhythm in milliseconds: when the caller presses keys and how long the operator talks."""

    ivr_wait_ms: int = 1500
    rating_wait_ms: int = 2000
    press_gap_ms: int = 1500
    rating_presses: int = 24
    end_wait_ms: int = 15000
    answer_ms: int = 300
    talk_ms: int = 4000


@dataclass(frozen=True)
class CallRecord:
    """What the node recorded of one call: its queue_log lines and CDR rows."""

    caller: str
    uniqueid: str | None
    queue_log: tuple[str, ...]
    cdr: tuple[dict[str, str], ...]

    def events(self) -> list[str]:
        """The queue_log event names, in order."""
        return [line.split("|")[4] for line in self.queue_log if len(line.split("|")) > 4]

    def event(self, name: str) -> list[str]:
        """The data fields of each ``name`` event."""
        return ["|".join(line.split("|")[5:]) for line in self.queue_log
                if len(line.split("|")) > 4 and line.split("|")[4] == name]

    @property
    def rating(self) -> str | None:
        """The caller's rating, from the queue_log's RATING event."""
        ratings = self.event("RATING")
        return ratings[-1] if ratings else None


@dataclass(frozen=True)
class CallReport:
    """A test call: both SIPp ends and what the node recorded."""

    plan: CallPlan
    caller: SippResult
    phone_outcomes: tuple[str, ...]
    record: CallRecord
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def reached_operator(self) -> bool:
        """The call went through the IVR into the department's queue and the operator answered."""
        events = self.record.events()
        queued = any(line.split("|")[2] == self.plan.department for line in self.record.queue_log
                     if len(line.split("|")) > 4 and line.split("|")[4] == "CONNECT")
        return (self.caller.ok and "ENTERQUEUE" in events and queued
                and any(o.startswith("answered") for o in self.phone_outcomes))


# --- the plan (pure) -------------------------------------------------------------------------------


def call_plan(region: Region, calls: CallNetwork, *, department: str | None = None,
              digit: str | None = None) -> CallPlan:
    """The test call of ``region``: the first asterisk node, the first trunk's first peer and DID, the
    department (given, or the first the main menu reaches with one key, preferring one open around the
    clock) and its first operator."""
    nodes = region.nodes_with("asterisk")
    if not nodes or not region.telephony.trunks:
        raise LabCallError("the region needs an asterisk node and a trunk for a test call")
    trunk = region.telephony.trunks[0]
    keys = ivr_keys(region)
    if department is None:
        reachable = [d for d in region.telephony.departments if d.id in keys.values()]
        if not reachable:
            raise LabCallError("the main menu sends no key straight to a department")
        # a department open around the clock answers whatever the time of the test
        department = next((d.id for d in reachable if d.hours == "always"), reachable[0].id)
    dep = _department(region, department)
    if digit is None:
        digit = next((k for k, d in sorted(keys.items()) if d == dep.id), None)
        if digit is None:
            raise LabCallError(f"no key of the main menu leads to department {dep.id}: give --digit")
    operators = operators_of(region, dep.id)
    if not operators:
        raise LabCallError(f"department {dep.id} has no operator")
    node, sip_address = nodes[0], nodes[0].address
    if region.telephony.edge is not None and region.nodes_with("sip-proxy"):
        # Behind the SIP edge: everything goes to its address; the department's primary records the call.
        primary = placements(region)[dep.id].primary
        node = next(n for n in nodes if n.name == primary)
        sip_address = region.telephony.edge.virtual_address
    return CallPlan(node=node.name, node_address=node.address, sip_port=region.telephony.sip_port,
                    trunk_peer=trunk.peers[0], did=trunk.dids[0], department=dep.id, digit=digit,
                    operator=operators[0], operator_address=phone_address(region, calls), sip_address=sip_address)


def ivr_keys(region: Region) -> dict[str, str]:
    """Keys of the main menu that lead straight to a department: key -> department id."""
    return {key: target.department for key, target in region.telephony.ivr.options.items()
            if isinstance(target, IvrDepartment)}


def phone_address(region: Region, calls: CallNetwork) -> str:
    """The host's address in the operators' network (from the lab's call network)."""
    networks = [ipaddress.ip_network(n, strict=False) for n in region.telephony.operator_networks]
    for entry in calls.extra_addresses:
        address = ipaddress.ip_address(entry.split("/")[0])
        if any(address in net for net in networks):
            return str(address)
    raise LabCallError("the lab holds no address in the operators' networks"
                       f" ({', '.join(region.telephony.operator_networks) or 'none declared'})")


def _department(region: Region, dep_id: str) -> Department:
    for dep in region.telephony.departments:
        if dep.id == dep_id:
            return dep
    known = ", ".join(d.id for d in region.telephony.departments)
    raise LabCallError(f"no department {dep_id!r} (departments: {known})")


def operators_of(region: Region, department: str) -> list[str]:
    """The extensions of the operators who take ``department``'s calls, in the spec's order."""
    return [op.extension for op in region.telephony.operators if department in _departments_of(op.departments)]


def _departments_of(skills: Sequence[object]) -> list[str]:
    return [s if isinstance(s, str) else str(getattr(s, "department", "")) for s in skills]


def caller_number(now_ns: int | None = None) -> str:
    """A caller number unique to this call, as the carrier sends it (8 + 10 digits, normalised to +7...)."""
    stamp = time.time_ns() if now_ns is None else now_ns
    return f"8913{(stamp // 1_000_000) % 10**7:07d}"


def carrier_params(digit: str, rating: str, timing: Timing, presses: Path,
                   answer_timeout_ms: int = 15000) -> dict[str, str]:
    """The ``carrier_call.xml`` parameters; the key presses' pcaps are written as ``<presses>-<n>.pcap``."""
    pcaps = []
    for press, key in enumerate([digit] + [rating] * timing.rating_presses):
        path = presses.absolute().with_name(f"{presses.name}-{press}.pcap")
        path.write_bytes(dtmf_press(key, press))
        pcaps.append(str(path))
    return {"answer_timeout_ms": str(answer_timeout_ms), "audio_pcap": str(PCAP_DIR / "g711a.pcap"),
            "ivr_digit_pcap": pcaps[0], "ivr_wait_ms": str(timing.ivr_wait_ms),
            "rating_wait_ms": str(timing.rating_wait_ms),
            "rating_presses": press_steps(pcaps[1:], timing.press_gap_ms), "end_wait_ms": str(timing.end_wait_ms)}


def parse_cdr(text: str, caller: str) -> list[dict[str, str]]:
    """The CDR rows (cdr_csv, with unique id and user field) whose source is ``caller``."""
    rows = []
    for values in csv.reader(io.StringIO(text)):
        row = dict(zip(CDR_COLUMNS, values, strict=False))
        if row.get("src") == caller:
            rows.append(row)
    return rows


def call_record(queue_log: str, cdr: str, caller: str) -> CallRecord:
    """The call of ``caller`` (normalised number) in the node's queue_log and CDR texts."""
    rows = parse_cdr(cdr, caller)
    uniqueid = rows[0].get("uniqueid") if rows else None
    lines = tuple(line for line in queue_log.splitlines() if uniqueid and line.split("|")[1:2] == [uniqueid])
    return CallRecord(caller=caller, uniqueid=uniqueid, queue_log=lines, cdr=tuple(rows))


# --- the ends of the call (SIPp on the host) -------------------------------------------------------


@contextlib.contextmanager
def operator_phone(plan: CallPlan, extension: str, password: str, workdir: Path, *, port: int = PHONE_PORT,
                   timing: Timing = Timing(), address: str | None = None) -> Iterator[SippServer]:
    """An operator's phone: registered (digest auth) from ``port``, then answering there; unregistered after."""
    local = address or plan.operator_address
    creds = ((extension, authentication(extension, password)),)
    registered = run_sipp(SippRun(f"register-{extension}", "register.xml", local, port, remote=plan.target,
                                  rows=creds, params={"expires": "600"}, timeout_s=15), workdir)
    if not registered.ok or not any(o.startswith("registered") for o in registered.outcomes):
        raise LabCallError(f"operator {extension} could not register: {registered.describe()}")
    phone = None
    try:
        # SIPp binds the media port and the one two above it (video): phones on neighbouring ports stay apart.
        phone = SippServer(SippRun(f"phone-{extension}", "operator_uas.xml", local, port, calls=None,
                                   params={"answer_ms": str(timing.answer_ms), "talk_ms": str(timing.talk_ms),
                                           "audio_pcap": str(PCAP_DIR / "g711a.pcap")},
                                   media_port=MEDIA_PORT + 10 * (port - PHONE_PORT) + 100, timeout_s=None),
                           workdir)
        yield phone
    finally:
        if phone is not None:
            phone.stop()
        run_sipp(SippRun(f"unregister-{extension}", "register.xml", local, port, remote=plan.target, rows=creds,
                         params={"expires": "0"}, timeout_s=15), workdir)


def carrier_call(plan: CallPlan, workdir: Path, *, caller: str, rating: str = "5", timing: Timing = Timing(),
                 digit: str | None = None, name: str = "carrier", also: Sequence[str] = ()) -> SippResult:
    """The carrier calls the plan's DID from the trunk peer's address and plays the keys; the callers of
    ``also`` call at the same moment (one SIPp, all calls started within ``AT_ONCE_S``)."""
    workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
    params = carrier_params(digit or plan.digit, rating, timing, workdir / f"{name}-press")
    callers = (caller, *also)
    return run_sipp(SippRun(name, "carrier_call.xml", plan.trunk_peer, CARRIER_PORT, remote=plan.target,
                            service=plan.did, rows=tuple((c,) for c in callers), params=params,
                            calls=len(callers), rate=len(callers) / AT_ONCE_S if also else None,
                            limit=len(callers) if also else None, media_port=MEDIA_PORT, timeout_s=180), workdir)


def read_record(run: Runner, caller: str, settle_s: float = 10.0) -> CallRecord:
    """The node's record of the call from ``caller`` (as sent; normalised here), waiting for the CDR."""
    number = normalise_number(caller)
    deadline = time.monotonic() + settle_s
    while True:
        record = call_record(run(f"cat {QUEUE_LOG} 2>/dev/null"), run(f"cat {CDR_CSV} 2>/dev/null"), number)
        if record.uniqueid or time.monotonic() > deadline:
            return record
        time.sleep(1)


def place_test_call(plan: CallPlan, password: str, workdir: Path, run: Runner, *, rating: str = "5",
              timing: Timing = Timing()) -> CallReport:
    """One call, carrier to operator and rating, and what the node recorded of it."""
    caller = caller_number()
    with operator_phone(plan, plan.operator, password, workdir, timing=timing) as phone:
        result = carrier_call(plan, workdir, caller=caller, rating=rating, timing=timing)
        outcomes = phone.outcomes()
    return CallReport(plan=plan, caller=result, phone_outcomes=outcomes, record=read_record(run, caller))


def place_calls_at_once(plan: CallPlan, phones: Mapping[str, str], workdir: Path, run: Runner, *,
                        rating: str = "5", timing: Timing = Timing()) -> tuple[CallReport, ...]:
    """One call for each phone of ``phones`` (extension -> its SIP password), all placed by the carrier at the
    same moment into the plan's department; each phone registers from a port of its own and answers. Each
    call's report names the operator whose phone took it, with that phone's outcomes for it."""
    start = time.time_ns()
    callers = [caller_number(start + n * 1_000_000) for n in range(len(phones))]
    with contextlib.ExitStack() as stack:
        answering = {ext: stack.enter_context(operator_phone(plan, ext, password, workdir, port=PHONE_PORT + n,
                                                             timing=timing))
                     for n, (ext, password) in enumerate(phones.items())}
        result = carrier_call(plan, workdir, caller=callers[0], also=callers[1:], rating=rating, timing=timing)
        outcomes = {ext: phone.outcomes() for ext, phone in answering.items()}
    reports = []
    for caller in callers:
        extension, taken = answered_by(outcomes, caller)
        reports.append(CallReport(plan=replace(plan, operator=extension or plan.operator), caller=result,
                                  phone_outcomes=taken, record=read_record(run, caller)))
    return tuple(reports)


def answered_by(outcomes: Mapping[str, Sequence[str]], caller: str) -> tuple[str | None, tuple[str, ...]]:
    """The phone (extension) whose INVITE came from ``caller`` and that phone's outcomes of that SIP call;
    (None, ()) when no phone had it."""
    digits = normalise_number(caller)[-10:]
    for extension, lines in outcomes.items():
        invite = next((o for o in lines if o.startswith("invite ") and digits in o.split(" from=", 1)[-1]), None)
        if invite is not None:
            call_id = invite.split()[1]
            return extension, tuple(o for o in lines if call_id in o.split())
    return None, ()


def report_lines(report: CallReport) -> list[str]:
    """What happened, for a human: the plan, both ends, the queue_log lines, the CDR rows, the rating."""
    plan, record = report.plan, report.record
    lines = [f"call {record.caller} -> {plan.did} on {plan.node} ({plan.target}) from the carrier at"
             f" {plan.trunk_peer}; key {plan.digit} -> department {plan.department};"
             f" operator {plan.operator} at {plan.operator_address}",
             f"carrier: {', '.join(report.caller.outcomes) or 'nothing'}"
             f" (sipp exit {report.caller.returncode})",
             f"operator {plan.operator}: {', '.join(o.split(' from=')[0] for o in report.phone_outcomes) or 'nothing'}",
             f"queue_log ({QUEUE_LOG}, callid {record.uniqueid or '?'}):"]
    lines += [f"  {line}" for line in record.queue_log] or ["  (no line)"]
    lines.append(f"CDR ({CDR_CSV}):")
    lines += [f"  {row.get('start', '')} {row.get('src', '')} -> {row.get('dst', '')} {row.get('dstchannel', '')}"
              f" {row.get('disposition', '')} billsec={row.get('billsec', '')} {row.get('userfield', '')}"
              for row in record.cdr] or ["  (no row)"]
    lines.append(f"rating: {record.rating or 'none'}")
    lines.append("result: through the IVR to an operator" if report.reached_operator
                 else "result: the call did NOT reach an operator")
    return lines


CARD_TIMEOUT_S = 20.0
_CALL_ID = re.compile(r"^[A-Za-z0-9._-]{1,150}$")


def call_card(run_db: Callable[[str], str], uniqueid: str, timeout_s: float = CARD_TIMEOUT_S) -> str | None:
    """The number of the call's card in the CRM's database (asked on a PostgreSQL node as postgres), waiting
    for the sync service's next passes; None when no card was made within ``timeout_s``."""
    if not _CALL_ID.match(uniqueid):
        return None
    query = f"SELECT number FROM ekc_appeals_appeal WHERE call_id = '{uniqueid}'"
    deadline = time.monotonic() + timeout_s
    while True:
        number = run_db(f'runuser -u postgres -- psql -d crm -At -c "{query}"').strip()
        if number or time.monotonic() > deadline:
            return number or None
        time.sleep(1)
