"""The fast path: when the live plan changes only managed files whose triggers are reloads, write just those
files and run just those triggers, one SSH connection per changed host, with no engine.

An IVR or queue edit changes a few Asterisk files and needs ``dialplan reload`` or ``module reload
app_queue.so``; converging every host with an engine (facts of every file, package and unit) costs ten
seconds or more for that. The live plan has already read every host, so when it shows nothing but such
file changes, what an engine would do is known exactly: write those files, then run their triggers once
each, in the engines' order (``ekc.engines.common.trigger_runs``). The fast path does exactly that.

:func:`refusals` says why a plan must go to an engine instead, one reason per change: a package, a service,
a path to delete, a host added, a file missing or not a regular file on the host, APT's configuration (its
``apt-get update`` needs the bundle served), and any trigger that restarts something, except the units in
:data:`FAST_RESTARTS`, each with the reason its restart is as harmless as a reload.

On the host (:func:`push_script`) the staged files an interrupted apply left in those directories are removed
first; then every file is staged beside its target (``mktemp`` in the same directory, so the rename cannot
cross file systems; named as ``ekc.engines.atomic`` names them): content from base64, checked against the
render's sha256, owner and mode set, fsync'd. Only when every file of the host is staged are they renamed
into place (each rename is atomic: a reader sees the old file or the new one, never a part), the directories fsync'd,
and the triggers run; a trigger that names a service runs only while that service is active, as in the
engines. A staging failure removes the staged files and changes nothing.
"""

from __future__ import annotations

import base64
import shlex
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from ekc.engines.atomic import stale_temps_command, temp_path
from ekc.engines.common import ApplyResult, HostResult, TriggerRun, host_work, is_apt_config, unit_name
from ekc.engines.live import NOT_A_REGULAR_FILE
from ekc.engines.ssh import MAX_PARALLEL, SshAccess, UnreachableHosts, run_on_host
from ekc.render.manifest import BuildManifest, ManagedFile
from ekc.render.plan import FileChange, HostPlan, Plan, ServiceChange

FAST_PATH = "fast path"
END = "E\tend"
DELIMITER = "EKC-END"  # ends each file's base64 text: '-' is no base64 character, so no line can equal it
# Restart triggers the fast path runs like reloads: units whose restart reruns an idempotent script that needs
# nothing from the deploy host and drops no call.
FAST_RESTARTS: Mapping[str, str] = {
    "ekc-prompts": "reruns the prompt synthesis (espeak-ng, sox) from the texts on the node; needs no bundle, "
                   "drops no call",
}

_SCRIPT_PRELUDE = r"""set -u
umask 077
LC_ALL=C; export LC_ALL
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin; export PATH
fail() {
  i=0
  while [ "$i" -lt "$staged_files" ]; do eval "t=\${t_$i:-}"; [ -z "$t" ] || rm -f -- "$t"; i=$((i + 1)); done
  printf 'X\t%s\t%s\n' "$1" "$2"
  exit 1
}
stage() {
  t=$(mktemp -- "$2") || fail "$1" "cannot create a temporary file beside it"
  eval "t_$1=\$t"
  base64 -d > "$t" || fail "$1" "cannot write its temporary file"
  [ "$(sha256sum < "$t" | cut -d ' ' -f 1)" = "$6" ] || fail "$1" "the written content has another sha256"
  chown -- "$4:$5" "$t" || fail "$1" "cannot give it owner $4:$5"
  chmod -- "$3" "$t" || fail "$1" "cannot give it mode $3"
  sync -- "$t" || fail "$1" "cannot flush it to disk"
}
place() {
  eval "t=\$t_$1"
  mv -fT -- "$t" "$2" || fail "$1" "cannot rename it into place"
  eval "t_$1="
  printf 'W\t%s\n' "$1"
}
trigger() {
  if [ -n "$2" ] && ! systemctl is-active --quiet "$2"; then printf 'T\t%s\tskipped\n' "$1"; return 0; fi
  if out=$(sh -c "$3" 2>&1); then printf 'T\t%s\tran\n' "$1"
  else
    rc=$?
    printf 'T\t%s\tfailed\t%s\t%s\n' "$1" "$rc" "$(printf '%s' "$out" | tr '\t\n' '  ' | cut -c 1-300)"
    exit 1
  fi
}
"""


