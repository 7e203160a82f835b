"""What one call's queue_log rows say about its card: pure logic, no Django (the sync service feeds it rows).

Asterisk logs each queued call under its unique id (``<node>-<epoch>.<n>``, unique across nodes): ENTERQUEUE
with the caller's number, CONNECT when an operator answers (the operator's name as the agent, the wait in
data1), COMPLETECALLER/COMPLETEAGENT when the talk ends (talk seconds in data2), or ABANDON / EXITWITHTIMEOUT /
EXITEMPTY / EXITWITHKEY when nobody answered. ekc's dialplan adds AFTERHOURS, RATING (the caller's 1-5),
CALLBACK (the number left for a callback) and CALLBACKDIAL (the callback dialled; logged under the original
call's id). A call gets a card once it is answered or has ended unanswered; a call still waiting has none.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime

ANSWERED = "answered"
ABANDONED = "abandoned"  # the caller hung up while waiting
MISSED = "missed"  # the queue gave up (maximum wait, nobody logged in, the callback key)
AFTER_HOURS = "after_hours"

ENDED_UNANSWERED = {"ABANDON": ABANDONED, "EXITWITHTIMEOUT": MISSED, "EXITEMPTY": MISSED, "EXITWITHKEY": MISSED}
TALK_ENDED = ("COMPLETECALLER", "COMPLETEAGENT", "BLINDTRANSFER", "ATTENDEDTRANSFER")


@dataclass(frozen=True)
class Event:
    """One queue_log row."""

    id: int
    time: datetime
    callid: str
    queue: str
    agent: str
    event: str
    data1: str = ""
    data2: str = ""


@dataclass(frozen=True)
class CallSummary:
    """The card's fields that come from the call; ``status`` is None while the call has no card yet."""

    callid: str
    department: str = ""
    caller: str = ""
    status: str | None = None
    entered_at: datetime | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    wait_s: int | None = None
    duration_s: int | None = None
    operator: str = ""
    rating: int | None = None
    callback_number: str = ""
    callback_dialled_at: datetime | None = None

    @property
    def node(self) -> str:
        """The Asterisk node that took the call (the unique id's prefix)."""
        return self.callid.rsplit("-", 1)[0] if "-" in self.callid else ""


def _int(text: str) -> int | None:
    return int(text) if text.strip().isdigit() else None


def summarise(callid: str, events: Iterable[Event], departments: Mapping[str, object]) -> CallSummary:
    """Fold one call's rows (in id order) into its card's fields. Rows of queues that are not departments
    (Asterisk's own NONE rows) are ignored."""
    s = CallSummary(callid)
    for e in events:
        if e.queue not in departments:
            continue
        if not s.department:
            s = replace(s, department=e.queue)
        if e.event == "ENTERQUEUE":
            s = replace(s, caller=s.caller or e.data2, entered_at=s.entered_at or e.time)
        elif e.event == "CONNECT":
            s = replace(s, status=ANSWERED, department=e.queue, answered_at=e.time, wait_s=_int(e.data1),
                        operator=e.agent)
        elif e.event in TALK_ENDED:
            s = replace(s, ended_at=e.time, duration_s=_int(e.data2) if e.event.startswith("COMPLETE") else
                        s.duration_s)
        elif e.event in ENDED_UNANSWERED and s.status != ANSWERED:
            s = replace(s, status=ENDED_UNANSWERED[e.event], ended_at=e.time)
        elif e.event == "AFTERHOURS" and s.status is None:
            s = replace(s, status=AFTER_HOURS, entered_at=s.entered_at or e.time, ended_at=e.time)
        elif e.event == "RATING":
            s = replace(s, rating=_int(e.data1))
        elif e.event == "CALLBACK":
            s = replace(s, callback_number=e.data1)
        elif e.event == "CALLBACKDIAL":
            s = replace(s, callback_dialled_at=e.time, callback_number=s.callback_number or e.data1)
    if s.status == ANSWERED and s.ended_at is not None and s.duration_s is None and s.answered_at is not None:
        s = replace(s, duration_s=round((s.ended_at - s.answered_at).total_seconds()))
    return s


def card_number(region: str, year: int, sequence: int) -> str:
    """The number a citizen names on the phone: region code, year, a six-digit sequence (54-2027-000123)."""
    return f"{region}-{year}-{sequence:06d}"
