"""Apply's steps for nodes leaving service, done over SSH around the engine's run, and what the live plan reads
of them.

The render makes a drained node stop taking work, and leaves a node marked absent out; what it cannot do is act
in the right order on a running cluster, or touch a host that is in no render:

- before the engine: a database node that leaves (drained or absent) and leads the Patroni cluster hands the
  leader over to a healthy replica that stays (``patronictl switchover``), so that stopping its Patroni is a
  switchover, not a failover;
- after the engine (the dispatcher and the clients' host lists no longer name it): on a node marked absent, the
  services its components ran are stopped and disabled. Its files and data stay on its disk.

The live plan reads the absent nodes' units (:func:`plan_departures`) and the calls in progress on Asterisk
nodes that leave (:func:`live_calls`), so that the plan says what the apply will stop and drop.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from ekc.engines.common import HostResult
from ekc.engines.live import observe_script, parse_observation
from ekc.engines.ssh import LiveError, SshAccess, run_on_host
from ekc.render.components.dbcluster import PATRONI_CONFIG, is_cluster, scope
from ekc.render.lifecycle import Departure, lifecycle_lines
from ekc.render.manifest import HostManifest, ServiceState
from ekc.render.plan import HostPlan, Plan, ServiceChange
from ekc.render.pool import Placement
from schemas.region import Node, Region

CALLS_COMMAND = "asterisk -rx 'core show channels count'"
_CALLS = re.compile(r"^(\d+) active calls?$", re.M)
PATRONI_LIST = f"patronictl -c {PATRONI_CONFIG} list -f json"
SWITCHOVER_WAIT_S = 60
HEALTHY = ("streaming", "running")

Run = Callable[[str, str, str], str]  # run a script on (host, address); its output, or LiveError


class LifecycleError(LiveError):
    """A step of a node's departure failed: the message says which node and why; nothing after it was done."""


# --- calls in progress -------------------------------------------------------------------------------------------


def parse_calls(text: str) -> int | None:
    """The number of calls in ``core show channels count``'s answer (``3 active calls``), None if absent."""
    found = _CALLS.search(text)
    return int(found.group(1)) if found else None


def leaving_asterisk_nodes(region: Region) -> list[Node]:
    """The Asterisk nodes that are drained or marked absent."""
    return [n for n in region.nodes_with("asterisk") if n.state != "active"]


def live_calls(region: Region, run: Run) -> dict[str, int | None]:
    """Calls in progress on every Asterisk node that leaves service (None where they could not be read)."""
    counts: dict[str, int | None] = {}
    for node in leaving_asterisk_nodes(region):
        try:
            counts[node.name] = parse_calls(run(node.name, node.address, f"{CALLS_COMMAND} 2>/dev/null || true"))
        except LiveError:
            counts[node.name] = None
    return counts


def ssh_runner(access: SshAccess) -> Run:
    """A :data:`Run` over the apply's SSH access."""
    return lambda host, address, script: run_on_host(access, host, address, script, timeout=120)


# --- the absent nodes' services ----------------------------------------------------------------------------------


def departing_host(departure: Departure) -> HostManifest:
    """The absent node as the live plan observes it: only its services, each wanted stopped and disabled."""
    return HostManifest(name=departure.name, address=departure.address, roles=departure.roles, packages=(),
                        files=(), services=tuple(ServiceState(s, enabled=False, running=False)
                                                 for s in departure.services))


def departure_plan(departure: Departure, answer: str) -> HostPlan:
    """The absent node's plan from its units' answer: each unit still enabled or running is to be stopped."""
    host = departing_host(departure)
    seen = parse_observation(host, answer)
    changes = tuple(
        ServiceChange(host.name, unit.name, "changed", ServiceState(unit.name, unit.is_enabled, unit.is_running),
                      ServiceState(unit.name, enabled=False, running=False))
        for unit in seen.units if unit.found and (unit.is_enabled or unit.is_running))
    return HostPlan(host=host.name, address=host.address, services=changes, departing=True)


def plan_departures(departing: Sequence[Departure], run: Run) -> tuple[HostPlan, ...]:
    """The plan of every absent node; one that cannot be reached has nothing to stop, and the plan says so."""
    plans = []
    for departure in departing:
        script = observe_script(departing_host(departure))
        try:
            plans.append(departure_plan(departure, run(departure.name, departure.address, script)))
        except LiveError as exc:
            plans.append(HostPlan(host=departure.name, address=departure.address, departing=True,
                                  notes=(f"not reachable ({exc}): nothing is stopped there",)))
    return tuple(plans)


