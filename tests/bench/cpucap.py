"""A fixed CPU share for lab nodes, so that nodes sharing one machine stand for separate servers of one size.

Every lab node runs on the same cores as the others, SIPp and the deploy host: uncapped, one node alone takes
what three would share, and a pool of N nodes can never show N times the capacity of one. Capped to the same
share each (a quota per period, CFS bandwidth), N nodes have N times the CPU of one, as N servers would.

The cap goes where the host offers it: ``cpu.max`` in the node's cgroup v2 when the cpu controller is enabled
there, else a cgroup of the v1 cpu controller of its own (``/sys/fs/cgroup/cpu/ekc-bench/<machine>``, on a
hybrid host), into which every process of the node is moved; processes the node starts later inherit it.
Everything is undone when the block ends: the quota lifted, or the processes moved back where they were and
the cgroups removed.

A quota (either version) governs normal tasks only, and the v1 cpu controller refuses a realtime task into a
group without realtime time of its own. Debian runs Asterisk realtime (``asterisk -p``, SCHED_RR): left so, it
would not be capped at all. Every realtime thread of a capped node is therefore made a normal one for the
block (threads it creates meanwhile inherit that) and given its policy back at the end; a process that still
cannot be moved is an error, not a silent gap in the cap.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ekc.lab.model import Lab, machine_name
from ekc.lab.nodes import node_cgroups, node_pids

V1_CPU = Path("/sys/fs/cgroup/cpu")
V1_GROUP = "ekc-bench"
PERIOD_US = 100_000
SWEEPS = 5  # moves of a node's processes: a process forked during one is moved by the next


class CapError(RuntimeError):
    """The host offers no way to cap a node's CPU; the message says why."""


@dataclass(frozen=True)
class NodeCap:
    """Where one node's cap is: the cgroup whose ``cpu.stat`` counts its throttled periods."""

    node: str
    group: Path
    how: str  # "cgroup v2 cpu.max" or "cgroup v1 cpu controller"
    origin: Path | None = None  # v1: the cpu cgroup the node's processes came from, where they go back
    realtime: tuple[tuple[int, int, int], ...] = field(default=())  # (thread, policy, priority) made normal


def throttling(cap: NodeCap) -> tuple[int, int]:
    """(periods, throttled periods) of the capped node so far, from its cgroup's ``cpu.stat``."""
    stat = dict(line.split() for line in (cap.group / "cpu.stat").read_text(encoding="utf-8").splitlines())
    return int(stat.get("nr_periods", 0)), int(stat.get("nr_throttled", 0))


@contextlib.contextmanager
def capped(lab: Lab, nodes: Sequence[str], share_pct: float) -> Iterator[list[NodeCap]]:
    """Each of ``nodes`` capped to ``share_pct`` percent of one core for the block; raises CapError when the
    host has no cpu controller to do it with."""
    quota = round(PERIOD_US * share_pct / 100)
    caps: list[NodeCap] = []
    try:
        for node in nodes:
            caps.append(_cap(lab, node, quota))
        yield caps
    finally:
        for cap in reversed(caps):
            _uncap(cap)
        with contextlib.suppress(OSError):
            (V1_CPU / V1_GROUP).rmdir()


def _cap(lab: Lab, node: str, quota_us: int) -> NodeCap:
    """Cap one node: its own cgroup v2's ``cpu.max`` where there is one, else a v1 cpu cgroup."""
    unified = node_cgroups(lab, lab.node(node))[0]
    realtime = _normal_scheduling(node_pids(lab, lab.node(node)))
    if (unified / "cpu.max").is_file():
        (unified / "cpu.max").write_text(f"{quota_us} {PERIOD_US}\n", encoding="utf-8")
        return NodeCap(node, unified, "cgroup v2 cpu.max", realtime=realtime)
    if not (V1_CPU / "cpu.cfs_quota_us").is_file():
        raise CapError(f"{unified} has no cpu.max (the cpu controller is not enabled for cgroup v2) and the host"
                       f" has no cgroup v1 cpu controller at {V1_CPU}")
    group = V1_CPU / V1_GROUP / machine_name(lab.region, node)
    group.mkdir(parents=True, exist_ok=True)
    (group / "cpu.cfs_period_us").write_text(f"{PERIOD_US}\n", encoding="utf-8")
    (group / "cpu.cfs_quota_us").write_text(f"{quota_us}\n", encoding="utf-8")
    pids = node_pids(lab, lab.node(node))
    origin = _v1_cpu_group(min(pids)) if pids else V1_CPU
    for _sweep in range(SWEEPS):
        realtime += _normal_scheduling(pids - _pids(group))  # started since the last look
        if not _move(pids - _pids(group), group):
            break
        pids = node_pids(lab, lab.node(node))
    cap = NodeCap(node, group, "cgroup v1 cpu controller", origin, realtime)
    inside = {pid for procs in group.rglob("cgroup.procs") for pid in _pids(procs.parent)}
    left = {pid for pid in node_pids(lab, lab.node(node)) - inside if Path(f"/proc/{pid}").exists()}
    if left:
        _uncap(cap)
        raise CapError(f"{node}: processes {sorted(left)} could not be moved into {group}")
    return cap


def _uncap(cap: NodeCap) -> None:
    """Lift the cap: the v2 quota set to ``max``, or the node's processes moved back where they came from."""
    if cap.origin is None:
        (cap.group / "cpu.max").write_text(f"max {PERIOD_US}\n", encoding="utf-8")
    else:
        for _sweep in range(SWEEPS):
            if not _move(_pids(cap.group), cap.origin):
                break
        with contextlib.suppress(OSError):
            cap.group.rmdir()
    for thread, policy, priority in cap.realtime:
        with contextlib.suppress(OSError):  # gone meanwhile
            os.sched_setscheduler(thread, policy, os.sched_param(priority))


def _normal_scheduling(pids: set[int]) -> tuple[tuple[int, int, int], ...]:
    """Make every realtime thread of ``pids`` a normal one: (thread, policy, priority) of each changed."""
    changed = []
    for pid in sorted(pids):
        try:
            threads = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            continue
        for thread in threads:
            try:
                policy = os.sched_getscheduler(thread)
                if policy in (os.SCHED_FIFO, os.SCHED_RR):
                    priority = os.sched_getparam(thread).sched_priority
                    os.sched_setscheduler(thread, os.SCHED_OTHER, os.sched_param(0))
                    changed.append((thread, policy, priority))
            except OSError:
                continue
    return tuple(changed)


def _v1_cpu_group(pid: int) -> Path:
    """The v1 cpu cgroup of a process (from ``/proc/<pid>/cgroup``), the hierarchy's root if it says none."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text(encoding="utf-8").splitlines()
    except OSError:  # gone meanwhile
        return V1_CPU
    for line in lines:
        _id, controllers, path = line.split(":", 2)
        if "cpu" in controllers.split(","):
            return V1_CPU / path.lstrip("/")
    return V1_CPU


def _pids(group: Path) -> set[int]:
    """The processes in one cgroup (not below it)."""
    try:
        return {int(p) for p in (group / "cgroup.procs").read_text(encoding="utf-8").split()}
    except OSError:
        return set()


def _move(pids: set[int], group: Path) -> int:
    """Move ``pids`` (every thread of each) into ``group``; how many were moved (those gone meanwhile are not)."""
    moved = 0
    for pid in sorted(pids):
        try:
            (group / "cgroup.procs").write_text(f"{pid}\n", encoding="utf-8")
        except OSError:
            continue
        moved += 1
    return moved
