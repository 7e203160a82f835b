"""Call load through a lab region, for the benches: operators' phones, steps of carrier calls, the ramp.

A step places calls at one rate for a fixed time from one or more carriers (a SIPp each, in parallel, each
with its own IVR digit and so its own department) and waits until the last call has ended; it is clean when
every call succeeded, reached an operator and was rated (queue_log's CONNECT and RATING on the nodes that ran
the queues). The ramp raises the rate until the first step that is not clean, and names the bottleneck from
the CPU figures of that step: each node's cgroup (``cpu.stat``) and the SIPp processes on the deploy host.

Shared by calls_bench (one Asterisk node) and pool_bench (the pool behind the SIP edge), so both count and
judge a step the same way.
"""

from __future__ import annotations

import logging
import os
import resource
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path

from ekc.lab.call import CARRIER_PORT, PHONE_PORT, CallPlan, Timing, caller_number, carrier_params
from ekc.lab.model import preflight
from ekc.lab.nodes import node_cgroups
from ekc.lab.sipp import PCAP_DIR, SippResult, SippRun, SippServer, authentication, run_sipp
from schemas.region import Region
from tests.support.labregion import AppliedRegion

TIMING = Timing(ivr_wait_ms=1000, rating_wait_ms=1000, press_gap_ms=1500, rating_presses=10, talk_ms=4000,
                end_wait_ms=10000)
CARRIER_MEDIA_PORT = 16000  # the first carrier's RTP port; each further carrier 10 above the one before
PHONES_MEDIA_PORT = 17000
STEADY_MAX_S = 1200  # the longest a steady load places calls, whatever the drill around it does
STEADY_FIRST_CARRIER = 20  # a steady load's carriers take SIP ports from 5082 and RTP from 16200: a drill's own
# calls beside it keep the usual ones (5062, 16000; phones from 5071)
STEADY_REGISTER_RATE = 3  # registrations a second: 6 REGISTERs, under the edge's default flood limit per address
DRAIN_S = 120  # how long a step's last calls may take to end after the last one was placed
BUSY = 0.8  # a CPU counts as the bottleneck from this fraction of its limit


def bench_root(name: str, bench: str) -> Path | None:
    """A fresh ``build/bench/<name>`` for a lab bench; None, and the reason printed, when the lab cannot run
    here (not root, tools missing)."""
    logging.getLogger("pyinfra").setLevel(logging.ERROR)
    missing = preflight()
    if missing:
        print(f"{bench} skipped: " + "; ".join(missing))
        return None
    root = Path("build") / "bench" / name
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    return root


@dataclass(frozen=True)
class Load:
    """One carrier of a step: who it calls (the plan's DID, then its IVR digit) and its share of the rate."""

    plan: CallPlan
    share: float = 1.0


@dataclass(frozen=True)
class Step:
    """One step of the ramp: every carrier's result, and the CPU the nodes and SIPp used meanwhile."""

    rate: float
    results: tuple[SippResult, ...]
    node_cpu_pct: Mapping[str, float]
    sipp_cpu_pct: float
    peak_calls: int
    seconds: float
    events: Mapping[str, int]

    @property
    def created(self) -> int:
        """Calls the carriers placed."""
        return sum(r.stats.created for r in self.results)

    @property
    def successful(self) -> int:
        """Calls the carriers saw through to their end."""
        return sum(r.stats.successful for r in self.results)

    @property
    def failed(self) -> int:
        """Calls that failed or timed out at the carriers."""
        return sum(r.stats.failed for r in self.results)

    @property
    def clean(self) -> bool:
        """Every call of the step succeeded and reached an operator, and was rated (queue_log says so)."""
        created = self.created
        return (self.failed == 0 and self.successful >= created > 0
                and self.events.get("CONNECT", 0) >= created and self.events.get("RATING", 0) >= created)

    def describe(self) -> str:
        """What went wrong, carrier by carrier, for the first step that is not clean."""
        return "\n  ".join(r.describe() for r in self.results if not r.ok) or (
            f"every carrier's calls ended, but queue_log has CONNECT {self.events.get('CONNECT', 0)} and"
            f" RATING {self.events.get('RATING', 0)} for {self.created} calls")


def queue_events(region: AppliedRegion, nodes: Iterable[str], since: float) -> dict[str, int]:
    """How many of each queue_log event the ``nodes`` wrote since ``since`` (epoch seconds), together."""
    counts: dict[str, int] = {}
    for node in nodes:
        for line in region.run(node, "cat /var/log/asterisk/queue_log").stdout.splitlines():
            fields = line.split("|")
            if len(fields) > 4 and fields[0].isdigit() and int(fields[0]) >= since:
                counts[fields[4]] = counts.get(fields[4], 0) + 1
    return counts


def node_cpu_usec(region: AppliedRegion, node: str) -> int:
    """The node's CPU time so far (its cgroup v2's ``usage_usec``)."""
    stat = node_cgroups(region.lab, region.lab.node(node))[0] / "cpu.stat"
    for line in stat.read_text(encoding="utf-8").splitlines():
        if line.startswith("usage_usec"):
            return int(line.split()[1])
    return 0


