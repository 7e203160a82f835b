"""The second apply engine: ``ansible-playbook`` with ``roles/`` over the same render as pyinfra.

The playbook (``ekc/engines/playbooks/site.yml``) runs the ``common`` role on every host and, as components are
added, each component's role on its group; the roles read the build's ``manifest.json`` and copy files
from its tree, so both engines apply exactly what was rendered and reviewed. The engine writes an
``ansible.cfg`` of its own to a temporary directory (nothing from the operator's environment leaks in),
runs the playbook with the build's ``inventory.yml`` and the deploy key, and reads the result from two
places: the play recap (Ansible's count of changed tasks per host) and the JSON lines of ekc's callback
(``ansible_plugins/ekc_events.py``: which files, packages, services and triggers changed).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ekc.engines.common import (
    ApplyResult,
    EngineError,
    HostResult,
    host_work,
    newly_installed,
    select_hosts,
)
from ekc.paths import REPO_ROOT, ROLES_DIR
from ekc.render.manifest import BuildManifest, load_manifest

ENGINE = "ansible"
PLAYBOOK = Path(__file__).resolve().parent / "playbooks" / "site.yml"
CALLBACK_DIR = Path(__file__).resolve().parent / "ansible_plugins"
INVENTORY_NAME = "inventory.yml"
# The manifest's component of the base layer is applied by the role ``common``; others by their namesake.
COMPONENT_ROLES = {"base": "common"}
_RECAP = re.compile(
    r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
    r"\s+failed=(?P<failed>\d+)\s+skipped=(?P<skipped>\d+)\s+rescued=(?P<rescued>\d+)\s+ignored=(?P<ignored>\d+)",
    re.MULTILINE,
)


@dataclass(frozen=True)
class Recap:
    """One host's line of the play recap."""

    ok: int
    changed: int
    unreachable: int
    failed: int


def apply_ansible(build_dir: Path, key_file: Path, *, limit: Sequence[str] = (), dry_run: bool = False,
                  known_hosts: Path | None = None) -> ApplyResult:
    """Converge the hosts of ``build_dir`` (or those in ``limit``) with ``ansible-playbook``.

    ``dry_run`` runs ``--check --diff``: nothing changes, the result says what would. ``known_hosts``
    pins host keys (accepted on first contact); without it host keys are not checked. The bundle must be
    served while this runs (``ekc.bundle.serve.serve_bundle``).
    """
    started = time.monotonic()
    build = build_dir.resolve()
    manifest = load_manifest(build)
    hosts = select_hosts(manifest, limit)
    check_roles(manifest)
    with tempfile.TemporaryDirectory(prefix="ekc-ansible-") as tmp:
        work = Path(tmp)
        events = work / "events.jsonl"
        env = {**os.environ, "ANSIBLE_CONFIG": str(write_config(work, known_hosts)),
               "EKC_ANSIBLE_EVENTS": str(events), "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}
        argv = playbook_argv(build, key_file, [h.name for h in hosts] if limit else [], dry_run=dry_run)
        try:
            done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO_ROOT, check=False)
        finally:
            _close_ssh_masters(work / "cp")
        recorded = read_events(events)
    recaps = parse_recap(done.stdout)
    results = tuple(
        host_result(h.name, recaps.get(h.name), recorded, host_work(h).packages, dry_run=dry_run,
                    fallback=_tail(done.stderr or done.stdout))
        for h in hosts
    )
    return ApplyResult(ENGINE, dry_run, results, round(time.monotonic() - started, 1),
                       log=done.stdout + done.stderr)


def check_roles(manifest: BuildManifest) -> None:
    """Refuse a build whose files belong to a component that has no role: Ansible would skip them."""
    components = sorted({f.component for h in manifest.hosts for f in h.files})
    missing = [c for c in components if not (ROLES_DIR / COMPONENT_ROLES.get(c, c) / "tasks").is_dir()]
    if missing:
        roles = ", ".join(f"roles/{COMPONENT_ROLES.get(c, c)}" for c in missing)
        raise EngineError(f"the build has files of components without an Ansible role ({roles}): "
                          "apply it with the pyinfra engine, or add the roles")


def ansible_playbook() -> str:
    """The ``ansible-playbook`` of the environment ekc runs in (the virtualenv's, beside its python)."""
    beside = Path(sys.executable).parent / "ansible-playbook"
    found = str(beside) if beside.is_file() else shutil.which("ansible-playbook")
    if found is None:
        raise EngineError("ansible-playbook not found: install ansible-core in ekc's virtualenv")
    return found


def playbook_argv(build: Path, key_file: Path, limit: Sequence[str], *, dry_run: bool) -> list[str]:
    """The ``ansible-playbook`` command line for one apply."""
    argv = [ansible_playbook(), "-i", str(build / INVENTORY_NAME), "--private-key", str(key_file),
            "-e", json.dumps({"ekc_build_dir": str(build)})]
    if limit:
        argv += ["--limit", ",".join(limit)]
    if dry_run:
        argv += ["--check", "--diff"]
    return [*argv, str(PLAYBOOK)]


