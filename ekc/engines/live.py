"""The hosts as they are: read every managed path, package and service over SSH, and plan against the render.

``observe_hosts`` logs in to each host once (one ``sh -s`` per host, all hosts in parallel), runs a small
POSIX script that prints one tab-separated record per managed file, absent path, package and service, and
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
"""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from ekc.render.manifest import BuildManifest, HostManifest, ServiceState
from ekc.render.plan import Plan, diff_builds

END_MARKER = "E\tend"
LIVE_VERSION = "live"
ENABLED_STATES = frozenset({"enabled", "enabled-runtime", "alias", "static", "generated"})
RUNNING_STATES = frozenset({"active", "reloading"})
UNIT_SUFFIXES = (".service", ".socket", ".timer", ".mount", ".path", ".target")
MAX_PARALLEL = 16
SSH_EXIT_ERROR = 255  # ssh's own failure (connection, authentication, host key), not the remote command's
FileKind = Literal["ok", "missing", "notfile"]

# Functions the per-host script calls, one record per call. ``f`` and ``a`` take (index, path), ``s`` takes
# (index, unit, D-Bus object path). Indexes refer to the host's wanted lists, so no path is ever parsed back.
_PRELUDE = r"""set -u
LC_ALL=C; export LC_ALL
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin; export PATH
f() {
  if [ -L "$2" ] || { [ -e "$2" ] && [ ! -f "$2" ]; }; then printf 'F\t%s\tnotfile\n' "$1"
  elif [ -f "$2" ]; then
    printf 'F\t%s\tok\t%s\t%s\n' "$1" "$(sha256sum < "$2" | cut -d ' ' -f 1)" "$(stat -c '%a %U %G' "$2")"
  else printf 'F\t%s\tmissing\n' "$1"; fi
}
a() {
  if [ -e "$2" ] || [ -L "$2" ]; then printf 'A\t%s\tpresent\n' "$1"; else printf 'A\t%s\tmissing\n' "$1"; fi
}
s() {
  en=$(systemctl is-enabled "$2" 2>/dev/null | head -n 1)
  ac=$(systemctl is-active "$2" 2>/dev/null | head -n 1)
  cr=$(systemctl show -P ConditionResult "$2" 2>/dev/null)
  ct=$(systemctl show -P ConditionTimestampMonotonic "$2" 2>/dev/null)
  co=-
  if [ "$ac" != active ] && [ "$cr" = no ]; then
    co=$(busctl --json=short get-property org.freedesktop.systemd1 "$3" org.freedesktop.systemd1.Unit \
      Conditions 2>/dev/null) || co=-
  fi
  printf 'S\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "${en:-unknown}" "${ac:-unknown}" "${cr:--}" "${ct:-0}" "${co:--}"
}
printf 'V\t%s\t%s\n' "$(systemd-detect-virt --container 2>/dev/null || true)" \
  "$(systemd-detect-virt --vm 2>/dev/null || true)"
"""


class LiveError(RuntimeError):
    """The hosts could not be read; the message names the host and says why."""


class UnreachableHosts(LiveError):
    """One or more hosts did not answer over SSH (network, key or host key)."""

    def __init__(self, failures: dict[str, str]):
        self.failures = dict(sorted(failures.items()))
        named = "; ".join(f"{host} ({why})" for host, why in self.failures.items())
        super().__init__(f"cannot reach {named}" if len(failures) == 1
                         else f"cannot reach {len(failures)} hosts: {named}")


# --- how ekc logs in ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SshAccess:
    """How ekc logs in to the hosts: root, with the region's deploy key only, never a password.

    Host keys are trusted on first contact and checked ever after (``accept-new``) against ``known_hosts``
    (default: the operator's own file): inside a closed contour there is no other source of truth for them,
    and a key that changes later is refused.
    """

    identity: Path
    known_hosts: Path | None = None
    connect_timeout: int = 10
    user: str = "root"

    def options(self) -> dict[str, str]:
        """The OpenSSH client options, as ``ssh_config`` keywords and values."""
        options = {
            "BatchMode": "yes",
            "IdentitiesOnly": "yes",
            "IdentityFile": str(self.identity),
            "PasswordAuthentication": "no",
            "StrictHostKeyChecking": "accept-new",
            "ConnectTimeout": str(self.connect_timeout),
            "LogLevel": "ERROR",
        }
        if self.known_hosts is not None:
            options["UserKnownHostsFile"] = str(self.known_hosts)
        return options

    def argv(self, address: str) -> list[str]:
        """``ssh`` with every option, logging in to ``address`` (append the remote command)."""
        argv = ["ssh"]
        for key, value in self.options().items():
            argv += ["-o", f"{key}={value}"]
        return [*argv, f"{self.user}@{address}"]

    def config_text(self, control_dir: Path | None = None) -> str:
        """The same options as an ``ssh_config`` file (for testinfra's ``--ssh-config``)."""
        lines = ["Host *"] + [f"    {key} {value}" for key, value in self.options().items()]
        if control_dir is not None:
            lines.append(f"    ControlPath {control_dir}/%C")
        return "\n".join(lines) + "\n"


