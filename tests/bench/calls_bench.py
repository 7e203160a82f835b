"""``make bench`` (calls part): how many calls one lab Asterisk carries.

Runs on ``callstestbench``: ``inventories/example`` on 10.237.20.0/24 (operators 10.237.210.0/24) with one
server, pbx1, carrying the asterisk role alone (the lab gets exactly the render of that spec), 60 more operators
in the health department and no wrap-up time there (so operators are not the limit). Then:

Load through IVR -> queue -> operator -> rating: every health operator registered (one SIPp answers for
    all of them), the carrier places calls at a rising rate for a fixed time per step, and the ramp stops at
    the first step with failed or timed-out calls. Each step prints the calls, the peak of concurrent calls,
    the node's CPU (its cgroup's ``cpu.stat``) and SIPp's own CPU, and the bottleneck is named from them.

No asserts on timings: figures only. Needs root and the lab's tools.
"""

from __future__ import annotations

import logging
import os
import resource
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ekc.lab.call import PHONE_PORT, CallPlan, Timing, call_plan, caller_number, carrier_params
from ekc.lab.model import preflight
from ekc.lab.nodes import node_cgroups
from ekc.lab.region import lab_call_network
from ekc.lab.sipp import PCAP_DIR, SippResult, SippRun, SippServer, authentication, run_sipp
from tests.lab.test_calls import asterisk_alone
from tests.support.labregion import AppliedRegion, applied_region

NAME = "callstestbench"
PREFIX = "10.237.2"
NODE = "pbx1"
EXTRA_OPERATORS = 60
STEP_S = 30
RATES = (0.5, 1, 2, 3, 4, 6, 8, 10, 12, 16)
TIMING = Timing(ivr_wait_ms=1000, rating_wait_ms=1000, press_gap_ms=1500, rating_presses=10, talk_ms=4000,
                end_wait_ms=10000)


def bench_spec(text: str) -> str:
    """pbx1 alone with the asterisk role; health gets many operators and no wrap-up time."""
    text = asterisk_alone(text, f"{PREFIX}0.11")
    text = text.replace('queue: {number: "602", strategy: leastrecent,',
                        'queue: {number: "602", strategy: leastrecent, wrapup_s: 0,')
    extra = "".join(f'    - {{extension: "{2100 + i}", name: Оператор {i}, departments: [health]}}\n'
                    for i in range(1, EXTRA_OPERATORS + 1))
    return text.replace("  operators:\n", "  operators:\n" + extra)


@dataclass(frozen=True)
class Step:
    """One step of the ramp."""

    rate: float
    result: SippResult
    node_cpu_pct: float
    sipp_cpu_pct: float
    peak_calls: int
    seconds: float
    events: dict[str, int]

    @property
    def clean(self) -> bool:
        """Every call of the step succeeded and reached an operator, and was rated (queue_log says so)."""
        created = self.result.stats.created
        return (self.result.stats.failed == 0 and self.result.stats.successful >= created > 0
                and self.events.get("CONNECT", 0) >= created and self.events.get("RATING", 0) >= created)


def queue_events(region: AppliedRegion, since: float) -> dict[str, int]:
    """How many of each queue_log event the node wrote since ``since`` (epoch seconds)."""
    text = region.run(NODE, "cat /var/log/asterisk/queue_log").stdout
    counts: dict[str, int] = {}
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) > 4 and fields[0].isdigit() and int(fields[0]) >= since:
            counts[fields[4]] = counts.get(fields[4], 0) + 1
    return counts


def node_cpu_usec(region: AppliedRegion) -> int:
    """The node's CPU time so far (its cgroup's ``usage_usec``)."""
    stat = node_cgroups(region.lab, region.lab.node(NODE))[0] / "cpu.stat"
    for line in stat.read_text(encoding="utf-8").splitlines():
        if line.startswith("usage_usec"):
            return int(line.split()[1])
    return 0


