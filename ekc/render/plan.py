"""Offline plan: what changes between two renders of a region, host by host, and what each change costs.

``diff_builds`` compares two build manifests (an older render and a newer one) without touching any host:
files by checksum and attributes, packages, services, paths that must be absent, hosts added or removed.
Each file change carries the trigger it needs (nothing, a reload, a restart) so the operator sees the impact
before applying, above all the restarts that drop every call on an Asterisk node.

The live plan (:mod:`ekc.engines.live`) uses the same diff with the hosts' observed state as the older side, so a
plan against the hosts and a plan against an older build read alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from ekc.render.manifest import BuildManifest, HostManifest, ManagedFile, ServiceState, Trigger

Change = Literal["added", "changed", "removed"]
Presence = Literal["added", "removed"]

_MARKERS: dict[str, str] = {"added": "+", "changed": "~", "removed": "-"}
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
    ``departing`` marks a node the spec marks absent: it is in no render, and its only changes are the services
    apply stops and disables there (the live plan reads them; no engine applies anything to it).
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
    departing: bool = False

    @property
    def changed(self) -> bool:
        """Whether anything at all changes for this host (notes are not changes)."""
        return bool(self.files or self.packages or self.services or self.absent
                    or self.added_host or self.removed_host)


@dataclass(frozen=True)
class Plan:
    """The difference between two renders of a region, every host of either render included.

    ``lifecycle`` are the lines about nodes entering or leaving service (:mod:`ekc.render.lifecycle`): the
    departments that move, what a drained node keeps doing, what a removed node loses.
    """

    hosts: tuple[HostPlan, ...]
    old_spec_sha256: str
    new_spec_sha256: str
    lifecycle: tuple[str, ...] = ()

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


