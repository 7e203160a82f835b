"""Asterisk's queues: one per department, its members the operators with that skill (queues.conf).

Behind the SIP edge a member is reached through the proxies (``asterisk_edge.member_interface``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ekc.render.components.asterisk_edge import EdgeView, member_interface
from ekc.render.components.asterisk_prompts import callback_offer_prompt
from schemas.region import Region


def clean(text: str) -> str:
    """A display name safe inside Asterisk's comma- and semicolon-separated values."""
    return " ".join(text.replace(",", " ").replace(";", " ").replace('"', " ").split())


@dataclass(frozen=True, slots=True)
class QueueMember:
    """An operator in a department's queue, with the penalty of that skill."""

    extension: str
    name: str
    penalty: int
    interface: str  # what the queue dials (PJSIP/<extension>, or PJSIP/<extension>@edge behind the SIP edge)
    state: str  # the device state the queue reads for the member


@dataclass(frozen=True, slots=True)
class QueuePlan:
    """A department's queue as queues.conf prints it."""

    id: str
    name: str
    strategy: str
    ring_s: int
    wrapup_s: int
    service_level_s: int
    announce_position: bool
    announce_holdtime: bool
    periodic_s: int
    callback: bool
    periodic_prompt: str
    start_delay_s: int
    members: list[QueueMember]


def queue_data(region: Region, view: EdgeView | None = None) -> list[QueuePlan]:
    """Each department's queue with its members (operators with their penalties), who are reached through the
    SIP edge when ``view`` is given."""
    tel = region.telephony
    # one pass over the operators (a region has thousands), members kept in the operators' order
    by_department: dict[str, list[QueueMember]] = {dep.id: [] for dep in tel.departments}
    for op in tel.operators:
        name = clean(op.name)
        for skill in op.skills():
            interface, state = member_interface(op.extension, view)
            by_department.setdefault(skill.department, []).append(
                QueueMember(op.extension, name, skill.penalty, interface, state))
    queues = []
    for dep in tel.departments:
        q = dep.queue
        callback = q.callback.enabled
        periodic = q.periodic_announce_s or (q.callback.offer_after_s if callback else 0)
        queues.append(QueuePlan(
            id=dep.id, name=clean(dep.name), strategy=q.strategy, ring_s=q.ring_s, wrapup_s=q.wrapup_s,
            service_level_s=q.service_level.within_s, announce_position=q.announce_position,
            announce_holdtime=q.announce_holdtime, periodic_s=periodic, callback=callback,
            periodic_prompt=callback_offer_prompt(q.callback.key) if callback else "queue-periodic-announce",
            start_delay_s=q.callback.offer_after_s if callback else periodic, members=by_department[dep.id],
        ))
    return queues
