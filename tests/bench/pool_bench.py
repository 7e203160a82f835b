"""``make bench`` (pool part): how the call load grows with the Asterisk nodes behind the SIP edge.

Runs on ``poolbench``: ``inventories/ha`` on 10.251.0.0/24 (operators 10.251.10.0/24) with its two proxies and
one, two or three Asterisk nodes only (no database, CRM or monitoring node), 120 more operators in each of four
departments (social, health, housing, transport: info rings all its members at once and is left out), no wrap-up time
there, and every department open around the clock. SIPp on the deploy host plays four carriers, one per
department, each pressing its department's IVR digit, and one phone that answers for every added operator;
all of them talk to the edge's virtual address only.

Each pool size gets a lab of its own, made with that many Asterisk nodes (about 90 s each), so that no size
inherits what the ramp to failure of the one before left (README, known limits). The proxies
spread trunk calls over every node's IVR, and an IVR redirects a call for a department it is not the primary of
to that department's primary (a 302 through the edge, before any answer: the IVR's node is then out of the
call), so the rates of the carriers are set for each node to be the primary of an equal share of the calls.
Before each ramp every added operator is a queue member available on its primary.

The machine has 2 cores for everything: nodes, SIPp and the deploy host. Each Asterisk node is capped to the same
share of one core (``tests.bench.cpucap``), so that N nodes have N times the CPU of one, as separate servers
would; the proxies are not capped. The ramp (``tests.bench.callload``, shared with calls_bench) raises the
total rate for a fixed time per step and stops at the first step that is not clean. Printed for 1, 2 and 3
nodes: the highest clean rate, its peak of concurrent calls, each node's CPU and how often its cap held it
back, and the ratios to one node.

No asserts on timings: figures only. Needs root and the lab's tools.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from ekc.engines.lifecycle import CALLS_COMMAND, parse_calls
from ekc.lab.call import CallPlan, call_plan
from ekc.lab.region import lab_call_network
from ekc.spec.load import LoadedSpec, load_spec
from tests.bench.callload import Load, Step, answering_phones, bench_root, ramp, register_phones, run_step
from tests.bench.cpucap import CapError, NodeCap, capped, throttling
from tests.support.labregion import AppliedRegion, applied_region, edge_and_asterisk_only

NAME = "poolbench"
PREFIX = "10.251."
POOL = ("pbx1", "pbx2", "pbx3")
PROXIES = ("edge1", "edge2")
DEPARTMENTS = ("social", "health", "housing", "transport")
# Per department: more than its calls in progress at the pool's highest clean rate (a third of 20 calls a second
# for about 13 s each), so that the operators are never what runs out.
EXTRA_OPERATORS = 120
CAP_PCT = 30.0  # of one core, for every Asterisk node: three of them and SIPp still fit in the machine's two
STEP_S = 15
RATES = (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 18, 20, 22, 25, 28)
MEMBERS_WAIT_S = 90
LEFT_WAIT_S = 300  # how long the calls an overload left are watched as they end
# The pool sizes measured, each in a lab of its own (EKC_POOL_SIZES, e.g. "2" for two nodes only).
SIZES = tuple(int(n) for n in os.environ.get("EKC_POOL_SIZES", "3,2,1").split(","))
# The phones all run on the deploy host's one address, as many real phones do behind one NAT address: the
# spec's flood limit for one source is raised to what the bench's highest rate sends (a call's phone side is an
# INVITE answered and a BYE or an ACK sent, a registration two REGISTERs), as a region would for such an office.
FLOOD_PER_SOURCE = 400
REGISTER_RATE = 8  # two REGISTERs each (the challenge, then the answer): under the proxies' limit of 20 a second
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # the colours of ``asterisk -rx`` output, around a member's state


def bench_spec(text: str, nodes: int = len(POOL)) -> str:
    """The proxies and ``nodes`` Asterisk nodes; every department open around the clock (the figures do not
    depend on the hour), each benched one without wrap-up time and with EXTRA_OPERATORS operators of its own."""
    text = edge_and_asterisk_only(text, nodes).replace("hours: weekdays-08-20", "hours: always")
    text = re.sub(r"edge: \{virtual_address: ([0-9.]+)\}",
                  rf"edge: {{virtual_address: \1, flood_per_source: {FLOOD_PER_SOURCE}}}", text, count=1)
    assert f"flood_per_source: {FLOOD_PER_SOURCE}" in text, "inventories/ha has no edge in the form the bench edits"
    for number in range(len(DEPARTMENTS)):
        text = _without_wrapup(text, f"60{number + 1}")
    extra = "".join(f'    - {{extension: "{ext}", name: Оператор {department} {i}, departments: [{department}]}}\n'
                    for department, extensions in bench_operators().items() for i, ext in enumerate(extensions, 1))
    return text.replace("  operators:\n", "  operators:\n" + extra)


def _without_wrapup(text: str, number: str) -> str:
    """The queue ``number``'s flow mapping with ``wrapup_s: 0`` in place of what it had."""
    start = text.index(f'queue: {{number: "{number}",')
    end = text.index("}\n", start) + 1
    queue = re.sub(r",\s*wrapup_s: \d+(?=[,}])", "", text[start:end])
    queue = queue.replace(f'{{number: "{number}",', f'{{number: "{number}", wrapup_s: 0,', 1)
    return text[:start] + queue + text[end:]


