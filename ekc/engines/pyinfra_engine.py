"""The default apply engine: pyinfra's Python API over the render in ``build/<region>/``.

Every step is a pyinfra operation that reads facts and yields only the commands needed: pyinfra's own
(``files.directory``, ``apt.packages``, ``systemd.service``) and ekc's (``ekc.engines.pyinfra_ops``), which
write every managed file atomically (staged beside its target with its owner and mode, checked, flushed,
renamed: an apply killed half way leaves each file old or new, never a part), remove what an interrupted
apply staged, and wrap pyinfra's where the manifest needs a decision pyinfra does not make. Operations are
generated when they execute, so a trigger sees whether its files changed in this very apply, and a second
apply yields no command at all.

The order of work and the rules for triggers and services are ``ekc.engines.common``'s, shared with the
Ansible engine.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyinfra.api.config import Config
from pyinfra.api.connect import connect_all, disconnect_all
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.inventory import Inventory
from pyinfra.api.operation import OperationMeta, add_op
from pyinfra.api.operations import run_ops
from pyinfra.api.state import State
from pyinfra.api.util import FILE_SHAS
from pyinfra.facts.deb import DebPackages
from pyinfra.operations import files

from ekc.engines.common import (
    APT_UPDATE_COMMAND,
    ApplyResult,
    HostResult,
    HostWork,
    TriggerRun,
    condition_skipped,
    host_work,
    newly_installed,
    parent_dirs,
    select_hosts,
    unit_name,
)
from ekc.engines.pyinfra_ops import (
    UnitProperties,
    converge_service,
    install_packages,
    put_file,
    remove_path,
    remove_stale_temps,
    run_trigger,
)
from ekc.render.manifest import ManagedFile, host_file_path, load_manifest

ENGINE = "pyinfra"


# ---------------------------------------------------------------- adding the work of one host


@dataclass
class _HostOps:
    """The operations added for one host, kept to read what they did after the run."""

    work: HostWork
    files: list[tuple[str, OperationMeta]] = field(default_factory=list)
    other: list[tuple[str, OperationMeta]] = field(default_factory=list)
    packages: OperationMeta | None = None
    triggers: list[tuple[TriggerRun, OperationMeta, list[OperationMeta]]] = field(default_factory=list)
    services: list[tuple[str, OperationMeta]] = field(default_factory=list)

    def all(self) -> list[tuple[str, OperationMeta]]:
        """Every operation with a label, in the order they run."""
        ops = [*self.other, *self.files]
        ops += [(f"trigger {run.command}", op) for run, op, _ in self.triggers]
        ops += [(f"package install {', '.join(self.work.packages)}", self.packages)] if self.packages else []
        return ops + [(f"service {name}", op) for name, op in self.services]


def _ran(op: OperationMeta) -> bool:
    """Whether an operation has run and changed its host (False before it ran, as in a dry run)."""
    return op.is_complete() and op.did_change()


def _op(state: State, target: Any, func: Any, **kwargs: Any) -> OperationMeta:
    """Add one operation for one host and return its result handle."""
    result: dict[Any, OperationMeta] = add_op(state, func, host=target, **kwargs)
    return result[target]


def _add_files(state: State, target: Any, ops: _HostOps, build_dir: Path,
               wanted: Sequence[ManagedFile], absent: Sequence[str]) -> list[tuple[str, OperationMeta]]:
    """Missing parent directories, then every file with its mode and owner, then the removals."""
    added: list[tuple[str, OperationMeta]] = []
    for directory in parent_dirs(wanted):
        op = _op(state, target, files.directory, name=f"directory {directory}", path=directory,
                 _no_check_owner_mode=True)
        ops.other.append((f"directory {directory}", op))
    for file in wanted:
        src = host_file_path(build_dir, ops.work.host.name, file.path)
        added.append((file.path, _op(state, target, put_file, name=f"file {file.path}", src=str(src), file=file)))
    for path in absent:
        added.append((path, _op(state, target, remove_path, name=f"absent {path}", path=path)))
    ops.files.extend(added)
    return added


def _add_triggers(state: State, target: Any, ops: _HostOps, runs: Sequence[TriggerRun],
                  changed: Sequence[tuple[str, OperationMeta]]) -> None:
    """One operation per trigger command, run only if one of its files changed and it has not run yet."""
    for run in runs:
        sources = [op for path, op in changed if path in run.paths]
        earlier = [op for prior, op, _ in ops.triggers if prior.command == run.command]

        def fire(sources: list[OperationMeta] = sources, earlier: list[OperationMeta] = earlier) -> bool:
            return any(_ran(op) for op in sources) and not any(_ran(op) for op in earlier)

        op = _op(state, target, run_trigger, name=f"trigger {run.command}", command=run.command,
                 service=run.service, _if=fire)
        ops.triggers.append((run, op, sources))


def _add_host(state: State, target: Any, work: HostWork, build_dir: Path) -> _HostOps:
    """Every operation of one host, in the order of ``ekc.engines.common``."""
    ops = _HostOps(work=work)
    directories = list(parent_dirs([*work.apt_files, *work.files]))
    ops.other.append(("staged files left by an interrupted apply",
                      _op(state, target, remove_stale_temps, name="staged files left", directories=directories)))
    apt_changed = _add_files(state, target, ops, build_dir, work.apt_files, work.apt_absent)
    _add_triggers(state, target, ops, work.apt_triggers, apt_changed)
    updated = [op for run, op, _ in ops.triggers if run.command == APT_UPDATE_COMMAND]
    ops.packages = _op(state, target, install_packages, name="packages", packages=list(work.packages),
                       lists_fresh=lambda: any(_ran(op) for op in updated))
    changed = _add_files(state, target, ops, build_dir, work.files, work.absent)
    _add_triggers(state, target, ops, work.triggers, changed)
    for service in work.host.services:
        op = _op(state, target, converge_service, name=f"service {service.name}", service=service.name,
                 enabled=service.enabled, running=service.running)
        ops.services.append((service.name, op))
    return ops


# ---------------------------------------------------------------- running and reading the results


def apply_pyinfra(build_dir: Path, key_file: Path, *, limit: Sequence[str] = (), dry_run: bool = False,
                  known_hosts: Path | None = None) -> ApplyResult:
    """Converge the hosts of ``build_dir`` (or those in ``limit``) to the build, logging in with ``key_file``.

    ``dry_run`` computes what would change from the hosts' facts and changes nothing. ``known_hosts``
    pins host keys across applies (new hosts are accepted on first contact); without it every apply
    starts from an empty list. The bundle must be served while this runs (``ekc.bundle.serve.serve_bundle``).
    """
    started = time.monotonic()
    # pyinfra caches local files' digests by path for the life of the process: a build rendered again in
    # the same process (a test, a benchmark) would otherwise look unchanged and upload nothing.
    FILE_SHAS.clear()
    manifest = load_manifest(build_dir)
    works = [host_work(h) for h in select_hosts(manifest, limit)]
    with tempfile.TemporaryDirectory(prefix="ekc-pyinfra-") as tmp:
        hosts_file = known_hosts or Path(tmp) / "known_hosts"
        hosts_file.touch(mode=0o600, exist_ok=True)
        config = Config(CONNECT_TIMEOUT=15)  # type: ignore[no-untyped-call]
        state = State(_inventory(works, key_file, hosts_file, Path(tmp)), config, check_for_changes=dry_run)
        try:
            results = _run(state, works, build_dir, dry_run=dry_run)
        finally:
            disconnect_all(state)
    return ApplyResult(ENGINE, dry_run, tuple(results), round(time.monotonic() - started, 1))


def _inventory(works: Sequence[HostWork], key_file: Path, known_hosts: Path, tmp: Path) -> Inventory:
    """One SSH host per manifest host: root, the deploy key only, no agent, no user SSH config."""
    data = {
        "ssh_user": "root",
        "ssh_key": str(key_file),
        "ssh_allow_agent": False,
        "ssh_look_for_keys": False,
        "ssh_config_file": str(tmp / "no_ssh_config"),
        "ssh_known_hosts_file": str(known_hosts),
        "ssh_strict_host_key_checking": "accept-new",
    }
    names = [(w.host.name, {"ssh_hostname": w.host.address, **data}) for w in works]
    return Inventory((names, {}))  # type: ignore[no-untyped-call]


def _run(state: State, works: Sequence[HostWork], build_dir: Path, *, dry_run: bool) -> list[HostResult]:
    """Connect, add every host's operations, run them (unless ``dry_run``) and read what they did."""
    errors: dict[str, str] = {}
    try:
        connect_all(state)
    except PyinfraError as exc:
        errors = {w.host.name: f"cannot connect: {exc}" for w in works}
    by_name = {h.name: h for h in state.inventory}
    added = {w.host.name: _add_host(state, by_name[w.host.name], w, build_dir)
             for w in works if by_name[w.host.name] in state.active_hosts}
    for work in works:
        if work.host.name not in added and work.host.name not in errors:
            errors[work.host.name] = "cannot connect (see the messages above)"
    if not dry_run and added:
        try:
            run_ops(state)
        except PyinfraError as exc:
            for name, ops in added.items():
                errors.setdefault(name, _failure(ops) or str(exc))
    results = []
    for work in works:
        name = work.host.name
        if name in added and by_name[name] in state.failed_hosts:
            errors.setdefault(name, _failure(added[name]) or "failed")
        if name not in added:
            results.append(HostResult(name, ok=False, changes=0, error=errors[name]))
        else:
            results.append(_host_result(by_name[name], added[name], errors.get(name), dry_run=dry_run))
    return results


