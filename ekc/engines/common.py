"""What both apply engines share: the deploy key on disk, the order of work, the triggers, the result.

Both engines converge hosts to the same render (``build/<region>/``) and must leave them identical, so
every decision that is not about the engine itself is made here, once:

- the **order of work** on a host: APT configuration (the bundle's keyring and sources; stale sources
  removed) and ``apt-get update`` → packages → every other file and removal → triggers → services;
- which **trigger** a changed file fires: each trigger command runs at most once per host and apply, in
  manifest order, and only when one of its files changed (written, or its mode or owner fixed). A trigger
  that names a service only runs while that service is active: it tells a running daemon to reread its
  configuration, and a service that is not running reads it when the services step starts it;
- what counts as a **service that cannot run here**: a unit whose start was skipped because a condition
  failed (``ConditionVirtualization=!container`` for chrony and auditd in the lab) only has to be enabled;
  the engines report it instead of failing or starting it on every apply;
- the **result** (:class:`ApplyResult`), so a caller never needs to know which engine ran.

Triggers run before services because a unit file or drop-in must be reread (``systemctl daemon-reload``)
before the unit is started, and a reload of a service that is not running yet would fail.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ekc.render.manifest import BuildManifest, HostManifest, ManagedFile
from ekc.spec.secrets import SecretsView

# Files below this prefix are APT's configuration: applied first, so packages come from the bundle only.
APT_CONFIG_PREFIX = "/etc/apt/"
# The command that rereads the package lists; the packages step runs it when it has something to install
# and the APT step has not run it already.
APT_UPDATE_COMMAND = "apt-get update"
REREADS = ("systemctl daemon-reload", APT_UPDATE_COMMAND)  # the trigger commands that run before all others
# Packages the engines themselves need on every host, installed with the manifest's packages by both
# engines (so both leave the same package set): Ansible's apt module needs python3-apt.
# Properties that tell whether a unit is running, and whether a failed condition skipped its start.
UNIT_PROPERTIES = ("Id", "LoadState", "ActiveState", "UnitFileState", "ConditionResult",
                   "ConditionTimestampMonotonic")


class EngineError(RuntimeError):
    """An apply could not start (bad build directory, unknown host in ``limit``, missing tool)."""


# ---------------------------------------------------------------- the deploy key


@contextmanager
def deploy_key(secrets: SecretsView) -> Iterator[Path]:
    """The region's deploy SSH private key in a private temporary file (0600 in a 0700 directory).

    The key lives in the vault; it is on disk only while the block runs, then deleted.
    """
    private = secrets.get("ssh", "deploy", "private")
    with tempfile.TemporaryDirectory(prefix="ekc-key-") as tmp:
        path = Path(tmp) / "deploy_key"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(private.strip() + "\n")
        yield path


# ---------------------------------------------------------------- the work on one host


@dataclass(frozen=True)
class TriggerRun:
    """One trigger command and the files whose change fires it (manifest order)."""

    command: str
    service: str | None
    paths: tuple[str, ...]


@dataclass(frozen=True)
class HostWork:
    """What an engine does on one host, split into the steps it runs in order."""

    host: HostManifest
    apt_files: tuple[ManagedFile, ...]
    apt_absent: tuple[str, ...]
    packages: tuple[str, ...]
    files: tuple[ManagedFile, ...]
    absent: tuple[str, ...]

    @property
    def apt_triggers(self) -> tuple[TriggerRun, ...]:
        """The triggers of the APT configuration files, run by the APT step.

        Removing a stale source (``debian.sources``) changes APT's configuration too, so it fires
        ``apt-get update`` like a changed source file does.
        """
        runs = list(trigger_runs(self.apt_files))
        if not self.apt_absent:
            return tuple(runs)
        update = next((r for r in runs if r.command == APT_UPDATE_COMMAND), None)
        if update is None:
            return (*runs, TriggerRun(APT_UPDATE_COMMAND, None, self.apt_absent))
        merged = TriggerRun(update.command, update.service, (*update.paths, *self.apt_absent))
        return tuple(merged if r is update else r for r in runs)

    @property
    def triggers(self) -> tuple[TriggerRun, ...]:
        """The triggers of the other files; a command that already ran in this apply is not run again."""
        return trigger_runs(self.files)


def host_work(host: HostManifest) -> HostWork:
    """Split a host's manifest entry into the engines' steps."""
    return HostWork(
        host=host,
        apt_files=tuple(f for f in host.files if is_apt_config(f.path)),
        apt_absent=tuple(p for p in host.absent if is_apt_config(p)),
        packages=wanted_packages(host),
        files=tuple(f for f in host.files if not is_apt_config(f.path)),
        absent=tuple(p for p in host.absent if not is_apt_config(p)),
    )


def is_apt_config(path: str) -> bool:
    """Whether ``path`` is part of APT's configuration (applied before any package is installed)."""
    return path.startswith(APT_CONFIG_PREFIX)


def wanted_packages(host: HostManifest) -> tuple[str, ...]:
    """The packages a host must have, sorted (the render lists what the engines need too: python3-apt)."""
    return tuple(sorted(set(host.packages)))


