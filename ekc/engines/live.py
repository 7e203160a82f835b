"""The hosts as they are: read every managed path, package and service over SSH, and plan against the render.

``observe`` logs in to each host once (one ``sh -s`` per host, all hosts in parallel), runs a small POSIX
script that prints tab-separated records for the managed files, absent paths, packages and services, and
turns the answer into a :class:`~ekc.render.manifest.BuildManifest` of the same shape as the render: the
*observed* build. The live plan is then the ordinary offline diff, ``diff_builds(observed, wanted)``, so a
plan against the hosts and a plan against an older build read alike and carry the same impacts.

What "observed" means for each part of a host, so that the diff says exactly what apply would do:

- files: the ones that exist, with their real sha256, mode, owner and group (the trigger is the wanted one);
- packages: the wanted ones that are installed;
- services: the real enabled/running state of every wanted unit that exists;
- absent: the paths that must be absent and are (a path still there is a pending deletion).

A unit that is stopped because a start condition is unmet (Debian's chrony has
``ConditionVirtualization=|!container``; ekc gives auditd ``!container``) cannot be started by apply either:
the live plan counts it as satisfied and says so in a note, never silently.

The script costs a handful of processes per host whatever the number of files and units: the files are
classified with shell built-ins, then hashed by one ``sha256sum`` and described by one ``stat``; the units
are read by one ``systemctl show`` (:mod:`ekc.engines.units`).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from ekc.engines.ssh import LiveError, SshAccess, on_hosts, run_on_host
from ekc.engines.units import (
    END_MARKER,
    UNITS_PRELUDE,
    UnitState,
    Virtualization,
    condition_note,
    parse_unit_record,
    parse_virtualization,
    units_lines,
)
from ekc.render.manifest import BuildManifest, HostManifest, ServiceState
from ekc.render.plan import Plan, diff_builds

LIVE_VERSION = "live"
# The sha256 the observed build gives a managed path that is something else than a regular file.
NOT_A_REGULAR_FILE = "(not a regular file)"
FileKind = Literal["ok", "missing", "notfile"]

# ``f`` and ``a`` take (index, path): indexes refer to the host's wanted lists. ``f`` returns 0 for a regular
# file, which the script then hands to ``sha256sum`` and ``stat`` (``H`` and ``M`` records, in index order).
_FILES_PRELUDE = r"""f() {
  if [ -L "$2" ] || { [ -e "$2" ] && [ ! -f "$2" ]; }; then printf 'F\t%s\tnotfile\n' "$1"; return 1
  elif [ -f "$2" ]; then printf 'F\t%s\tok\n' "$1"; return 0
  else printf 'F\t%s\tmissing\n' "$1"; return 1; fi
}
a() {
  if [ -e "$2" ] || [ -L "$2" ]; then printf 'A\t%s\tpresent\n' "$1"; else printf 'A\t%s\tmissing\n' "$1"; fi
}
set --
"""
_HASH_AND_STAT = r"""if [ $# -gt 0 ]; then
  sha256sum -- "$@" 2>/dev/null | sed 's/^/H\t/'
  stat --printf 'M\t%a %U %G\t%n\n' -- "$@" 2>/dev/null
fi"""


@dataclass(frozen=True)
class FileState:
    """A managed path as found: a regular file (with its attributes), missing, or something else."""

    path: str
    kind: FileKind
    sha256: str = ""
    mode: str = ""
    owner: str = ""
    group: str = ""


@dataclass(frozen=True)
class PackageState:
    """A wanted package as dpkg knows it."""

    name: str
    installed: bool
    version: str


@dataclass(frozen=True)
class HostObservation:
    """Everything read from one host."""

    host: str
    virtualization: Virtualization
    files: tuple[FileState, ...]
    present_absent: tuple[str, ...]
    packages: tuple[PackageState, ...]
    units: tuple[UnitState, ...]


# --- the script and its answer (pure) ----------------------------------------------------------------------


def observe_script(host: HostManifest) -> str:
    """The one script that reads every managed file, absent path, wanted package and service of ``host``."""
    q = shlex.quote
    lines = [UNITS_PRELUDE.rstrip("\n"), _FILES_PRELUDE.rstrip("\n")]
    lines += [f"f {i} {q(f.path)} && set -- \"$@\" {q(f.path)}" for i, f in enumerate(host.files)]
    lines.append(_HASH_AND_STAT)
    lines += [f"a {i} {q(path)}" for i, path in enumerate(host.absent)]
    if host.packages:
        names = " ".join(q(p) for p in host.packages)
        lines.append(r"dpkg-query -W -f='P\t${Package}\t${db:Status-Abbrev}\t${Version}\n' "
                     f"{names} 2>/dev/null || true")
    lines += units_lines([s.name for s in host.services])
    lines.append(f"printf '{END_MARKER}\\n'")
    return "\n".join(lines) + "\n"


@dataclass
class _Answer:
    """The records of one answer, gathered before they are paired up."""

    virt: Virtualization = field(default_factory=Virtualization)
    kinds: dict[int, str] = field(default_factory=dict)
    hashes: list[str] = field(default_factory=list)
    stats: list[str] = field(default_factory=list)
    present: set[str] = field(default_factory=set)
    packages: dict[str, PackageState] = field(default_factory=dict)
    units: dict[int, UnitState] = field(default_factory=dict)

    def add(self, host: HostManifest, line: str) -> None:
        """Take one record of the answer."""
        tag, *fields = line.split("\t")
        if tag == "V":
            self.virt = parse_virtualization(fields)
        elif tag == "F":
            self.kinds[int(fields[0])] = fields[1]
        elif tag == "H":
            self.hashes.append(fields[0])
        elif tag == "M":
            self.stats.append("\t".join(fields))
        elif tag == "A" and fields[1] == "present":
            self.present.add(host.absent[int(fields[0])])
        elif tag == "P":
            self.packages[fields[0]] = _package_state(self.packages.get(fields[0]), fields)
        elif tag == "S":
            self.units[int(fields[0])] = parse_unit_record(fields[1:], host.services[int(fields[0])].name)


def parse_observation(host: HostManifest, text: str) -> HostObservation:
    """The script's output for ``host`` as data; raise LiveError if it was cut short or garbled."""
    lines = text.splitlines()
    if END_MARKER not in lines:
        raise LiveError(f"{host.name}: the host's answer was cut short ({len(lines)} lines, no end marker)")
    answer = _Answer()
    line = ""
    try:
        for line in lines:
            answer.add(host, line)
    except (IndexError, ValueError) as exc:
        raise LiveError(f"{host.name}: could not read the host's answer ({exc}): {line!r}") from None
    return HostObservation(
        host=host.name,
        virtualization=answer.virt,
        files=_file_states(host, answer),
        present_absent=tuple(p for p in host.absent if p in answer.present),
        packages=tuple(answer.packages.values()),
        units=tuple(answer.units[i] if i in answer.units else UnitState(s.name, "unknown", "unknown")
                    for i, s in enumerate(host.services)),
    )


def _file_states(host: HostManifest, answer: _Answer) -> tuple[FileState, ...]:
    """Each wanted file's state: the regular ones paired, in index order, with their hash and ``stat`` line."""
    regular = [i for i in sorted(answer.kinds) if answer.kinds[i] == "ok"]
    if not len(regular) == len(answer.hashes) == len(answer.stats):
        raise LiveError(f"{host.name}: the host's answer is incomplete ({len(regular)} files, "
                        f"{len(answer.hashes)} checksums, {len(answer.stats)} descriptions): did a file change?")
    found: dict[int, FileState] = {}
    for index, digest_line, stat_line in zip(regular, answer.hashes, answer.stats, strict=True):
        path = host.files[index].path
        digest, _, hashed = digest_line.partition("  ")
        attributes, _, described = stat_line.partition("\t")
        if hashed != path or described != path:
            raise LiveError(f"{host.name}: could not read the host's answer: {path} was answered as "
                            f"{hashed!r} and {described!r}")
        mode, owner, group = attributes.split(" ")
        found[index] = FileState(path, "ok", digest, f"{int(mode, 8):04o}", owner, group)
    for index, kind in answer.kinds.items():
        if kind == "notfile":
            found[index] = FileState(host.files[index].path, "notfile")
    return tuple(found.get(i, FileState(f.path, "missing")) for i, f in enumerate(host.files))


def _package_state(seen: PackageState | None, fields: Sequence[str]) -> PackageState:
    """A ``P`` record (name, dpkg status abbreviation, version); any installed instance counts (multi-arch)."""
    name, status, version = fields[0], fields[1].strip(), fields[2] if len(fields) > 2 else ""
    installed = len(status) >= 2 and status[1] == "i"
    if seen is not None and seen.installed and not installed:
        return seen
    return PackageState(name, installed, version)


# --- the observed build (pure) -----------------------------------------------------------------------------


def observed_host(wanted: HostManifest, seen: HostObservation) -> tuple[HostManifest, tuple[str, ...]]:
    """The host as observed, in the render's shape, and notes for what is counted satisfied though it differs."""
    wanted_files = {f.path: f for f in wanted.files}
    files = tuple(
        replace(wanted_files[s.path], sha256=s.sha256 or NOT_A_REGULAR_FILE, mode=s.mode, owner=s.owner,
                group=s.group)
        for s in seen.files if s.kind != "missing"
    )
    installed = {p.name for p in seen.packages if p.installed}
    services, notes = _observed_services(wanted.services, seen)
    host = replace(
        wanted,
        packages=tuple(p for p in wanted.packages if p in installed),
        files=files,
        services=services,
        absent=tuple(p for p in wanted.absent if p not in seen.present_absent),
    )
    return host, notes


def _observed_services(
    wanted: tuple[ServiceState, ...], seen: HostObservation
) -> tuple[tuple[ServiceState, ...], tuple[str, ...]]:
    """Observed states of the units that exist; a unit its own conditions keep stopped counts as running."""
    states: list[ServiceState] = []
    notes: list[str] = []
    for want, unit in zip(wanted, seen.units, strict=True):
        if not unit.found:
            continue
        running = unit.is_running
        if want.running and unit.skipped_by_condition:
            running = True
            notes.append(condition_note(unit, seen.virtualization))
        states.append(ServiceState(want.name, enabled=unit.is_enabled, running=running))
    return tuple(states), tuple(notes)


def observed_manifest(wanted: BuildManifest, hosts: Sequence[HostManifest]) -> BuildManifest:
    """A build manifest made of observed hosts. Its spec hash is empty: the hosts carry no spec."""
    return BuildManifest(
        ekc_version=LIVE_VERSION,
        spec="(live hosts)",
        spec_sha256="",
        region_code=wanted.region_code,
        region_name=wanted.region_name,
        redacted=True,
        hosts=tuple(hosts),
        flows=(),
    )


def select_hosts(manifest: BuildManifest, limit: Sequence[str] | None) -> BuildManifest:
    """The manifest restricted to the hosts named in ``limit`` (all when None or empty); unknown names fail."""
    if not limit:
        return manifest
    known = {h.name for h in manifest.hosts}
    unknown = sorted(set(limit) - known)
    if unknown:
        raise LiveError(f"no host {', '.join(unknown)} in the region (hosts: {', '.join(sorted(known))})")
    return replace(manifest, hosts=tuple(h for h in manifest.hosts if h.name in set(limit)))


# --- reading the hosts -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LiveObservation:
    """The observed build and, per host, the raw observation and the notes for the plan."""

    manifest: BuildManifest
    hosts: tuple[HostObservation, ...]
    notes: dict[str, tuple[str, ...]] = field(default_factory=dict)


def observe(manifest: BuildManifest, access: SshAccess, limit: Sequence[str] | None = None) -> LiveObservation:
    """Read every (selected) host in parallel; one error names every host that could not be read."""
    wanted = select_hosts(manifest, limit)
    answers = on_hosts(wanted.hosts, lambda h: run_on_host(access, h.name, h.address, observe_script(h)))
    seen = [parse_observation(h, answers[h.name]) for h in wanted.hosts]
    pairs = [observed_host(h, s) for h, s in zip(wanted.hosts, seen, strict=True)]
    return LiveObservation(
        manifest=observed_manifest(wanted, [host for host, _ in pairs]),
        hosts=tuple(seen),
        notes={host.name: notes for host, notes in pairs if notes},
    )


def live_plan(manifest: BuildManifest, ssh_key: Path, *, limit: Sequence[str] | None = None,
              known_hosts: Path | None = None) -> Plan:
    """What applying ``manifest`` would change on the live hosts: ``diff_builds(observed, wanted)`` plus notes."""
    return plan_hosts(manifest, SshAccess(ssh_key, known_hosts), limit)


def plan_hosts(manifest: BuildManifest, access: SshAccess, limit: Sequence[str] | None = None) -> Plan:
    """:func:`live_plan` with a given way in (e.g. one with shared connections, for a push right after)."""
    wanted = select_hosts(manifest, limit)
    seen = observe(wanted, access)
    plan = diff_builds(seen.manifest, wanted)
    hosts = tuple(replace(h, notes=h.notes + seen.notes.get(h.host, ())) for h in plan.hosts)
    return replace(plan, hosts=hosts)