def _failure(ops: _HostOps) -> str | None:
    """The first operation that failed on the host, with what it printed on stderr."""
    for label, op in ops.all():
        if op.is_complete() and not op.did_succeed():
            return f"{label}: {op.stderr.strip() or 'failed'}"
    return None


def _changed(op: OperationMeta, *, dry_run: bool) -> bool:
    """Whether the operation changed (or, in a dry run, would change) the host."""
    return bool(op.will_change) if dry_run else _ran(op)


def _host_result(target: Any, ops: _HostOps, error: str | None, *, dry_run: bool) -> HostResult:
    """What the operations of one host did, in the engine-neutral terms of :class:`HostResult`."""
    fired = [(run, op) for run, op, sources in ops.triggers if any(_changed(s, dry_run=dry_run) for s in sources)]
    ran = [run.command for run, op in fired if _changed(op, dry_run=dry_run)]
    return HostResult(
        host=ops.work.host.name,
        ok=error is None,
        changes=sum(_changed(op, dry_run=dry_run) for _, op in ops.all()),
        files=tuple(dict.fromkeys(path for path, op in ops.files if _changed(op, dry_run=dry_run))),
        packages=_packages(target, ops, dry_run=dry_run),
        services=tuple(name for name, op in ops.services if _changed(op, dry_run=dry_run)),
        triggers=tuple(dict.fromkeys(ran)),
        skipped_triggers=tuple(dict.fromkeys(run.command for run, _ in fired if run.command not in ran)),
        not_running=_not_running(target, ops) if error is None else (),
        error=error,
    )


def _packages(target: Any, ops: _HostOps, *, dry_run: bool) -> tuple[str, ...]:
    """The wanted packages that were (or would be) installed."""
    wanted = ops.work.packages
    if ops.packages is None:
        return ()
    if dry_run:
        installed = target.get_fact(DebPackages)
        return tuple(name for name in wanted if name not in installed)
    if not ops.packages.is_complete() or not ops.packages.did_change():
        return ()
    return newly_installed(ops.packages.stdout, wanted)


def _not_running(target: Any, ops: _HostOps) -> tuple[str, ...]:
    """Services that must run but that a failed unit condition keeps from running on this host."""
    wanted = [s.name for s in ops.work.host.services if s.running]
    if not wanted:
        return ()
    units = target.get_fact(UnitProperties, units=[unit_name(s) for s in wanted])
    return tuple(s for s in wanted if condition_skipped(units.get(unit_name(s), {})))