def trigger_runs(files: Iterable[ManagedFile]) -> tuple[TriggerRun, ...]:
    """Unique trigger commands of ``files``, each with the files that fire it: first those that tell no service
    (``systemctl daemon-reload``, ``apt-get update``), then the reloads and restarts, each in manifest order."""
    order: list[str] = []
    paths: dict[str, list[str]] = {}
    services: dict[str, str | None] = {}
    for file in files:
        command = file.trigger.command
        if not command or file.trigger.action == "none":
            continue
        if command not in paths:
            order.append(command)
            paths[command] = []
            services[command] = file.trigger.service
        paths[command].append(file.path)
    runs = [TriggerRun(c, services[c], tuple(paths[c])) for c in order]
    # Commands that tell no service first, and among them systemd's and APT's rereads (daemon-reload, apt-get
    # update): a reload or restart must see the unit files and package lists as they now are, and so must a
    # command of a component that starts its service whatever its state (keepalived's reload-or-restart).
    return tuple(sorted(runs, key=lambda run: (run.service is not None, run.command not in REREADS)))


def select_hosts(manifest: BuildManifest, limit: Sequence[str] = ()) -> list[HostManifest]:
    """The hosts to apply to: all, or those named in ``limit`` (every name must exist)."""
    if not limit:
        return list(manifest.hosts)
    known = {h.name for h in manifest.hosts}
    unknown = sorted(set(limit) - known)
    if unknown:
        raise EngineError(f"--limit names unknown hosts: {', '.join(unknown)} (hosts: {', '.join(sorted(known))})")
    return [h for h in manifest.hosts if h.name in set(limit)]


def parent_dirs(files: Iterable[ManagedFile]) -> tuple[str, ...]:
    """The directories the files live in, sorted; an engine creates the missing ones (root, 0755)."""
    return tuple(sorted({str(Path(f.path).parent) for f in files}))


# ---------------------------------------------------------------- facts both engines read


_NEW_PACKAGES = re.compile(r"^The following NEW packages will be installed:\n((?:[ \t]+.*\n?)+)", re.MULTILINE)


def newly_installed(apt_output: str, requested: Iterable[str]) -> tuple[str, ...]:
    """Which of ``requested`` an ``apt-get install`` run installed, read from its output."""
    names: set[str] = set()
    for block in _NEW_PACKAGES.findall(apt_output):
        names.update(word.split(":", 1)[0] for word in block.split())
    return tuple(sorted(names & set(requested)))


def condition_skipped(properties: dict[str, str]) -> bool:
    """Whether systemd evaluated the unit's conditions, they failed, and so it is not running.

    Such a unit is as converged as it can be on this machine (chrony and auditd in a container): the
    engines require only its enabled state and report it.
    """
    evaluated = properties.get("ConditionTimestampMonotonic", "0") not in ("", "0")
    return (evaluated and properties.get("ConditionResult") == "no"
            and properties.get("ActiveState") in ("inactive", "failed"))


def unit_name(service: str) -> str:
    """The systemd unit of a manifest service name (``chrony`` → ``chrony.service``)."""
    return service if "." in service else f"{service}.service"


# ---------------------------------------------------------------- the result


@dataclass(frozen=True)
class HostResult:
    """What an apply did (or, in a dry run, would do) on one host.

    ``changes`` is the engine's own count of changed steps (pyinfra: operations that ran commands;
    Ansible: the recap's ``changed``); the tuples say what exactly changed, in the same terms for both.
    """

    host: str
    ok: bool
    changes: int
    files: tuple[str, ...] = ()
    packages: tuple[str, ...] = ()
    services: tuple[str, ...] = ()
    triggers: tuple[str, ...] = ()
    skipped_triggers: tuple[str, ...] = ()
    not_running: tuple[str, ...] = ()
    error: str | None = None
    seconds: float | None = None  # the host's own time, where the engine measures it (the fast path does)

    @property
    def changed_files(self) -> int:
        """Managed files written, fixed (mode, owner) or removed."""
        return len(self.files)

    @property
    def changed_packages(self) -> int:
        """Wanted packages that were installed."""
        return len(self.packages)

    @property
    def changed_services(self) -> int:
        """Services enabled, disabled, started or stopped."""
        return len(self.services)


@dataclass(frozen=True)
class ApplyResult:
    """The outcome of one apply: per host, in manifest order."""

    engine: str
    dry_run: bool
    hosts: tuple[HostResult, ...]
    seconds: float
    log: str = field(default="", repr=False)

    @property
    def ok(self) -> bool:
        """Every host converged (or, in a dry run, could be checked)."""
        return all(h.ok for h in self.hosts)

    @property
    def changes(self) -> int:
        """Changed steps over all hosts: 0 means the hosts already were what the build says."""
        return sum(h.changes for h in self.hosts)

    def host(self, name: str) -> HostResult:
        """The result of host ``name``."""
        for result in self.hosts:
            if result.host == name:
                return result
        raise KeyError(name)