def write_config(work: Path, known_hosts: Path | None) -> Path:
    """An ``ansible.cfg`` for this apply only: ekc's roles and callback, pipelining, python3, no retry files."""
    checking = known_hosts is not None
    hosts_file = str(known_hosts) if known_hosts is not None else "/dev/null"
    ssh_args = (f"-o ControlMaster=auto -o ControlPersist=60s -o IdentitiesOnly=yes -o BatchMode=yes "
                f"-o UserKnownHostsFile={hosts_file} -o StrictHostKeyChecking={'accept-new' if checking else 'no'}")
    (work / "cp").mkdir(mode=0o700)
    text = "\n".join([
        "[defaults]",
        f"host_key_checking = {checking}",
        "retry_files_enabled = False",
        "interpreter_python = /usr/bin/python3",
        f"roles_path = {ROLES_DIR}",
        f"callback_plugins = {CALLBACK_DIR}",
        "callbacks_enabled = ekc_events",
        "stdout_callback = default",
        "nocolor = True",
        "forks = 20",
        "gathering = explicit",
        f"local_tmp = {work / 'local'}",
        "",
        "[ssh_connection]",
        "pipelining = True",
        f"ssh_args = {ssh_args}",
        f"control_path = {work / 'cp'}/%%C",
        "",
    ])
    path = work / "ansible.cfg"
    path.write_text(text, encoding="utf-8")
    return path


def _close_ssh_masters(control_dir: Path) -> None:
    """Stop the SSH connection masters this apply started (they would otherwise linger for a minute)."""
    if not control_dir.is_dir():
        return
    for socket_path in control_dir.iterdir():
        subprocess.run(["ssh", "-o", f"ControlPath={socket_path}", "-O", "exit", "ekc-apply"],
                       capture_output=True, check=False, timeout=10)


def parse_recap(output: str) -> dict[str, Recap]:
    """The play recap's counts per host."""
    return {
        m["host"]: Recap(int(m["ok"]), int(m["changed"]), int(m["unreachable"]), int(m["failed"]))
        for m in _RECAP.finditer(output)
    }


def read_events(path: Path) -> list[dict[str, Any]]:
    """The callback's events, in the order they happened."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _labels(events: Sequence[dict[str, Any]], tag: str, *, status: str = "ok", changed: bool | None = True,
            action: str | None = None) -> tuple[str, ...]:
    """Unique labels of the events with ``tag`` (and status, changed, module), in order."""
    chosen = [
        str(e["label"]) for e in events
        if tag in e["tags"] and e["status"] == status and e["label"] is not None
        and (changed is None or e["changed"] == changed)
        and (action is None or str(e["action"]).rsplit(".", 1)[-1] == action)
    ]
    return tuple(dict.fromkeys(chosen))


def host_result(name: str, recap: Recap | None, events: Sequence[dict[str, Any]], wanted: Sequence[str], *,
                dry_run: bool, fallback: str) -> HostResult:
    """One host's result from its recap line and its events."""
    mine = [e for e in events if e["host"] == name]
    failure = next((e for e in mine if e["status"] in ("failed", "unreachable")), None)
    error = f"{failure['task']}: {failure['msg'] or failure['stderr'] or failure['status']}" if failure else None
    if recap is None:
        error = error or f"no result from ansible-playbook: {fallback}"
    elif error is None and (recap.failed or recap.unreachable):
        error = "failed (see the log)"
    trigger_module = "debug" if dry_run else "shell"
    return HostResult(
        host=name,
        ok=error is None,
        changes=recap.changed if recap is not None else 0,
        files=_labels(mine, "ekc_file"),
        packages=_packages(mine, wanted, dry_run=dry_run),
        services=_labels(mine, "ekc_service"),
        triggers=_labels(mine, "ekc_trigger", action=trigger_module),
        skipped_triggers=_labels(mine, "ekc_trigger", status="skipped", changed=None, action=trigger_module),
        not_running=_labels(mine, "ekc_not_running", changed=None),
        error=error,
    )


def _packages(events: Sequence[dict[str, Any]], wanted: Sequence[str], *, dry_run: bool) -> tuple[str, ...]:
    """The wanted packages installed (those the apt task was asked for), or in a dry run those that would be."""
    if dry_run:
        return tuple(label.removeprefix("would install ") for label in _labels(events, "ekc_package",
                                                                              action="debug"))
    installs = [e for e in events if "ekc_package" in e["tags"] and e["changed"]
                and str(e["action"]).rsplit(".", 1)[-1] == "apt"]
    asked = {p for e in installs for p in e.get("names", ())}
    return tuple(sorted(asked & set(wanted))) or tuple(
        sorted({p for e in installs for p in newly_installed(e["stdout"], wanted)}))


def _tail(text: str, lines: int = 15) -> str:
    """The last lines of a tool's output, for an error message."""
    return "\n".join(text.strip().splitlines()[-lines:])
