"""Real SIP calls with SIPp (Debian's ``sip-tester``): the carrier and the operators' phones in lab tests.

The scenarios are package data (``ekc/lab/sipp/*.xml``). Each carries ``{{name}}`` parameters (pauses, pcaps)
that :func:`render_scenario` fills in, and SIPp's own keywords for the rest; numbers and credentials come
from an injection CSV written 0600 into the run's own directory (never on the command line, so never in
``ps``) and deleted when SIPp is done. Every run keeps SIPp's exit code, its statistics, the messages it
exchanged (``-trace_msg``), the outcome lines its scenario logs (``-trace_logs``) and its errors.

A run is bound to one source address (``-i``), the way the carrier or a phone is seen by the node: the lab
gives the deploy host the trunk peers' addresses and an address in the operators' network (``ekc.lab.net``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

SCENARIO_DIR = Path(__file__).resolve().parent / "sipp"
PCAP_DIR = Path("/usr/share/sip-tester")
SIPP = "sipp"
_PARAM_RE = re.compile(r"\{\{([a-z_]+)\}\}")
# SIPp's exit codes (sipp(1)): 0 every call succeeded, 1 some failed, 97 internal command, 99 no call at all,
# 255 fatal error, 254 could not bind its socket.
EXIT_MEANINGS = {0: "all calls succeeded", 1: "at least one call failed", 97: "stopped by an internal command",
                 99: "no call was processed", 255: "fatal error", 254: "could not bind its socket"}
DTMF_NAMES = {"*": "star", "#": "pound"}


class SippError(RuntimeError):
    """SIPp could not be run (missing, bad scenario parameters); the message says what to do."""


@dataclass(frozen=True)
class SippRun:
    """One SIPp process: a scenario, where it runs from and to, and how many calls.

    ``remote`` is ``host:port`` for a client (``None`` for a server waiting for calls); ``service`` the
    Request-URI's user (the number dialled); ``rows`` the injection CSV (``[field0]``, ``[field1]``...);
    ``params`` the scenario's ``{{name}}`` values.
    """

    name: str
    scenario: str
    local_ip: str
    local_port: int
    remote: str | None = None
    service: str | None = None
    rows: tuple[tuple[str, ...], ...] = ()
    params: Mapping[str, str] = field(default_factory=dict)
    calls: int | None = 1
    rate: float | None = None
    limit: int | None = None
    media_port: int | None = None
    timeout_s: float | None = 120.0
    # A message the scenario does not expect at that point is logged and the call goes on (SIPp's default is
    # to abort it): for load, where a late provisional reply to a retransmitted INVITE can follow the answer.
    # The call still fails when what it waits for never comes.
    tolerant: bool = False


@dataclass(frozen=True)
class SippStats:
    """SIPp's cumulative counters at its last statistics dump."""

    created: int = 0
    successful: int = 0
    failed: int = 0
    current: int = 0
    retransmissions: int = 0
    dead_messages: int = 0
    elapsed_s: float = 0.0
    raw: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SippResult:
    """What one SIPp run did: exit code, statistics, the scenario's outcome lines, messages and errors."""

    run: SippRun
    returncode: int
    stats: SippStats
    outcomes: tuple[str, ...]
    messages: str
    errors: str
    output: str

    @property
    def ok(self) -> bool:
        """SIPp says every call succeeded."""
        return self.returncode == 0

    def describe(self) -> str:
        """One paragraph for a failure message: the code's meaning, the counters, the last errors."""
        meaning = EXIT_MEANINGS.get(self.returncode, "unexpected exit code")
        events = re.split(r"\n|(?=\d{4}-\d\d-\d\d\t)", self.errors.replace("The following events occurred:", ""))
        errors = "\n".join([e.strip() for e in events if e.strip() and "jumping to label" not in e][-8:])
        kinds: dict[str, int] = {}
        for outcome in self.outcomes:
            kind = re.sub(r" (\S*@\S*|\d+)$", "", outcome.split(" from=")[0])
            kinds[kind] = kinds.get(kind, 0) + 1
        shown = list(self.outcomes) if len(self.outcomes) <= 12 else kinds
        return (f"sipp {self.run.name} ({self.run.scenario}): exit {self.returncode} ({meaning}); calls "
                f"{self.stats.successful} ok, {self.stats.failed} failed; outcomes {shown}"
                + (f"\nerrors:\n{errors}" if errors else ""))