def children_cpu_s() -> float:
    """CPU seconds of this process's finished children (the carriers' SIPp runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def process_cpu_s(pid: int) -> float:
    """CPU seconds of a running process (the phones' SIPp, which runs through every step); 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def register_phones(region: AppliedRegion, plan: CallPlan, extensions: Sequence[str], work: Path,
                    rate: float = 20, expires_s: int = 3600) -> int:
    """Register the ``extensions`` (each with its own password) from the phones' address, ``rate`` a second
    (``expires_s`` 0: unregister them): how many made it."""
    rows = tuple((ext, authentication(ext, region.secrets.get("sip", ext))) for ext in extensions)
    name = "register-all" if expires_s else "unregister-all"
    registered = run_sipp(SippRun(name, "register.xml", plan.operator_address, PHONE_PORT,
                                  remote=plan.target, rows=rows, calls=len(rows), rate=rate,
                                  params={"expires": str(expires_s)}, timeout_s=len(rows) / rate + 60), work)
    return sum(o.startswith("registered") for o in registered.outcomes)


def answering_phones(plan: CallPlan, work: Path) -> SippServer:
    """One SIPp that answers for every registered phone (they all registered its address as their contact)."""
    return SippServer(SippRun("phones", "operator_uas.xml", plan.operator_address, PHONE_PORT, calls=None,
                              params={"answer_ms": "200", "talk_ms": str(TIMING.talk_ms),
                                      "audio_pcap": str(PCAP_DIR / "g711a.pcap")}, media_port=PHONES_MEDIA_PORT,
                              timeout_s=None), work)


def carrier_run(load: Load, number: int, rate: float, seconds: float, work: Path) -> SippRun:
    """The SIPp run of carrier ``number`` of a step: its share of ``rate`` for ``seconds``."""
    own_rate = rate * load.share
    calls = max(1, round(own_rate * seconds))
    name = f"load-{rate:g}-{number}"
    params = carrier_params(load.plan.digit, "5", TIMING, work / f"{name}-press")
    rows = tuple((caller_number(time.time_ns() + (number * 1_000_000 + i) * 1_000_000),) for i in range(calls))
    return SippRun(name, "carrier_call.xml", load.plan.trunk_peer, CARRIER_PORT + number, remote=load.plan.target,
                   service=load.plan.did, rows=rows, params=params, calls=calls, rate=own_rate, limit=2000,
                   media_port=CARRIER_MEDIA_PORT + 10 * number, timeout_s=seconds + DRAIN_S, tolerant=True)


def run_step(region: AppliedRegion, loads: Sequence[Load], nodes: Sequence[str], work: Path, rate: float,
             seconds: float, phones: SippServer | None = None) -> Step:
    """Calls at ``rate`` per second (shared by the carriers of ``loads``) for ``seconds``, until the last has
    ended; CPU measured around them on ``nodes`` and on the deploy host's SIPp, queue_log read on ``nodes``."""
    work.mkdir(mode=0o700, parents=True, exist_ok=True)
    runs = [carrier_run(load, number, rate, seconds, work) for number, load in enumerate(loads)]
    phones_pid = phones.process.pid if phones is not None else 0
    node_before = {node: node_cpu_usec(region, node) for node in nodes}
    sipp_before = children_cpu_s() + (process_cpu_s(phones_pid) if phones_pid else 0.0)
    since, started = int(time.time()), time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(runs)) as pool:
        results = tuple(pool.map(lambda run: run_sipp(run, work), runs))
    elapsed = time.perf_counter() - started
    node_pct = {node: (node_cpu_usec(region, node) - node_before[node]) / 1e4 / elapsed for node in nodes}
    sipp_after = children_cpu_s() + (process_cpu_s(phones_pid) if phones_pid else 0.0)
    peak = peak_concurrent([work / f"{run.name}.stat.csv" for run in runs])
    return Step(rate, results, node_pct, (sipp_after - sipp_before) * 100 / elapsed, peak, elapsed,
                queue_events(region, nodes, since))


def peak_concurrent(stat_files: Sequence[Path]) -> int:
    """The most calls in progress at once over carriers started together: their ``CurrentCall`` columns
    (one line a second each) added up second by second."""
    series = [_current_calls(path) for path in stat_files]
    return max((sum(second) for second in zip_longest(*series, fillvalue=0)), default=0)


def _current_calls(path: Path) -> list[int]:
    """The ``CurrentCall`` column of a SIPp statistics file, one value per dump (empty when there is none)."""
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or "CurrentCall" not in lines[0].split(";"):
        return []
    column = lines[0].split(";").index("CurrentCall")
    values = [line.split(";")[column] for line in lines[1:] if line.count(";") > column]
    return [int(value) for value in values if value.isdigit()]