def bench_operators() -> dict[str, list[str]]:
    """The extensions added to each benched department (2101..., 200 apart per department)."""
    return {department: [str(2101 + 200 * at + i) for i in range(EXTRA_OPERATORS)]
            for at, department in enumerate(DEPARTMENTS)}


@dataclass(frozen=True)
class PoolFigures:
    """What the ramp found for a pool of ``nodes``: the last clean step, the failing one and its throttling."""

    nodes: tuple[str, ...]
    capped: bool
    last_clean: Step | None
    failing: Step | None
    seen: dict[str, str]  # at the failing (else the last) step: each node's throttled periods, the pike drops


def loads(spec: LoadedSpec) -> list[Load]:
    """One carrier per benched department, its share set so that every primary gets the same load."""
    plans = [call_plan(spec.region, lab_call_network(spec), department=d) for d in DEPARTMENTS]
    primaries = {plan.node for plan in plans}
    per_node = {node: sum(plan.node == node for plan in plans) for node in primaries}
    return [Load(plan, 1 / len(primaries) / per_node[plan.node]) for plan in plans]


def wait_members(region: AppliedRegion, plans: list[CallPlan], timeout: float = MEMBERS_WAIT_S) -> tuple[bool, str]:
    """Wait until every added operator is a member not in use in its queue on the department's primary
    (the node follows the phones' registrations at the proxies): whether all are, and how many per department."""
    operators = bench_operators()
    deadline = time.monotonic() + timeout
    while True:
        counts = {plan.department: _available(region, plan, operators[plan.department]) for plan in plans}
        complete = all(counts[d] == len(operators[d]) for d in counts)
        if complete or time.monotonic() > deadline:
            return complete, ", ".join(f"{p.department} {counts[p.department]}/{len(operators[p.department])}"
                                       f" on {p.node}" for p in plans)
        time.sleep(2)


def _available(region: AppliedRegion, plan: CallPlan, extensions: list[str]) -> int:
    """How many of ``extensions`` ``queue show`` lists as members of the plan's queue that are not in use: a
    state the node set from a registration (a member whose state was never set is Unknown, which a queue
    rings too, and which proves nothing)."""
    shown = ANSI.sub("", region.run(plan.node, f"asterisk -rx 'queue show {plan.department}'").stdout).splitlines()
    wanted = {f"PJSIP/{extension}@" for extension in extensions}
    return sum(1 for line in shown if "(Not in use)" in line and any(w in line for w in wanted))


def pool_figures(region: AppliedRegion, nodes: tuple[str, ...], work: Path) -> PoolFigures:
    """Wait for the members (registering the operators when they are not all there), cap the nodes and ramp
    the pool of ``nodes``."""
    carriers = loads(load_spec(region.region_dir))
    print("carriers: " + ", ".join(f"{c.plan.department} (key {c.plan.digit}, primary {c.plan.node})"
                                   f" {c.share:.0%}" for c in carriers))
    plans = [c.plan for c in carriers]
    complete, members = wait_members(region, plans, timeout=10)
    if not complete:
        extensions = [ext for group in bench_operators().values() for ext in group]
        registered = register_phones(region, plans[0], extensions, work, rate=REGISTER_RATE)
        print(f"operators registered: {registered} of {len(extensions)}")
        complete, members = wait_members(region, plans)
    phones = answering_phones(plans[0], work)
    with contextlib.ExitStack() as stack:
        stack.callback(phones.stop)
        print(f"members available: {members}", flush=True)
        caps = _caps(stack, region, nodes)
        limits = {node: CAP_PCT if caps else 100.0 * (os.cpu_count() or 1) for node in nodes}
        seen: dict[float, dict[str, str]] = {}

        def step_at(rate: float) -> Step:
            before, since = {cap.node: throttling(cap) for cap in caps}, int(time.time())
            step = run_step(region, carriers, (*nodes, *PROXIES), work, rate, STEP_S, phones)
            seen[rate] = {**{f"{c.node} throttled": f"{_share(before[c.node], throttling(c)):.0f}%" for c in caps},
                          **{f"{proxy} pike drops": str(pike_drops(region, proxy, since)) for proxy in PROXIES}}
            return step

        last_clean, failing = ramp(RATES, step_at, limits)
        calls_left(region, nodes)
    shown = failing or last_clean
    return PoolFigures(nodes, bool(caps), last_clean, failing, seen.get(shown.rate, {}) if shown else {})