def stop_script(plan: HostPlan) -> str:
    """Stop and disable the units the plan of an absent node names."""
    units = " ".join(shlex.quote(change.service) for change in plan.services)
    return f"set -e\nsystemctl disable --now {units}\n"


def stop_departures(plans: Sequence[HostPlan], run: Run) -> tuple[HostResult, ...]:
    """Stop and disable the services of every absent node that still runs some; one result per such node."""
    results = []
    for plan in plans:
        if not plan.services:
            continue
        started = time.monotonic()
        try:
            run(plan.host, plan.address, stop_script(plan))
        except LiveError as exc:
            results.append(HostResult(plan.host, ok=False, changes=0, error=f"stopping its services: {exc}"))
            continue
        results.append(HostResult(plan.host, ok=True, changes=len(plan.services),
                                  services=tuple(c.service for c in plan.services),
                                  seconds=round(time.monotonic() - started, 2)))
    return tuple(results)


# --- the database leader -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Switchover:
    """The leader leaves the cluster: ``patronictl switchover`` from ``leader`` to ``candidate``."""

    leader: str
    candidate: str

    def command(self, region: Region) -> str:
        """The switchover, run on a member (patronictl reads the REST API's login from Patroni's file)."""
        return (f"patronictl -c {PATRONI_CONFIG} switchover {shlex.quote(scope(region))} "
                f"--leader {shlex.quote(self.leader)} --candidate {shlex.quote(self.candidate)} --force")


def choose_switchover(region: Region, members_json: str) -> Switchover | None:
    """The switchover the cluster needs before a leaving node's Patroni stops: None when the leader stays.

    ``members_json`` is ``patronictl list -f json``. The candidate is a node of the spec that stays active and
    whose member streams from the leader: the synchronous standby first (in synchronous mode Patroni hands the
    leader only to it), else the first in the spec's order; with none, the apply stops (a failover would follow).
    """
    members = {m.get("Member"): m for m in json.loads(members_json) if isinstance(m, dict)}
    leader = next((name for name, m in members.items() if m.get("Role") == "Leader"), None)
    leaving = {n.name for n in region.nodes_with("postgresql") if n.state != "active"}
    if leader is None or leader not in leaving:
        return None
    healthy = [n.name for n in region.active_nodes_with("postgresql")
               if (m := members.get(n.name)) is not None and m.get("State") in HEALTHY and m.get("Role") != "Leader"]
    if healthy:
        synchronous = [name for name in healthy if members[name].get("Role") == "Sync Standby"]
        return Switchover(leader, (synchronous or healthy)[0])
    raise LifecycleError(f"{leader} leads the database cluster and leaves it, but no member that stays active is "
                         "healthy (streaming) to take over: nothing was changed; repair a replica first")


def hand_over_leader(region: Region, run: Run, wait_s: float = SWITCHOVER_WAIT_S) -> str | None:
    """Before the engine: switch the Patroni leader over when it leaves; a line saying what was done, or None."""
    if not is_cluster(region.without_absent()) or all(n.state == "active" for n in region.nodes_with("postgresql")):
        return None
    asked = region.active_nodes_with("postgresql")[0]
    switchover = choose_switchover(region, run(asked.name, asked.address, PATRONI_LIST))
    if switchover is None:
        return None
    run(asked.name, asked.address, switchover.command(region))
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            current = choose_switchover(region, run(asked.name, asked.address, PATRONI_LIST))
        except LiveError:  # mid-switchover no member may stream yet, or patronictl may not answer: ask again
            current = switchover
        if current is None:
            return f"database: the leader moved from {switchover.leader} to {switchover.candidate} (switchover)"
        time.sleep(2)
    raise LifecycleError(f"the switchover from {switchover.leader} to {switchover.candidate} did not finish "
                         f"within {wait_s:.0f} s: nothing else was applied; see patronictl list")


# --- the plan ----------------------------------------------------------------------------------------------------


def lifecycle_plan(plan: Plan, region: Region, after: Mapping[str, Placement], before: Mapping[str, Placement] | None,
                   departing: Sequence[Departure], run: Run | None) -> Plan:
    """``plan`` with its lifecycle lines and, with a way to the hosts (``run``), the absent nodes' own plans and
    the calls in progress on the Asterisk nodes that leave; without one (a plan against an older build), the
    lines alone."""
    calls = live_calls(region, run) if run is not None else None
    hosts = plan.hosts + (plan_departures(departing, run) if run is not None else ())
    return replace(plan, hosts=hosts, lifecycle=lifecycle_lines(region, before, after, departing, calls))
