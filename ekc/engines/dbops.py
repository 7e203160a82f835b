"""Database operations over SSH: a base backup now, and a restore of a chosen backup onto a node.

The work itself is done by scripts the render puts on every PostgreSQL node (``postgresql-backup``, the one the
timer runs, and ``postgresql-restore``); this module only picks the nodes, carries a backup between nodes
through the deploy host when the target is not the node that made it, and times each step.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ekc.render.components.dbcluster import is_cluster
from ekc.render.components.postgresql import BACKUP_SCRIPT, RESTORE_SCRIPT
from schemas.region import Node, Region


class DbOpsError(Exception):
    """A backup or restore step failed on a host; the message says which and why."""


LEADER_QUERY = "runuser -u postgres -- psql -X -At -c 'SELECT pg_is_in_recovery()'"


@dataclass(frozen=True)
class Ssh:
    """How to log in to the region's nodes as root."""

    key: Path
    known_hosts: Path

    def argv(self, address: str, command: str) -> list[str]:
        """The ssh command line that runs ``command`` on ``address``."""
        return ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new",
                "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "LogLevel=ERROR",
                "-i", str(self.key), "-o", "IdentitiesOnly=yes", f"root@{address}", command]

    def run(self, node: Node, command: str, timeout: float = 3600) -> str:
        """Run ``command`` on ``node``; its stdout, or :class:`DbOpsError` with its stderr."""
        done = subprocess.run(self.argv(node.address, command), capture_output=True, text=True,
                              timeout=timeout, check=False)
        if done.returncode != 0:
            why = done.stderr.strip() or done.stdout.strip()
            raise DbOpsError(f"{node.name}: {command.split(maxsplit=1)[0]} failed: {why}")
        return done.stdout


@dataclass(frozen=True)
class Timed:
    """What a step produced and how long it took."""

    value: str
    seconds: float


def primary(region: Region, ssh: Ssh | None = None) -> Node:
    """The node that takes the writes: the only postgresql node, or the current leader of a Patroni cluster
    (asked over ``ssh``: the first member that is not in recovery)."""
    nodes = region.nodes_with("postgresql")
    if not is_cluster(region):
        return nodes[0]
    if ssh is None:
        raise DbOpsError("the leader of a Patroni cluster is found over SSH (no connection given)")
    for node in nodes:
        try:
            answer = ssh.run(node, LEADER_QUERY, timeout=30)
        except (DbOpsError, subprocess.TimeoutExpired):
            continue
        if answer.strip() == "f":
            return node
    names = ", ".join(n.name for n in nodes)
    raise DbOpsError(f"no member of the database cluster ({names}) takes writes: there is no leader now")


def refuse_cluster_restore(region: Region) -> None:
    """A restore stops and replaces one server's data: in a Patroni cluster that is not done yet."""
    if is_cluster(region):
        raise DbOpsError(
            "restoring a Patroni cluster is not supported yet: the cluster's members copy the leader, so a "
            "restore means stopping Patroni on every member and restoring the leader (README, Known limits)"
        )


def database_node(region: Region, name: str | None) -> Node:
    """The postgresql node called ``name`` (default: the primary)."""
    if name is None:
        return primary(region)
    for node in region.nodes_with("postgresql"):
        if node.name == name:
            return node
    names = ", ".join(n.name for n in region.nodes_with("postgresql"))
    raise DbOpsError(f"no postgresql node called {name} (the region has: {names})")


def backup_now(ssh: Ssh, node: Node) -> Timed:
    """A base backup on ``node`` now, with the timer's own script; the backup's name."""
    started = time.monotonic()
    out = ssh.run(node, BACKUP_SCRIPT)
    return Timed(out.strip().splitlines()[-1], time.monotonic() - started)


def latest_backup(ssh: Ssh, node: Node, location: str) -> str:
    """The newest complete backup in ``location`` on ``node``."""
    out = ssh.run(node, f"ls -1 {shlex.quote(location)}/base | grep -v '[.]partial$' | sort | tail -n 1")
    if not out.strip():
        raise DbOpsError(f"{node.name}: no backup in {location}/base (run: deploy.py db backup)")
    return out.strip()


def copy_backup(ssh: Ssh, source: Node, target: Node, location: str, name: str) -> Timed:
    """Stream backup ``name`` and the WAL archive from ``source`` to ``target`` through the deploy host."""
    started = time.monotonic()
    loc = shlex.quote(location)
    send = ssh.argv(source.address, f"tar -C {loc} -cf - base/{shlex.quote(name)} wal")
    receive = ssh.argv(target.address, f"install -d -o postgres -g postgres -m 0700 {loc} && tar -C {loc} -xpf -")
    with subprocess.Popen(send, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as sender:
        done = subprocess.run(receive, stdin=sender.stdout, capture_output=True, check=False)
        sender.wait()
        if sender.returncode != 0 or done.returncode != 0:
            err = (sender.stderr.read() if sender.stderr else b"") + done.stderr
            raise DbOpsError(f"copying {name} from {source.name} to {target.name}: {err.decode().strip()}")
    return Timed(name, time.monotonic() - started)


def restore(ssh: Ssh, node: Node, name: str) -> Timed:
    """Restore backup ``name`` (already in the node's backup location) and replay the archived WAL."""
    started = time.monotonic()
    ssh.run(node, f"{RESTORE_SCRIPT} {shlex.quote(name)}")
    return Timed(name, time.monotonic() - started)
