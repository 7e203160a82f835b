"""A plan in words: the lines ``deploy.py plan`` prints (colour optional), its summary, and its JSON form."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any, Literal

from ekc.render.manifest import Trigger
from ekc.render.plan import AbsentChange, FileChange, HostPlan, Plan, ServiceChange

Change = Literal["added", "changed", "removed"]
Presence = Literal["added", "removed"]

_MARKERS: dict[str, str] = {"added": "+", "changed": "~", "removed": "-"}
SHORT_HASH = 12

_ANSI = {"+": "32", "~": "33", "-": "31", "!": "1;31", "dim": "2", "bold": "1"}


def describe_action(trigger: Trigger) -> str:
    """What a change makes ekc run: ``reload: <command>`` or ``restart <service>``; empty for no action."""
    if trigger.action == "none":
        return ""
    if trigger.command:
        return f"{trigger.action}: {trigger.command}"
    return f"{trigger.action} {trigger.service}"


def describe_trigger(trigger: Trigger) -> str:
    """What a change needs and costs: ``reload: <command> — <impact>``; empty when nothing is touched."""
    action = describe_action(trigger)
    return f"{action} — {trigger.impact}" if action else ""


def describe_attributes(change: FileChange) -> str:
    """For a changed file, what changed besides its content, e.g. ``mode 0644 → 0640``."""
    if change.old is None or change.new is None:
        return ""
    values = {
        "mode": (change.old.mode, change.new.mode),
        "owner": (change.old.owner, change.new.owner),
        "group": (change.old.group, change.new.group),
    }
    parts = ["content" if name == "content" else f"{name} {values[name][0]} → {values[name][1]}"
             for name in change.attributes]
    return "" if parts == ["content"] else ", ".join(parts)


def describe_service(change: ServiceChange) -> str:
    """A service change in a few words, e.g. ``~ asterisk (running → stopped)``."""
    marker = _MARKERS[change.change]
    if change.old is None or change.new is None:
        return f"{marker} {change.service}"
    states = []
    if change.old.enabled != change.new.enabled:
        states.append(_state(change.old.enabled, "enabled", "disabled", change.new.enabled))
    if change.old.running != change.new.running:
        states.append(_state(change.old.running, "running", "stopped", change.new.running))
    return f"{marker} {change.service} ({', '.join(states)})"


def _state(was: bool, yes: str, no: str, now: bool) -> str:
    """``enabled → disabled`` style text for one boolean service property."""
    return f"{yes if was else no} → {yes if now else no}"


def _paint(text: str, style: str, color: bool) -> str:
    """Wrap ``text`` in an ANSI colour when colour is wanted."""
    return f"\x1b[{_ANSI[style]}m{text}\x1b[0m" if color and text else text


def format_plan(plan: Plan, *, color: bool = False) -> str:
    """The plan as text for a terminal: changed hosts first, then unchanged ones, then a one-line summary."""
    lines = [_spec_line(plan), *(f"Lifecycle: {line}" if not line.startswith(" ") else f"  {line}"
                                 for line in plan.lifecycle)]
    changed = [h for h in plan.hosts if h.changed]
    for host in changed:
        lines.extend(_format_host(host, color))
        lines.extend(_format_notes(host))
    for host in plan.hosts:
        if not host.changed:
            lines.append(f"{host.host}: no changes")
            lines.extend(_format_notes(host))
    lines.append(_paint(plan_summary(plan), "bold", color))
    return "\n".join(lines) + "\n"


def _spec_line(plan: Plan) -> str:
    """The spec hashes the plan goes between, shortened the way git shortens commits.

    An empty older hash means the older side is the hosts' observed state (a live plan), which carries no spec.
    """
    old, new = plan.old_spec_sha256[:SHORT_HASH], plan.new_spec_sha256[:SHORT_HASH]
    if not old:
        return f"Spec: {new} (compared with the live hosts)"
    return f"Spec: {old} (unchanged)" if old == new else f"Spec: {old} → {new}"


def _format_notes(host: HostPlan) -> list[str]:
    """A host's notes, one line each, below its changes."""
    return [f"  note: {note}" for note in host.notes]