# --- pure parts ------------------------------------------------------------------------------------


def render_scenario(text: str, params: Mapping[str, str]) -> str:
    """The scenario with every ``{{name}}`` replaced; a missing or unused parameter is an error."""
    wanted = set(_PARAM_RE.findall(text))
    missing = sorted(wanted - set(params))
    unused = sorted(set(params) - wanted)
    if missing or unused:
        raise SippError(f"scenario parameters: missing {missing}, unknown {unused}")
    return _PARAM_RE.sub(lambda m: str(params[m.group(1)]), text)


def injection_csv(rows: Sequence[Sequence[str]]) -> str:
    """SIPp's injection file: ``SEQUENTIAL`` then one ``;``-separated line per call."""
    for row in rows:
        for value in row:
            if any(c in value for c in ";\n\r"):
                raise SippError("an injection value may not contain ';' or a line break")
    return "SEQUENTIAL\n" + "".join(";".join(row) + ";\n" for row in rows)


def authentication(user: str, password: str) -> str:
    """SIPp's digest keyword for an injection field (``[field1]`` in the scenarios that authenticate)."""
    if any(c in user + password for c in " []"):
        raise SippError("a SIP user or password with spaces or brackets cannot be injected")
    return f"[authentication username={user} password={password}]"


def dtmf_pcap(digit: str, pcap_dir: Path = PCAP_DIR) -> str:
    """The RFC 4733 pcap SIPp plays for ``digit`` (0-9, * or #)."""
    if len(digit) != 1 or digit not in "0123456789*#":
        raise SippError(f"not a DTMF digit: {digit!r}")
    return str(pcap_dir / f"dtmf_2833_{DTMF_NAMES.get(digit, digit)}.pcap")


def dtmf_press(digit: str, press: int, pcap_dir: Path = PCAP_DIR) -> bytes:
    """Debian's RFC 4733 pcap of ``digit`` made into the ``press``-th key press of a call.

    Every Debian pcap carries the same sequence numbers and RTP timestamp, and a receiver takes a packet
    with the timestamp of the event it last ended (or an older sequence number) for a retransmission and
    ignores it: a second key press must be a new event. Each press moves both forward; the UDP checksum is
    cleared (SIPp rewrites addresses and ports, and zero means "none" in IPv4).
    """
    data = bytearray(Path(dtmf_pcap(digit, pcap_dir)).read_bytes())
    offset = 24  # the pcap file header
    while offset + 16 <= len(data):
        captured = int.from_bytes(data[offset + 8:offset + 12], "little")
        packet = offset + 16
        ip = packet + 14
        udp = ip + (data[ip] & 0x0F) * 4
        rtp = udp + 8
        seq = (int.from_bytes(data[rtp + 2:rtp + 4], "big") + 64 * (press + 1)) % 2**16
        stamp = (int.from_bytes(data[rtp + 4:rtp + 8], "big") + 8000 * (press + 1)) % 2**32
        data[udp + 6:udp + 8] = b"\0\0"
        data[rtp + 2:rtp + 4] = seq.to_bytes(2, "big")
        data[rtp + 4:rtp + 8] = stamp.to_bytes(4, "big")
        offset = packet + captured
    return bytes(data)


def press_steps(pcaps: Sequence[str], gap_ms: int) -> str:
    """Scenario steps that press a key (one pcap each) every ``gap_ms`` until the node sends BYE."""
    steps = []
    for index, pcap in enumerate(pcaps, start=1):
        steps.append(
            f'  <nop><action><exec play_pcap_audio="{pcap}"/><log message="rating pressed {index}"/></action></nop>\n'
            f'  <recv request="BYE" timeout="{gap_ms}" ontimeout="press_{index}" next="node_bye"/>\n'
            f'  <label id="press_{index}"/>\n')
    return "".join(steps)