def run_on_host(access: SshAccess, host: str, address: str, script: str, timeout: float = 300) -> str:
    """Run a POSIX ``script`` on a host (one ``sh -s``) and return its output; raise naming the host if not."""
    try:
        done = subprocess.run([*access.argv(address), "sh", "-s"], input=script, capture_output=True,
                              text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise UnreachableHosts({host: f"{address}: no answer within {timeout:.0f} s"}) from None
    if done.returncode == SSH_EXIT_ERROR:
        why = (done.stderr.strip().splitlines() or ["ssh failed"])[-1]
        raise UnreachableHosts({host: f"{address}: {why}"})
    return done.stdout


def check_reachable(manifest: BuildManifest, access: SshAccess) -> None:
    """Log in to every host of ``manifest`` at once; raise one error naming every host that did not answer."""
    _parallel(manifest.hosts, lambda h: run_on_host(access, h.name, h.address, "true\n", 60))


# --- the script and its answer (pure) ----------------------------------------------------------------------


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
class Virtualization:
    """What ``systemd-detect-virt`` says of a host: its container and VM type (``none`` for each if neither)."""

    container: str = "none"
    vm: str = "none"

    @property
    def in_container(self) -> bool:
        """Whether the host is a container (where kernel-level units skip themselves)."""
        return self.container not in ("none", "")

    def matches(self, parameter: str) -> bool | None:
        """``ConditionVirtualization=<parameter>`` (without ``!``) on this host; None when it cannot be told."""
        value = parameter.lower()
        virtual = self.in_container or self.vm not in ("none", "")
        if value in ("yes", "true", "1", "on"):
            return virtual
        if value in ("no", "false", "0", "off"):
            return not virtual
        if value == "container":
            return self.in_container
        if value == "vm":
            return self.vm not in ("none", "")
        if value == "private-users":
            return None
        return value in (self.container, self.vm)


@dataclass(frozen=True)
class Condition:
    """One start condition of a unit, as systemd's D-Bus ``Conditions`` property lists it.

    ``state`` is systemd's last result: above 0 held, below 0 failed, 0 not known (it is reset whenever the
    unit is reloaded, e.g. by ``daemon-reload``, while ``ConditionResult`` is kept).
    """

    kind: str
    trigger: bool
    negate: bool
    parameter: str
    state: int = 0

    def __str__(self) -> str:
        return f"{self.kind}={'|' if self.trigger else ''}{'!' if self.negate else ''}{self.parameter}"

    def holds(self, virt: Virtualization) -> bool | None:
        """Whether the condition holds: systemd's own result if known, else evaluated for virtualization."""
        if self.state:
            return self.state > 0
        if self.kind != "ConditionVirtualization":
            return None
        matched = virt.matches(self.parameter)
        return None if matched is None else matched != self.negate


@dataclass(frozen=True)
class UnitState:
    """A systemd unit as ``systemctl`` reports it, with its start conditions when it was skipped."""

    name: str
    enabled: str
    active: str
    condition_result: str = "-"
    condition_checked: bool = False
    conditions: tuple[Condition, ...] = ()

    @property
    def found(self) -> bool:
        """Whether systemd knows the unit at all (its package may not be installed yet)."""
        return self.enabled not in ("not-found", "unknown", "")

    @property
    def is_enabled(self) -> bool:
        """Enabled, or started by something that is (static, alias, generated)."""
        return self.enabled in ENABLED_STATES

    @property
    def is_running(self) -> bool:
        """Active (or reloading)."""
        return self.active in RUNNING_STATES

    @property
    def skipped_by_condition(self) -> bool:
        """Not running because systemd evaluated its start conditions and they failed: nothing can start it here."""
        return not self.is_running and self.condition_checked and self.condition_result == "no"

    def unmet(self, virt: Virtualization) -> tuple[Condition, ...]:
        """The conditions known to fail on this host: every failing plain condition, and the trigger (``|``)
        conditions when none of them holds."""
        failing = [c for c in self.conditions if not c.trigger and c.holds(virt) is False]
        triggers = [c for c in self.conditions if c.trigger]
        if triggers and all(c.holds(virt) is False for c in triggers):
            failing += triggers
        return tuple(c for c in self.conditions if c in failing)

    def container_conditions(self, virt: Virtualization) -> tuple[Condition, ...]:
        """The failing ``ConditionVirtualization=`` entries: the unit skips itself on this kind of machine."""
        return tuple(c for c in self.unmet(virt) if c.kind == "ConditionVirtualization")


@dataclass(frozen=True)
class HostObservation:
    """Everything read from one host."""

    host: str
    virtualization: Virtualization
    files: tuple[FileState, ...]
    present_absent: tuple[str, ...]
    packages: tuple[PackageState, ...]
    units: tuple[UnitState, ...]


def unit_id(service: str) -> str:
    """The full unit name of a manifest service (``chrony`` → ``chrony.service``)."""
    return service if service.endswith(UNIT_SUFFIXES) else f"{service}.service"


def unit_object_path(service: str) -> str:
    """The unit's D-Bus object path, escaped the way systemd does (``sd_bus_path_encode``)."""
    label = unit_id(service)
    escaped = "".join(
        ch if ch.isascii() and (ch.isalpha() or (i > 0 and ch.isdigit())) else "".join(f"_{b:02x}" for b in
                                                                                      ch.encode())
        for i, ch in enumerate(label)
    )
    return f"/org/freedesktop/systemd1/unit/{escaped or '_'}"


def unit_probe_script(service: str, index: int = 0) -> str:
    """The script that prints one ``S`` record for ``service`` (verify uses it for a single unit)."""
    q = shlex.quote
    return f"{_PRELUDE}s {index} {q(service)} {q(unit_object_path(service))}\nprintf '{END_MARKER}\\n'\n"


def observe_script(host: HostManifest) -> str:
    """The one script that reads every managed file, absent path, wanted package and service of ``host``."""
    q = shlex.quote
    lines = [_PRELUDE.rstrip("\n")]
    lines += [f"f {i} {q(f.path)}" for i, f in enumerate(host.files)]
    lines += [f"a {i} {q(path)}" for i, path in enumerate(host.absent)]
    if host.packages:
        names = " ".join(q(p) for p in host.packages)
        lines.append(r"dpkg-query -W -f='P\t${Package}\t${db:Status-Abbrev}\t${Version}\n' "
                     f"{names} 2>/dev/null || true")
    lines += [f"s {i} {q(s.name)} {q(unit_object_path(s.name))}" for i, s in enumerate(host.services)]
    lines.append(f"printf '{END_MARKER}\\n'")
    return "\n".join(lines) + "\n"


def parse_unit_record(fields: Sequence[str], name: str) -> UnitState:
    """An ``S`` record's fields after the index: is-enabled, is-active, ConditionResult, timestamp, conditions."""
    enabled, active, result, stamp, conditions = (list(fields) + ["", "", "-", "0", "-"][len(fields):])[:5]
    return UnitState(
        name=name,
        enabled=enabled,
        active=active,
        condition_result=result,
        condition_checked=stamp not in ("", "0"),
        conditions=parse_conditions(conditions),
    )


def parse_virtualization(fields: Sequence[str]) -> Virtualization:
    """A ``V`` record's fields: ``systemd-detect-virt --container`` and ``--vm``."""
    values = [f.strip() or "none" for f in fields] + ["none", "none"]
    return Virtualization(values[0], values[1])


def read_unit_probe(text: str, service: str) -> tuple[UnitState, Virtualization]:
    """The answer of :func:`unit_probe_script`: the unit's state, and the host's virtualization."""
    virt, unit = Virtualization(), None
    for line in text.splitlines():
        tag, *fields = line.split("\t")
        if tag == "V":
            virt = parse_virtualization(fields)
        elif tag == "S" and fields:
            unit = parse_unit_record(fields[1:], service)
    if unit is None:
        raise LiveError(f"no answer about {service}: {text.strip()[:200]!r}")
    return unit, virt


def parse_conditions(text: str) -> tuple[Condition, ...]:
    """A unit's start conditions from ``busctl --json=short get-property … Conditions`` (``-``: none read).

    Each entry is (type, trigger, negate, parameter, state).
    """
    try:
        entries = json.loads(text)["data"]
    except (ValueError, KeyError, TypeError):
        return ()
    return tuple(
        Condition(str(kind), bool(trigger), bool(negate), str(parameter), state if isinstance(state, int) else 0)
        for kind, trigger, negate, parameter, state in (e for e in entries if isinstance(e, list) and len(e) == 5)
    )


def parse_observation(host: HostManifest, text: str) -> HostObservation:
    """The script's output for ``host`` as data; raise LiveError if it was cut short or garbled."""
    lines = text.splitlines()
    if END_MARKER not in lines:
        raise LiveError(f"{host.name}: the host's answer was cut short ({len(lines)} lines, no end marker)")
    virt = Virtualization()
    files: dict[int, FileState] = {}
    present: set[str] = set()
    packages: dict[str, PackageState] = {}
    units: dict[int, UnitState] = {}
    try:
        for line in lines:
            tag, *fields = line.split("\t")
            if tag == "V":
                virt = parse_virtualization(fields)
            elif tag == "F":
                files[int(fields[0])] = _file_state(host.files[int(fields[0])].path, fields[1:])
            elif tag == "A" and fields[1] == "present":
                present.add(host.absent[int(fields[0])])
            elif tag == "P":
                packages[fields[0]] = _package_state(packages.get(fields[0]), fields)
            elif tag == "S":
                units[int(fields[0])] = parse_unit_record(fields[1:], host.services[int(fields[0])].name)
    except (IndexError, ValueError) as exc:
        raise LiveError(f"{host.name}: could not read the host's answer ({exc}): {line!r}") from None
    return HostObservation(
        host=host.name,
        virtualization=virt,
        files=tuple(files[i] if i in files else FileState(f.path, "missing") for i, f in enumerate(host.files)),
        present_absent=tuple(p for p in host.absent if p in present),
        packages=tuple(packages.values()),
        units=tuple(units[i] if i in units else UnitState(s.name, "unknown", "unknown")
                    for i, s in enumerate(host.services)),
    )


def _file_state(path: str, fields: Sequence[str]) -> FileState:
    """An ``F`` record: ``ok <sha256> <mode owner group>``, ``missing`` or ``notfile``."""
    if fields[0] == "ok":
        mode, owner, group = fields[2].split(" ")
        return FileState(path, "ok", fields[1], f"{int(mode, 8):04o}", owner, group)
    if fields[0] == "notfile":
        return FileState(path, "notfile")
    return FileState(path, "missing")


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
        replace(wanted_files[s.path], sha256=s.sha256 or "(not a regular file)", mode=s.mode, owner=s.owner,
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


def condition_note(unit: UnitState, virt: Virtualization) -> str:
    """Why a stopped unit is not a pending change: its start conditions fail on this machine."""
    unmet = unit.unmet(virt)
    conditions = ", ".join(map(str, unmet)) + " not met" if unmet else "a start condition is not met"
    where = f" (this host is a {virt.container} container)" if virt.in_container else ""
    return (f"{unit.name} is not running: its unit skips itself here, {conditions}{where}; "
            "apply cannot start it, so it counts as satisfied")


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
    answers = _parallel(wanted.hosts, lambda h: run_on_host(access, h.name, h.address, observe_script(h)))
    seen = [parse_observation(h, answers[h.name]) for h in wanted.hosts]
    pairs = [observed_host(h, s) for h, s in zip(wanted.hosts, seen, strict=True)]
    return LiveObservation(
        manifest=observed_manifest(wanted, [host for host, _ in pairs]),
        hosts=tuple(seen),
        notes={host.name: notes for host, notes in pairs if notes},
    )


def observe_hosts(manifest: BuildManifest, ssh_key: Path, limit: Sequence[str] | None = None, *,
                  known_hosts: Path | None = None) -> BuildManifest:
    """The hosts' observed state as a build manifest of the same shape as ``manifest`` (see the module doc)."""
    return observe(manifest, SshAccess(ssh_key, known_hosts), limit).manifest


def live_plan(manifest: BuildManifest, ssh_key: Path, *, limit: Sequence[str] | None = None,
              known_hosts: Path | None = None) -> Plan:
    """What applying ``manifest`` would change on the live hosts: ``diff_builds(observed, wanted)`` plus notes."""
    wanted = select_hosts(manifest, limit)
    seen = observe(wanted, SshAccess(ssh_key, known_hosts))
    plan = diff_builds(seen.manifest, wanted)
    hosts = tuple(replace(h, notes=h.notes + seen.notes.get(h.host, ())) for h in plan.hosts)
    return replace(plan, hosts=hosts)


def _parallel(hosts: Sequence[HostManifest], task: Callable[[HostManifest], str]) -> dict[str, str]:
    """Run ``task(host)`` for every host at once; collect every unreachable host into one error."""
    answers: dict[str, str] = {}
    failures: dict[str, str] = {}
    if not hosts:
        return answers
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(hosts))) as pool:
        futures = {h.name: pool.submit(task, h) for h in hosts}
        for name, future in futures.items():
            try:
                answers[name] = future.result()
            except UnreachableHosts as exc:
                failures.update(exc.failures)
    if failures:
        raise UnreachableHosts(failures)
    return answers