def _format_host(host: HostPlan, color: bool) -> list[str]:
    """The lines of one changed host: heading, files with their impact, packages, services."""
    if host.removed_host:
        return [f"{host.host} ({host.address}): removed from the spec; nothing is applied to it"]
    heading = f"{host.host} ({host.address})"
    if host.departing:
        heading += ": absent in the spec; apply stops and disables these services"
    lines = [f"{heading}: new host" if host.added_host else heading]
    lefts = [_file_left(f) for f in host.files]
    width = max((len(left) for left in lefts), default=0)
    for change, left in zip(host.files, lefts, strict=True):
        lines.append(_format_file(change, left.ljust(width), color))
    if host.packages:
        items = "  ".join(_paint(f"{_MARKERS[p.change]} {p.package}", _MARKERS[p.change], color)
                          for p in host.packages)
        lines.append(f"  packages: {items}")
    if host.services:
        items = "  ".join(_paint(describe_service(s), _MARKERS[s.change], color) for s in host.services)
        lines.append(f"  services: {items}")
    lines.extend(_format_absent(host.absent, color))
    return lines


def _format_absent(changes: tuple[AbsentChange, ...], color: bool) -> list[str]:
    """Paths to delete (red), then paths no longer kept absent; one line each kind."""
    lines = []
    deleted = [c.path for c in changes if c.change == "added"]
    if deleted:
        lines.append("  delete: " + "  ".join(_paint(f"- {path}", "-", color) for path in deleted))
    kept = [c.path for c in changes if c.change == "removed"]
    if kept:
        lines.append("  no longer deleted: " + "  ".join(kept))
    return lines


def _file_left(change: FileChange) -> str:
    """Marker, path and any attribute change: the left column of a file line."""
    details = describe_attributes(change)
    return f"{_MARKERS[change.change]} {change.path}" + (f" ({details})" if details else "")


def _format_file(change: FileChange, left: str, color: bool) -> str:
    """One file line; a restart that drops calls gets a ``!`` in the margin so it cannot be missed."""
    drops = change.trigger.action == "restart" and change.trigger.drops_calls
    impact = describe_trigger(change.trigger)
    margin = _paint("!", "!", color) if drops else " "
    left = _paint(left[:1], _MARKERS[change.change], color) + left[1:]
    if not impact:
        return f"{margin} {left}".rstrip()
    return f"{margin} {left}   {_paint(impact, '!' if drops else 'dim', color)}"


def _count(n: int, noun: str) -> str:
    """``1 file`` / ``3 files``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def plan_summary(plan: Plan) -> str:
    """The plan in one line: how much changes where, and which restarts drop calls."""
    if not plan.changed:
        return f"Plan: no changes on {_count(len(plan.hosts), 'host')}"
    counts = [
        (sum(len(h.files) for h in plan.hosts), "file"),
        (sum(len(h.packages) for h in plan.hosts), "package"),
        (sum(len(h.services) for h in plan.hosts), "service"),
        (sum(len(h.absent) for h in plan.hosts), "absent path"),
    ]
    what = [_count(n, noun) for n, noun in counts if n]
    text = f"Plan: {', '.join(what) or 'nothing'} to change on "
    text += f"{sum(h.changed for h in plan.hosts)} of {_count(len(plan.hosts), 'host')}"
    added, removed = sum(h.added_host for h in plan.hosts), sum(h.removed_host for h in plan.hosts)
    hosts = [f"{n} {word}" for n, word in ((added, "added"), (removed, "removed")) if n]
    if hosts:
        text += f" ({', '.join(hosts)})"
    restarts = plan.restarts_dropping_calls
    if not restarts:
        return text + "; no restart drops calls"
    names = ", ".join(f"{r.host}: {r.service}" for r in restarts)
    verb = "restart that drops" if len(restarts) == 1 else "restarts that drop"
    return f"{text}; {len(restarts)} {verb} calls ({names})"


def plan_to_json(plan: Plan) -> str:
    """The plan as stable JSON for machines (CI gates, dashboards): sorted keys, trailing newline."""
    document: dict[str, Any] = {
        "old_spec_sha256": plan.old_spec_sha256,
        "new_spec_sha256": plan.new_spec_sha256,
        "changed": plan.changed,
        "summary": plan_summary(plan),
        "lifecycle": list(plan.lifecycle),
        "hosts": [{**asdict(h), "changed": h.changed} for h in plan.hosts],
        "actions": [asdict(a) for a in plan.actions],
        "restarts_dropping_calls": [asdict(a) for a in plan.restarts_dropping_calls],
    }
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