def children_cpu_s() -> float:
    """CPU seconds of this process's finished children (SIPp runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_step(region: AppliedRegion, plan: CallPlan, work: Path, rate: float) -> Step:
    """Calls at ``rate`` per second for ``STEP_S`` seconds, CPU measured around them."""
    calls = max(1, round(rate * STEP_S))
    name = f"load-{rate:g}"
    params = carrier_params(plan.digit, "5", TIMING, work / f"{name}-press")
    rows = tuple((caller_number(time.time_ns() + i * 1_000_000),) for i in range(calls))
    run = SippRun(name, "carrier_call.xml", plan.trunk_peer, 5062, remote=plan.target, service=plan.did, rows=rows,
                  params=params, calls=calls, rate=rate, limit=2000, media_port=16000, timeout_s=STEP_S + 120)
    node_before, sipp_before, started = node_cpu_usec(region), children_cpu_s(), time.perf_counter()
    since = int(time.time())
    result = run_sipp(run, work)
    seconds = time.perf_counter() - started
    node_pct = (node_cpu_usec(region) - node_before) / 1e4 / seconds
    sipp_pct = (children_cpu_s() - sipp_before) * 100 / seconds
    peak = max((int(line.split(";")[13] or 0) for line in _stat_lines(work / f"{name}.stat.csv")), default=0)
    return Step(rate, result, node_pct, sipp_pct, peak, seconds, queue_events(region, since))


def _stat_lines(path: Path) -> list[str]:
    """The data lines of a SIPp statistics file."""
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    return [line for line in lines if line.count(";") > 13 and line.split(";")[13].isdigit()]


def load_figures(region: AppliedRegion, work: Path) -> None:
    """(b) the ramp, stopped at the first step with failures; the bottleneck named."""
    plan = call_plan(region.spec.region, lab_call_network(region.spec), department="health")
    operators = [op.extension for op in region.spec.region.telephony.operators
                 if "health" in [d if isinstance(d, str) else d.department for d in op.departments]]
    rows = tuple((ext, authentication(ext, region.secrets.get("sip", ext))) for ext in operators)
    registered = run_sipp(SippRun("register-all", "register.xml", plan.operator_address, PHONE_PORT,
                                  remote=plan.target, rows=rows, calls=len(rows), rate=20,
                                  params={"expires": "3600"}, timeout_s=60), work)
    print(f"operators registered: {sum(o.startswith('registered') for o in registered.outcomes)} of {len(rows)}")
    phones = SippServer(SippRun("phones", "operator_uas.xml", plan.operator_address, PHONE_PORT, calls=None,
                                params={"answer_ms": "200", "talk_ms": str(TIMING.talk_ms),
                                        "audio_pcap": str(PCAP_DIR / "g711a.pcap")}, media_port=17000,
                                timeout_s=None), work)
    last_clean: Step | None = None
    try:
        for rate in RATES:
            step = run_step(region, plan, work, rate)
            stats = step.result.stats
            print(f"rate {rate:>4g}/s: {stats.successful:4d} ok {stats.failed:3d} failed of {stats.created:4d};"
                  f" peak {step.peak_calls:3d} concurrent calls; node CPU {step.node_cpu_pct:5.0f}%,"
                  f" SIPp CPU {step.sipp_cpu_pct:4.0f}% (of one core); {step.seconds:.0f} s;"
                  f" queue_log CONNECT {step.events.get('CONNECT', 0)}, RATING {step.events.get('RATING', 0)},"
                  f" ABANDON {step.events.get('ABANDON', 0)}")
            if not step.clean:
                print(f"  first failures at {rate:g}/s: {step.result.describe()}")
                print(f"  bottleneck: {bottleneck(step)}")
                break
            last_clean = step
        else:
            print("  no failure up to the last rate of the ramp")
    finally:
        phones.stop()
    if last_clean is not None:
        print(f"sustained: {last_clean.rate:g} calls/s with up to {last_clean.peak_calls} concurrent calls"
              f" through IVR, queue and operator")


def bottleneck(step: Step) -> str:
    """Which side ran out, judged from the CPU figures of the failing step (2 cores on this machine)."""
    cores = os.cpu_count() or 1
    if step.node_cpu_pct > 80 * cores * 0.8:
        return f"the Asterisk node's CPU ({step.node_cpu_pct:.0f}% of {cores * 100}%)"
    if step.sipp_cpu_pct > 80:
        return f"SIPp itself ({step.sipp_cpu_pct:.0f}% of one core: it plays every call's RTP)"
    if step.node_cpu_pct + step.sipp_cpu_pct > 80 * cores:
        return (f"the machine's {cores} cores shared by the node ({step.node_cpu_pct:.0f}%) and SIPp"
                f" ({step.sipp_cpu_pct:.0f}%)")
    return "not CPU: see the failures above (queue waits, timeouts, RTP port range)"


def main() -> None:
    """Print the call figures."""
    logging.getLogger("pyinfra").setLevel(logging.ERROR)
    missing = preflight()
    if missing:
        print("calls bench skipped: " + "; ".join(missing))
        return
    root = Path("build") / "bench" / NAME
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    started = time.perf_counter()
    with applied_region(root, NAME, source="example", prefix=PREFIX, edit=bench_spec) as region:
        setup_s = time.perf_counter() - started
        print(f"calls bench lab: secrets, render, bundle, lab and first apply {setup_s:.0f} s")
        load_figures(region, root / "sipp")


if __name__ == "__main__":
    main()