def sipp_argv(run: SippRun, workdir: Path, sipp: str = SIPP) -> list[str]:
    """The SIPp command line of ``run``, its files under ``workdir`` (``<name>.*``)."""
    base = workdir / run.name
    argv = [sipp]
    if run.remote is not None:
        argv.append(run.remote)
    argv += ["-sf", str(_at(base, ".xml")), "-i", run.local_ip, "-p", str(run.local_port),
             "-mi", run.local_ip, "-t", "u1", "-nostdin", "-nr",
             "-trace_msg", "-message_file", str(_at(base, ".messages")),
             "-trace_logs", "-log_file", str(_at(base, ".log")),
             "-trace_err", "-error_file", str(_at(base, ".errors")),
             "-trace_stat", "-stf", str(_at(base, ".stat.csv")), "-fd", "1"]
    if run.media_port is not None:
        argv += ["-mp", str(run.media_port)]
    if run.service is not None:
        argv += ["-s", run.service]
    if run.rows:
        argv += ["-inf", str(_at(base, ".csv"))]
    if run.calls is not None:
        argv += ["-m", str(run.calls)]
    if run.rate is not None:
        argv += ["-r", f"{run.rate:g}"]
    if run.limit is not None:
        argv += ["-l", str(run.limit)]
    if run.timeout_s is not None:
        argv += ["-timeout", f"{run.timeout_s:g}s", "-timeout_error"]
    if run.tolerant:
        argv += ["-default_behaviors", "all,-abortunexp"]
    return argv


def _at(base: Path, suffix: str) -> Path:
    """A file of a run: its name and ``suffix`` (a run's name may hold a dot, "load-1.5-0", which
    ``with_suffix`` would cut: every carrier of a step at 1.5/s then wrote the same files)."""
    return base.with_name(base.name + suffix)

def parse_stats(text: str) -> SippStats:
    """The last line of SIPp's ``-trace_stat`` file (``;``-separated, header first) as counters."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 2:
        return SippStats()
    header, last = lines[0].split(";"), lines[-1].split(";")
    raw = dict(zip(header, last, strict=False))

    def number(key: str) -> int:
        try:
            return int(raw.get(key, "0") or 0)
        except ValueError:
            return 0

    elapsed = raw.get("ElapsedTime(C)", "")
    return SippStats(created=number("TotalCallCreated"), successful=number("SuccessfulCall(C)"),
                     failed=number("FailedCall(C)"), current=number("CurrentCall"),
                     retransmissions=number("Retransmissions(C)"), dead_messages=number("DeadCallMsgs(C)"),
                     elapsed_s=_duration_s(elapsed), raw=raw)


def parse_outcomes(text: str) -> tuple[str, ...]:
    """The scenario's ``<log>`` lines, without SIPp's timestamp prefix where there is one."""
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if line:
            out.append(re.sub(r"^\d{4}-\d\d-\d\d\s+\d\d:\d\d:\d\d(\.\d+)?\s+\d+(\.\d+)?:\s*", "", line))
    return tuple(out)


def _duration_s(text: str) -> float:
    """SIPp's ``HH:MM:SS:mmm`` (or ``HH:MM:SS``) duration in seconds."""
    parts = text.strip().split(":")
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        return 0.0
    if len(numbers) == 4:
        return numbers[0] * 3600 + numbers[1] * 60 + numbers[2] + numbers[3] / 1000
    if len(numbers) == 3:
        return numbers[0] * 3600 + numbers[1] * 60 + numbers[2]
    return 0.0


# --- running SIPp ----------------------------------------------------------------------------------


def sipp_path() -> str:
    """Where sipp is; a clear error when it is not installed."""
    found = shutil.which(SIPP)
    if found is None:
        raise SippError("sipp not found: apt-get install sip-tester (SIPp places the lab's test calls)")
    return found


