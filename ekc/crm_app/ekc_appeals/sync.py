"""The sync service's work: read the queue log (database ``calls``, read-only) and keep each call's card.

Each pass takes the calls with a row newer than the mark, or a row of the last seconds (rows of concurrent
transactions may commit out of id order), reads all of those calls' rows and folds them (``calls.summarise``);
a card is created once a call is answered or has ended unanswered, and updated as later rows arrive. Every step
is an upsert by the call's id, so a pass repeated after a restart changes nothing. Numbers come from a
per-year counter raised under its row lock: distinct under concurrent calls and whatever node took them.
"""

import json
from collections import defaultdict
from datetime import datetime
from zoneinfo import ZoneInfo

from creme.persons import get_contact_model
from django.conf import settings
from django.db import connection, connections, transaction
from django.db.models import Q

from . import calls
from .models import Appeal, Department, Holiday, NumberCounter, SyncMark, Topic

RECENT_S = 15
EVENTS = ("SELECT id, time, callid, queuename, agent, event, data1, data2 FROM ekc.crm_queue_events "
          "WHERE callid = ANY(%s) ORDER BY id")
CHANGED = ("SELECT DISTINCT callid FROM ekc.crm_queue_events WHERE id > %s OR time > now() - make_interval(secs => %s)")
CARD_FIELDS = ("status", "caller_number", "operator_name", "operator_extension", "entered_at", "answered_at",
               "ended_at", "wait_s", "duration_s", "rating", "callback_number", "callback_dialled_at", "node")


def catalogue() -> dict:
    """The region's catalogue rendered from the spec (``EKC_CATALOGUE``)."""
    with open(settings.EKC_CATALOGUE, encoding="utf-8") as f:
        return json.load(f)


def apply_catalogue(data: dict) -> None:
    """Departments, topics and holidays as the spec has them; what the spec dropped is retired, never deleted
    (cards keep their department and topic)."""
    with transaction.atomic():
        codes = []
        for dep in data["departments"]:
            codes.append(dep["code"])
            d, _ = Department.objects.update_or_create(code=dep["code"], defaults={
                "name": dep["name"], "register_working_days": dep["register_working_days"],
                "answer_days": dep["answer_days"], "near_due_days": dep["near_due_days"],
                "workdays": ",".join(str(n) for n in dep["workdays"]), "active": True})
            topics = [t["code"] for t in dep["topics"]]
            for t in dep["topics"]:
                Topic.objects.update_or_create(department=d, code=t["code"], defaults={"name": t["name"],
                                                                                      "active": True})
            Topic.objects.filter(department=d).exclude(code__in=topics).update(active=False)
        Department.objects.exclude(code__in=codes).update(active=False)
        Holiday.objects.exclude(day__in=data["holidays"]).delete()
        for day in data["holidays"]:
            Holiday.objects.get_or_create(day=day)


def next_number(region: str, year: int) -> str:
    """The next card number of the year, under the counter row's lock (inside the caller's transaction)."""
    with connection.cursor() as cur:
        cur.execute(
            f"INSERT INTO {NumberCounter._meta.db_table} (year, last) VALUES (%s, 1) "
            f"ON CONFLICT (year) DO UPDATE SET last = {NumberCounter._meta.db_table}.last + 1 RETURNING last",
            [year])
        (sequence,) = cur.fetchone()
    return calls.card_number(region, year, sequence)


def _contact(number: str):
    if not number:
        return None
    return (get_contact_model().objects.filter(Q(phone=number) | Q(mobile=number), is_deleted=False)
            .order_by("id").first())


def _values(s: calls.CallSummary, extensions: dict[str, str]) -> dict:
    return {"status": s.status, "caller_number": s.caller, "operator_name": s.operator,
            "operator_extension": extensions.get(s.operator, ""), "entered_at": s.entered_at,
            "answered_at": s.answered_at, "ended_at": s.ended_at, "wait_s": s.wait_s, "duration_s": s.duration_s,
            "rating": s.rating, "callback_number": s.callback_number, "callback_dialled_at": s.callback_dialled_at,
            "node": s.node}


def keep_card(s: calls.CallSummary, data: dict, departments: dict[str, Department]) -> tuple[Appeal, bool] | None:
    """Create or update the card of one call; None while it has no card yet. Returns (card, created)."""
    if s.status is None or s.department not in departments:
        return None
    values = _values(s, data["extensions"])
    with transaction.atomic():
        card = Appeal.objects.select_for_update().filter(call_id=s.callid).first()
        if card is None:
            when = s.answered_at or s.ended_at or s.entered_at or datetime.now(tz=ZoneInfo("UTC"))
            year = when.astimezone(ZoneInfo(data["timezone"])).year
            card = Appeal(call_id=s.callid, number=next_number(data["region"], year),
                          department=departments[s.department], contact=_contact(s.caller),
                          recording=s.callid, **values)
            card.save()
            return card, True
        changed = [f for f in CARD_FIELDS if getattr(card, f) != values[f]]
        if changed:
            for f in changed:
                setattr(card, f, values[f])
            card.save(update_fields=changed)
        return card, False


def sync_pass(data: dict) -> int:
    """One pass over the queue log; returns the number of cards created."""
    mark, _ = SyncMark.objects.get_or_create(name="queue_log")
    departments = {d.code: d for d in Department.objects.all()}
    with connections["calls"].cursor() as cur:
        cur.execute(CHANGED, [mark.last_id, RECENT_S])
        ids = [row[0] for row in cur.fetchall()]
        if not ids:
            return 0
        cur.execute(EVENTS, [ids])
        rows = cur.fetchall()
    by_call: dict[str, list[calls.Event]] = defaultdict(list)
    for row in rows:
        by_call[row[2]].append(calls.Event(*row))
    created = 0
    for callid, events in by_call.items():
        kept = keep_card(calls.summarise(callid, events, departments), data, departments)
        created += bool(kept and kept[1])
    last = max(row[0] for row in rows)
    if last > mark.last_id:
        SyncMark.objects.filter(name="queue_log").update(last_id=last)
    return created
