"""``make bench`` (calls part): how many calls one lab Asterisk carries.

Runs on ``callstestbench``: ``inventories/example`` on 10.237.20.0/24 (operators 10.237.210.0/24) with one
server, pbx1, carrying the asterisk role alone (the lab gets exactly the render of that spec), 60 more operators
in the health department and no wrap-up time there (so operators are not the limit). Then:

Load through IVR -> queue -> operator -> rating: every health operator registered (one SIPp answers for
    all of them), the carrier places calls at a rising rate for a fixed time per step, and the ramp stops at
    the first step with failed or timed-out calls. Each step prints the calls, the peak of concurrent calls,
    the node's CPU (its cgroup's ``cpu.stat``) and SIPp's own CPU, and the bottleneck is named from them
    (``tests.bench.callload``, shared with the pool's bench).

No asserts on timings: figures only. Needs root and the lab's tools.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ekc.lab.call import call_plan
from ekc.lab.region import lab_call_network
from tests.bench.callload import Load, answering_phones, bench_root, ramp, register_phones, run_step
from tests.lab.test_calls import asterisk_alone
from tests.support.labregion import AppliedRegion, applied_region

NAME = "callstestbench"
PREFIX = "10.237.2"
NODE = "pbx1"
EXTRA_OPERATORS = 60
STEP_S = 30
RATES = (0.5, 1, 2, 3, 4, 6, 8, 10, 12, 16)


def bench_spec(text: str) -> str:
    """pbx1 alone with the asterisk role; health gets many operators and no wrap-up time."""
    text = asterisk_alone(text, f"{PREFIX}0.11")
    text = text.replace('queue: {number: "602", strategy: leastrecent,',
                        'queue: {number: "602", strategy: leastrecent, wrapup_s: 0,')
    extra = "".join(f'    - {{extension: "{2100 + i}", name: Оператор {i}, departments: [health]}}\n'
                    for i in range(1, EXTRA_OPERATORS + 1))
    return text.replace("  operators:\n", "  operators:\n" + extra)


def load_figures(region: AppliedRegion, work: Path) -> None:
    """(b) the ramp, stopped at the first step with failures; the bottleneck named."""
    plan = call_plan(region.spec.region, lab_call_network(region.spec), department="health")
    operators = [op.extension for op in region.spec.region.telephony.operators
                 if any(skill.department == "health" for skill in op.skills())]
    registered = register_phones(region, plan, operators, work)
    print(f"operators registered: {registered} of {len(operators)}")
    phones = answering_phones(plan, work)
    try:
        last_clean, _ = ramp(RATES, lambda rate: run_step(region, (Load(plan),), (NODE,), work, rate, STEP_S,
                                                           phones), {NODE: 100.0 * (os.cpu_count() or 1)})
    finally:
        phones.stop()
    if last_clean is not None:
        print(f"sustained: {last_clean.rate:g} calls/s with up to {last_clean.peak_calls} concurrent calls"
              f" through IVR, queue and operator")


def main() -> None:
    """Print the call figures."""
    root = bench_root(NAME, "calls bench")
    if root is None:
        return
    started = time.perf_counter()
    with applied_region(root, NAME, source="example", prefix=PREFIX, edit=bench_spec) as region:
        setup_s = time.perf_counter() - started
        print(f"calls bench lab: secrets, render, bundle, lab and first apply {setup_s:.0f} s")
        load_figures(region, root / "sipp")


if __name__ == "__main__":
    main()
