"""Offline plan: what changes between two renders of a region, host by host, and what each change costs.

``diff_builds`` compares two build manifests (an older render and a newer one) without touching any host:
files by checksum and attributes, packages, services, paths that must be absent, hosts added or removed.
Each file change carries the trigger it needs (nothing, a reload, a restart) so the operator sees the impact
before applying, above all the restarts that drop every call on an Asterisk node.

The live plan (:mod:`ekc.engines.live`) uses the same diff with the hosts' observed state as the older side, so a
plan against the hosts and a plan against an older build read alike.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal

from ekc.render.manifest import BuildManifest, HostManifest, ManagedFile, ServiceState, Trigger

Change = Literal["added", "changed", "removed"]
Presence = Literal["added", "removed"]

_MARKERS: dict[str, str] = {"added": "+", "changed": "~", "removed": "-"}
_ANSI = {"+": "32", "~": "33", "-": "31", "!": "1;31", "dim": "2", "bold": "1"}
SHORT_HASH = 12


@dataclass(frozen=True)
class FileChange:
    """One managed file that is added, changed or removed on a host.

    ``trigger`` is what the change needs on the host: the new file's trigger, or the old file's trigger for a
    removed file. ``secret`` is true when the file carries credentials in either build, so its content must
    never be shown. ``attributes`` names what differs for a changed file: content, mode, owner, group.
    """

    host: str
    path: str
    change: Change
    trigger: Trigger
    secret: bool
    attributes: tuple[str, ...] = ()
    old: ManagedFile | None = None
    new: ManagedFile | None = None


@dataclass(frozen=True)
class PackageChange:
    """A package that must be installed (added) or is no longer wanted (removed) on a host."""

    host: str
    package: str
    change: Presence


@dataclass(frozen=True)
class ServiceChange:
    """A systemd unit that appears, disappears or must change its enabled/running state on a host."""

    host: str
    service: str
    change: Change
    old: ServiceState | None = None
    new: ServiceState | None = None


@dataclass(frozen=True)
class AbsentChange:
    """A path that must be absent from a host.

    ``added``: the path must go (it is deleted from the host); ``removed``: it is no longer kept absent
    (nothing on the host is touched).
    """

    host: str
    path: str
    change: Presence


@dataclass(frozen=True)
class ServiceAction:
    """One reload or restart the plan causes, with the files that cause it (handlers run once per service)."""

    host: str
    action: Literal["reload", "restart"]
    service: str
    command: str | None
    impact: str
    drops_calls: bool
    files: tuple[str, ...]


@dataclass(frozen=True)
class HostPlan:
    """Every change on one host. A removed host gets no changes: nothing is applied to it any more.

    ``notes`` are remarks that change nothing but that the operator should read, e.g. a service that is
    stopped because its unit skips itself on this kind of machine (the live plan counts that as satisfied).
    """

    host: str
    address: str
    files: tuple[FileChange, ...] = ()
    packages: tuple[PackageChange, ...] = ()
    services: tuple[ServiceChange, ...] = ()
    added_host: bool = False
    removed_host: bool = False
    absent: tuple[AbsentChange, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        """Whether anything at all changes for this host (notes are not changes)."""
        return bool(self.files or self.packages or self.services or self.absent
                    or self.added_host or self.removed_host)


@dataclass(frozen=True)
class Plan:
    """The difference between two renders of a region, every host of either render included."""

    hosts: tuple[HostPlan, ...]
    old_spec_sha256: str
    new_spec_sha256: str

    @property
    def changed(self) -> bool:
        """Whether applying the newer render would change anything."""
        return any(h.changed for h in self.hosts)

    @property
    def actions(self) -> list[ServiceAction]:
        """The reloads and restarts the file changes trigger, one per host, action and service."""
        return list(_service_actions(f for h in self.hosts for f in h.files))

    @property
    def restarts_dropping_calls(self) -> list[ServiceAction]:
        """The restarts that drop every call in progress on their node: what an operator must schedule."""
        return [a for a in self.actions if a.action == "restart" and a.drops_calls]


def diff_builds(old: BuildManifest, new: BuildManifest) -> Plan:
    """Compare an older render with a newer one: what applying ``new`` over ``old`` would change."""
    names = sorted({h.name for h in old.hosts} | {h.name for h in new.hosts})
    return Plan(
        hosts=tuple(_diff_host(name, old.host(name), new.host(name)) for name in names),
        old_spec_sha256=old.spec_sha256,
        new_spec_sha256=new.spec_sha256,
    )


def _diff_host(name: str, old: HostManifest | None, new: HostManifest | None) -> HostPlan:
    """The plan of one host present in either render."""
    if new is None:
        assert old is not None
        return HostPlan(host=name, address=old.address, removed_host=True)
    empty = HostManifest(name=name, address=new.address, roles=(), packages=(), files=(), services=())
    before = old if old is not None else empty
    return HostPlan(
        host=name,
        address=new.address,
        files=_diff_files(name, before.files, new.files),
        packages=_diff_packages(name, before.packages, new.packages),
        services=_diff_services(name, before.services, new.services),
        added_host=old is None,
        absent=_diff_absent(name, before.absent, new.absent),
    )


def _diff_files(
    host: str, old: tuple[ManagedFile, ...], new: tuple[ManagedFile, ...]
) -> tuple[FileChange, ...]:
    """File changes by path: checksum, mode, owner and group are what the host sees."""
    before = {f.path: f for f in old}
    after = {f.path: f for f in new}
    changes: list[FileChange] = []
    for path in sorted(before.keys() | after.keys()):
        was, now = before.get(path), after.get(path)
        if now is None:
            assert was is not None
            changes.append(FileChange(host, path, "removed", was.trigger, was.secret, old=was))
        elif was is None:
            changes.append(FileChange(host, path, "added", now.trigger, now.secret, new=now))
        elif attributes := _changed_attributes(was, now):
            secret = was.secret or now.secret
            changes.append(FileChange(host, path, "changed", now.trigger, secret, attributes, was, now))
    return tuple(changes)


def _changed_attributes(old: ManagedFile, new: ManagedFile) -> tuple[str, ...]:
    """Which of content, mode, owner and group differ between two versions of one file."""
    pairs = {
        "content": (old.sha256, new.sha256),
        "mode": (old.mode, new.mode),
        "owner": (old.owner, new.owner),
        "group": (old.group, new.group),
    }
    return tuple(name for name, (was, now) in pairs.items() if was != now)


def _diff_packages(host: str, old: tuple[str, ...], new: tuple[str, ...]) -> tuple[PackageChange, ...]:
    """Packages to install, then packages no longer wanted, each sorted by name."""
    added = [PackageChange(host, p, "added") for p in sorted(set(new) - set(old))]
    removed = [PackageChange(host, p, "removed") for p in sorted(set(old) - set(new))]
    return tuple(added + removed)


def _diff_absent(host: str, old: tuple[str, ...], new: tuple[str, ...]) -> tuple[AbsentChange, ...]:
    """Paths that must now be absent (deleted from the host), then paths no longer kept absent, sorted."""
    added = [AbsentChange(host, p, "added") for p in sorted(set(new) - set(old))]
    removed = [AbsentChange(host, p, "removed") for p in sorted(set(old) - set(new))]
    return tuple(added + removed)


def _diff_services(
    host: str, old: tuple[ServiceState, ...], new: tuple[ServiceState, ...]
) -> tuple[ServiceChange, ...]:
    """Services that appear, disappear or change their enabled/running state, sorted by name."""
    before = {s.name: s for s in old}
    after = {s.name: s for s in new}
    changes: list[ServiceChange] = []
    for name in sorted(before.keys() | after.keys()):
        was, now = before.get(name), after.get(name)
        if was is None:
            changes.append(ServiceChange(host, name, "added", new=now))
        elif now is None:
            changes.append(ServiceChange(host, name, "removed", old=was))
        elif was != now:
            changes.append(ServiceChange(host, name, "changed", was, now))
    return tuple(changes)


def _service_actions(changes: Iterable[FileChange]) -> Iterable[ServiceAction]:
    """Group file changes by the reload or restart they trigger; files with no action trigger nothing."""
    groups: dict[tuple[str, str, str, str | None], list[FileChange]] = {}
    for change in changes:
        trigger = change.trigger
        if trigger.action == "none":
            continue
        service = trigger.service or trigger.command or "?"
        groups.setdefault((change.host, trigger.action, service, trigger.command), []).append(change)
    for (host, _action, service, command), files in sorted(
        groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2], kv[0][3] or "")
    ):
        first = files[0].trigger
        action: Literal["reload", "restart"] = "restart" if first.action == "restart" else "reload"
        yield ServiceAction(
            host=host,
            action=action,
            service=service,
            command=command,
            impact=first.impact,
            drops_calls=any(f.trigger.drops_calls for f in files),
            files=tuple(f.path for f in files),
        )


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
    lines = [_spec_line(plan)]
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
        "hosts": [{**asdict(h), "changed": h.changed} for h in plan.hosts],
        "actions": [asdict(a) for a in plan.actions],
        "restarts_dropping_calls": [asdict(a) for a in plan.restarts_dropping_calls],
    }
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