def step_line(step: Step) -> str:
    """One line of figures for a step."""
    cpu = ", ".join(f"{node} {pct:.0f}%" for node, pct in step.node_cpu_pct.items())
    return (f"rate {step.rate:>4g}/s: {step.successful:4d} ok {step.failed:3d} failed of {step.created:4d};"
            f" peak {step.peak_calls:3d} concurrent calls; CPU {cpu}, SIPp {step.sipp_cpu_pct:.0f}% (of one core);"
            f" {step.seconds:.0f} s; queue_log CONNECT {step.events.get('CONNECT', 0)},"
            f" RATING {step.events.get('RATING', 0)}, ABANDON {step.events.get('ABANDON', 0)}")


def ramp(rates: Iterable[float], step_at: Callable[[float], Step],
         limits: Mapping[str, float]) -> tuple[Step | None, Step | None]:
    """Steps at each rate until the first that is not clean: (the last clean step, the failing step). Each
    step's figures are printed; for the failing one, its failures and the bottleneck (``limits``: each
    node's CPU limit in percent of one core)."""
    last_clean: Step | None = None
    for rate in rates:
        step = step_at(rate)
        print(step_line(step), flush=True)
        if not step.clean:
            print(f"  first failures at {rate:g}/s: {step.describe()}")
            print(f"  bottleneck: {bottleneck(step, limits)}", flush=True)
            return last_clean, step
        last_clean = step
    print("  no failure up to the last rate of the ramp")
    return last_clean, None


def bottleneck(step: Step, limits: Mapping[str, float]) -> str:
    """Which side ran out, judged from the CPU figures of the failing step: a node near its limit (the
    machine's cores, or a cap), SIPp near one core, or the machine's cores shared by all of them."""
    cores = os.cpu_count() or 1
    near = [(pct / limits[node], node, pct) for node, pct in step.node_cpu_pct.items() if node in limits]
    if near and max(near)[0] > BUSY:
        _, node, pct = max(near)
        return f"the CPU of {node} ({pct:.0f}% of its {limits[node]:.0f}%)"
    if step.sipp_cpu_pct > BUSY * 100:
        return f"SIPp itself ({step.sipp_cpu_pct:.0f}% of one core: it plays every call's RTP)"
    used = sum(step.node_cpu_pct.values()) + step.sipp_cpu_pct
    if used > BUSY * 100 * cores:
        return f"the machine's {cores} cores shared by the nodes and SIPp ({used:.0f}% in all)"
    return "not CPU: see the failures above (queue waits, timeouts, RTP port range)"


@dataclass
class SteadyRun:
    """What a steady load did, once its block has ended: each carrier's result, and when it began."""

    since: int
    results: tuple[SippResult, ...] = ()

    @property
    def created(self) -> int:
        """Calls the carriers placed."""
        return sum(r.stats.created for r in self.results)

    @property
    def failed(self) -> int:
        """Calls that failed or timed out at the carriers."""
        return sum(r.stats.failed for r in self.results)

    def describe(self) -> str:
        """The carriers' figures, and the failures of those that had any."""
        figures = ", ".join(f"{r.run.name} {r.stats.successful}/{r.stats.created}" for r in self.results)
        return "; ".join([figures, *(r.describe() for r in self.results if not r.ok)])


def department_operators(region: Region, departments: Iterable[str]) -> list[str]:
    """The extensions of the operators who serve any of ``departments``."""
    wanted = set(departments)
    return [o.extension for o in region.telephony.operators if wanted & {s.department for s in o.skills()}]


@contextmanager
def steady_load(region: AppliedRegion, loads: Sequence[Load], rate: float, work: Path) -> Iterator[SteadyRun]:
    """Calls at ``rate`` a second (shared by the carriers of ``loads``, each its own department) through the
    region's edge while the block runs, for drills that change the region meanwhile. The departments'
    operators register first (one SIPp answers for all of them); on leaving the block the carriers place no new
    call and the running ones end (SIGUSR1), then the phones stop. Bounded: STEADY_MAX_S of calls at most,
    each carrier's SIPp ends by itself after that."""
    work.mkdir(mode=0o700, parents=True, exist_ok=True)
    plan = loads[0].plan
    extensions = department_operators(region.spec.region, (load.plan.department for load in loads))
    registered = register_phones(region, plan, extensions, work, rate=STEADY_REGISTER_RATE)
    assert registered == len(extensions), f"{registered} of {len(extensions)} phones registered"
    done = SteadyRun(int(time.time()))
    with ExitStack() as stack:
        stack.callback(register_phones, region, plan, extensions, work, STEADY_REGISTER_RATE, 0)
        phones = answering_phones(plan, work)
        stack.callback(phones.stop)
        carriers = [SippServer(carrier_run(load, STEADY_FIRST_CARRIER + number, rate, STEADY_MAX_S, work), work)
                    for number, load in enumerate(loads)]
        try:
            yield done
        finally:
            done.results = tuple(carrier.stop(grace_s=DRAIN_S) for carrier in carriers)