def calls_left(region: AppliedRegion, nodes: tuple[str, ...]) -> None:
    """The calls still up on each node after the last step, and how long they take to end (at most
    LEFT_WAIT_S): what an overload leaves behind for the load after it."""
    started = time.monotonic()
    counts = {node: parse_calls(region.run(node, CALLS_COMMAND).stdout) for node in nodes}
    print(f"calls up after the last step: {counts}", flush=True)
    while any(counts.values()) and time.monotonic() - started < LEFT_WAIT_S:
        time.sleep(5)
        counts = {node: parse_calls(region.run(node, CALLS_COMMAND).stdout) for node in nodes}
    print(f"calls up {time.monotonic() - started:.0f} s later: {counts}", flush=True)


def pike_drops(region: AppliedRegion, proxy: str, since: int) -> int:
    """Requests the proxy's flood detection dropped since ``since`` (its journal's ``pike: dropping`` lines):
    every phone of the bench shares one address, which real phones do not."""
    found = region.run(proxy, f"journalctl -q --no-pager --since @{since} | grep -c 'pike: dropping'")
    return int(found.stdout.strip() or 0) if found.stdout.strip().isdigit() else 0


def _caps(stack: contextlib.ExitStack, region: AppliedRegion, nodes: tuple[str, ...]) -> list[NodeCap]:
    """Cap the nodes for the rest of the block, or say plainly why they run uncapped."""
    try:
        caps = stack.enter_context(capped(region.lab, nodes, CAP_PCT))
    except CapError as exc:
        print(f"nodes NOT capped: {exc}. Uncapped, the nodes share the machine's {os.cpu_count()} cores with SIPp"
              " and each other: one node alone takes what several would share, so these figures cannot show"
              " how the pool scales")
        return []
    print(f"each Asterisk node capped to {CAP_PCT:g}% of one core ({caps[0].how}) to emulate separate servers")
    return caps


def _share(before: tuple[int, int], after: tuple[int, int]) -> float:
    """Throttled periods in percent of the periods between two ``throttling`` readings."""
    periods = after[0] - before[0]
    return 100.0 * (after[1] - before[1]) / periods if periods else 0.0


def summary(figures: dict[int, PoolFigures]) -> None:
    """The figures per pool size and the ratios to one node."""
    print(f"\npool figures: steps of {STEP_S} s, carriers for {', '.join(DEPARTMENTS)}; IVR -> queue -> operator"
          " -> rating through the edge's virtual address")
    for count, found in sorted(figures.items()):
        cap = f"capped {CAP_PCT:g}% of one core each" if found.capped else "NOT capped"
        step = found.last_clean
        if step is None:
            print(f"  {count} node(s) ({cap}): no clean step")
            continue
        cpu = ", ".join(f"{node} {step.node_cpu_pct[node]:.0f}%" for node in found.nodes)
        seen = ", ".join(f"{what} {value}" for what, value in found.seen.items())
        print(f"  {count} node(s) ({cap}): {step.rate:g} calls/s clean, peak {step.peak_calls} concurrent calls;"
              f" node CPU at that rate {cpu}; at the {'failing' if found.failing else 'last'} step: {seen}")
    one = figures.get(1)
    if one is None or one.last_clean is None:
        return
    for count in (2, 3):
        other = figures.get(count)
        if other is not None and other.last_clean is not None:
            print(f"  {count} nodes / 1 node: {other.last_clean.rate / one.last_clean.rate:.2f}x the rate,"
                  f" {other.last_clean.peak_calls / max(1, one.last_clean.peak_calls):.2f}x the concurrent calls"
                  f" (the IVR's node redirects a call for another node's department: it carries the call only"
                  " while the IVR plays)")


def main() -> None:
    """Print the pool's figures."""
    root = bench_root(NAME, "pool bench")
    if root is None:
        return
    figures: dict[int, PoolFigures] = {}
    for size in SIZES:
        started = time.perf_counter()
        try:
            with applied_region(root / str(size), NAME, source="ha", prefix=PREFIX,
                                edit=lambda text, size=size: bench_spec(text, size)) as region:
                print(f"\npool of {size}: {', '.join(POOL[:size])} (its lab: secrets, render, bundle, lab and first"
                      f" apply {time.perf_counter() - started:.0f} s)")
                figures[size] = pool_figures(region, POOL[:size], root / str(size) / "sipp")
        except Exception as exc:  # the bench's boundary: what was measured is still summed up
            print(f"pool of {size}: no figures: {type(exc).__name__}: {exc}")
    summary(figures)


if __name__ == "__main__":
    main()