@dataclass(frozen=True)
class FileWrite:
    """One managed file the fast path writes: what it must become, and the sha256 it has on the host now."""

    file: ManagedFile
    old_sha256: str
    content: bytes = field(repr=False)


@dataclass(frozen=True)
class HostPush:
    """The work of the fast path on one host: files to write, then triggers to run, in this order."""

    host: str
    address: str
    writes: tuple[FileWrite, ...]
    triggers: tuple[TriggerRun, ...]


@dataclass(frozen=True)
class FastPathDecision:
    """Whether a plan takes the fast path: the work per changed host, or the reasons it goes to an engine."""

    pushes: tuple[HostPush, ...]
    refusals: tuple[str, ...]

    @property
    def taken(self) -> bool:
        """The plan changes something, and all of it is the fast path's to do."""
        return bool(self.pushes) and not self.refusals


# --- which plans qualify (pure) ----------------------------------------------------------------------------


def refusals(plan: Plan) -> tuple[str, ...]:
    """Why ``plan`` must be applied by an engine, one reason per change; empty when the fast path may take it."""
    reasons: list[str] = []
    for host in plan.hosts:
        reasons += _host_refusals(host)
        reasons += [reason for change in host.files if (reason := file_refusal(change))]
    return tuple(reasons)


def _host_refusals(host: HostPlan) -> list[str]:
    """What on a host, besides its files, needs an engine (a departing host needs none: apply stops its
    services itself, after the rest of the plan)."""
    if host.departing:
        return []
    name = host.host
    reasons = [f"{name}: a new host"] if host.added_host else []
    reasons += [f"{name}: the host leaves the region"] if host.removed_host else []
    reasons += [f"{name}: package {p.package} to {'install' if p.change == 'added' else 'remove'}"
                for p in host.packages]
    reasons += [f"{name}: {_service_change(s)}" for s in host.services]
    reasons += [f"{name}: {a.path} to delete" for a in host.absent if a.change == "added"]
    return reasons


def _service_change(change: ServiceChange) -> str:
    """A service change in a few words: a new one, one no longer managed, or what must happen to it."""
    if change.change == "added":
        return f"a new service {change.service}"
    if change.change == "removed" or change.old is None or change.new is None:
        return f"service {change.service} is no longer managed"
    steps = [("enable" if change.new.enabled else "disable")] if change.old.enabled != change.new.enabled else []
    steps += [("start" if change.new.running else "stop")] if change.old.running != change.new.running else []
    return f"service {change.service} to {' and '.join(steps)}"


def file_refusal(change: FileChange) -> str | None:
    """Why an engine must apply this file change, or None when the fast path may."""
    where = f"{change.host}: {change.path}"
    trigger = change.trigger
    if change.change == "added":
        return f"{where} is not on the host yet"
    if change.change == "removed":
        return f"{where} is no longer managed"
    if change.old is not None and change.old.sha256 == NOT_A_REGULAR_FILE:
        return f"{where} is not a regular file on the host"
    if is_apt_config(change.path):
        return f"{where} is APT's configuration (its apt-get update needs the bundle served)"
    if trigger.drops_calls:
        return f"{where}: {trigger.command} drops every call on the node"
    if trigger.action == "restart" and trigger.service not in FAST_RESTARTS:
        return f"{where}: {trigger.command} restarts {trigger.service or 'a service'}"
    return None


def decide(plan: Plan, manifest: BuildManifest, contents: Mapping[tuple[str, str], bytes], *,
           allowed: bool = True) -> FastPathDecision:
    """The fast path's work for ``plan`` (a live plan of ``manifest``), or why it is refused."""
    reasons = refusals(plan) if allowed else ("the fast path is switched off (--no-fast-path)",)
    if reasons:
        return FastPathDecision((), reasons)
    pushes = tuple(host_push(host, manifest, contents) for host in plan.hosts if host.files)
    return FastPathDecision(pushes, ())


def host_push(plan: HostPlan, manifest: BuildManifest, contents: Mapping[tuple[str, str], bytes]) -> HostPush:
    """The files to write on one host, in manifest order, and the triggers they fire, in the engines' order."""
    wanted = manifest.host(plan.host)
    if wanted is None:
        raise ValueError(f"{plan.host} is not in the render")
    old = {c.path: c.old.sha256 if c.old is not None else "" for c in plan.files}
    writes = tuple(FileWrite(f, old[f.path], contents[(plan.host, f.path)]) for f in wanted.files if f.path in old)
    fired = tuple(TriggerRun(run.command, run.service, tuple(p for p in run.paths if p in old))
                  for run in host_work(wanted).triggers if set(run.paths) & old.keys())
    return HostPush(plan.host, wanted.address, writes, fired)