def prepare(run: SippRun, workdir: Path) -> list[str]:
    """Write the run's scenario and injection file into ``workdir`` (0700) and return its command line."""
    workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(workdir, 0o700)
    base = workdir / run.name
    template = (SCENARIO_DIR / run.scenario).read_text(encoding="utf-8")
    _at(base, ".xml").write_text(render_scenario(template, run.params), encoding="utf-8")
    for suffix in (".messages", ".log", ".errors", ".stat.csv"):
        _at(base, suffix).unlink(missing_ok=True)
    if run.rows:
        csv = _at(base, ".csv")
        fd = os.open(csv, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(injection_csv(run.rows))
    return sipp_argv(run, workdir, sipp_path())


def collect(run: SippRun, workdir: Path, returncode: int, output: str) -> SippResult:
    """Read what SIPp left in ``workdir`` for ``run`` and delete its injection file (credentials)."""
    base = workdir / run.name
    _at(base, ".csv").unlink(missing_ok=True)
    # SIPp appends its PID to the names of some trace files; take whichever exists.
    return SippResult(
        run=run,
        returncode=returncode,
        stats=parse_stats(_read_trace(base, ".stat.csv")),
        outcomes=parse_outcomes(_read_trace(base, ".log")),
        messages=_read_trace(base, ".messages"),
        errors=_read_trace(base, ".errors"),
        output=output,
    )


def _read_trace(base: Path, suffix: str) -> str:
    """The trace file ``<base><suffix>`` (or SIPp's ``<base>_<pid><suffix>`` variant), empty if none."""
    candidates = [_at(base, suffix), *sorted(base.parent.glob(f"{base.name}_*{suffix}"))]
    for path in candidates:
        if path.is_file():
            return path.read_text(encoding="utf-8", errors="replace")
    return ""


def run_sipp(run: SippRun, workdir: Path, timeout: float | None = None) -> SippResult:
    """Run a client scenario to its end and collect the result."""
    workdir = workdir.absolute()
    argv = prepare(run, workdir)
    limit = timeout if timeout is not None else (run.timeout_s or 600) + 30
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=limit, check=False, cwd=workdir)
        code, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as exc:
        code, output = 124, f"sipp ran longer than {limit:.0f} s: {exc}"
    return collect(run, workdir, code, output)


class SippServer:
    """A SIPp scenario running in the background (a phone, the carrier's side) until :meth:`stop`."""

    def __init__(self, run: SippRun, workdir: Path) -> None:
        workdir = workdir.absolute()
        self.run = run
        self.workdir = workdir
        argv = prepare(run, workdir)
        self._out = (workdir / f"{run.name}.out").open("w", encoding="utf-8")
        self.process = subprocess.Popen(argv, stdout=self._out, stderr=subprocess.STDOUT, cwd=workdir,
                                        start_new_session=True)
        time.sleep(0.3)
        if self.process.poll() is not None:
            result = self.stop()
            raise SippError(f"sipp {run.name} did not start: {result.describe()}\n{result.output[-2000:]}")

    def outcomes(self) -> tuple[str, ...]:
        """The outcome lines logged so far (SIPp flushes its log as it goes)."""
        return parse_outcomes(_read_trace(self.workdir / self.run.name, ".log"))

    def stop(self, grace_s: float = 10.0) -> SippResult:
        """Ask SIPp to finish (SIGUSR1: no new calls, wait for the running ones), then collect the result."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGUSR1)
            try:
                self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.process.terminate()
                try:
                    self.process.wait(5)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
        self._out.close()
        output = (self.workdir / f"{self.run.name}.out").read_text(encoding="utf-8", errors="replace")
        return collect(self.run, self.workdir, self.process.returncode, output)


@contextlib.contextmanager
def serving(run: SippRun, workdir: Path) -> Iterator[SippServer]:
    """A background SIPp for the length of the block; always stopped."""
    server = SippServer(run, workdir)
    try:
        yield server
    finally:
        server.stop()