# --- the script and its answer (pure) ----------------------------------------------------------------------


def push_script(push: HostPush) -> str:
    """The one POSIX script that stages, places and fsyncs the host's files, then runs their triggers."""
    q = shlex.quote
    directories = sorted({str(PurePosixPath(w.file.path).parent) for w in push.writes})
    lines = [_SCRIPT_PRELUDE.rstrip("\n"), f"staged_files={len(push.writes)}"]
    if directories:
        lines.append(f"{{ {stale_temps_command(directories, delete=True)}; }} > /dev/null")
    for i, write in enumerate(push.writes):
        f = write.file
        template = temp_path(f.path, "XXXXXXXX")
        lines.append(f"stage {i} {q(template)} {q(f.mode)} {q(f.owner)} {q(f.group)} {q(f.sha256)} <<'{DELIMITER}'")
        lines += [base64.encodebytes(write.content).decode("ascii").rstrip("\n"), DELIMITER]
    lines += [f"place {i} {q(w.file.path)}" for i, w in enumerate(push.writes)]
    if directories:
        lines.append("sync -- " + " ".join(q(d) for d in directories) + " || true")
    lines += [f"trigger {i} {q(unit_name(run.service) if run.service else '')} {q(run.command)}"
              for i, run in enumerate(push.triggers)]
    lines.append("printf 'E\\tend\\n'")
    return "\n".join(lines) + "\n"


def read_answer(push: HostPush, text: str, seconds: float | None = None) -> HostResult:
    """What the script did on the host, in the engines' terms."""
    written: list[str] = []
    ran: list[str] = []
    skipped: list[str] = []
    error: str | None = None
    for line in text.splitlines():
        tag, *fields = line.split("\t")
        if tag == "W":
            written.append(push.writes[int(fields[0])].file.path)
        elif tag == "X":
            error = f"{push.writes[int(fields[0])].file.path}: {fields[1]}"
        elif tag == "T":
            run = push.triggers[int(fields[0])]
            if fields[1] == "ran":
                ran.append(run.command)
            elif fields[1] == "skipped":
                skipped.append(run.command)
            else:
                error = f"{run.command} failed (exit {fields[2]}): {fields[3] if len(fields) > 3 else ''}".rstrip()
    if error is None and END not in text.splitlines():
        error = f"the host's answer was cut short: {text.strip()[-200:]!r}"
    return HostResult(push.host, ok=error is None, changes=len(written) + len(ran), files=tuple(written),
                      triggers=tuple(ran), skipped_triggers=tuple(skipped), error=error, seconds=seconds)


# --- running it ----------------------------------------------------------------------------------------------


def push(decision: FastPathDecision, access: SshAccess, timeout: float = 300) -> ApplyResult:
    """Run the fast path on every changed host at once; a host that fails does not stop the others."""
    started = time.monotonic()

    def one(host_push: HostPush) -> HostResult:
        begun = time.monotonic()
        try:
            answer = run_on_host(access, host_push.host, host_push.address, push_script(host_push), timeout)
        except UnreachableHosts as exc:
            return HostResult(host_push.host, ok=False, changes=0, error=exc.failures[host_push.host])
        return read_answer(host_push, answer, round(time.monotonic() - begun, 2))

    if not decision.pushes:
        return ApplyResult(FAST_PATH, False, (), 0.0)
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(decision.pushes))) as pool:
        hosts = tuple(pool.map(one, decision.pushes))
    return ApplyResult(FAST_PATH, False, hosts, round(time.monotonic() - started, 2))


def describe(decision: FastPathDecision) -> list[str]:
    """What the fast path does (or would do), host by host: the files with their sha256, then the triggers."""
    lines: list[str] = []
    for host_push in decision.pushes:
        lines.append(f"{host_push.host}: write {len(host_push.writes)} files, then run {len(host_push.triggers)} "
                     "triggers (one SSH connection)")
        lines += [f"  write {w.file.path} ({w.old_sha256[:12]} → {w.file.sha256[:12]}, {w.file.mode} "
                  f"{w.file.owner}:{w.file.group})" for w in host_push.writes]
        lines += [f"  run: {run.command}" for run in host_push.triggers]
    return lines
