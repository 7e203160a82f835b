"""Running verify: pytest with testinfra over SSH against the hosts, and its JUnit XML read back into a
result per host and check."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ekc.engines.live import select_hosts
from ekc.engines.ssh import SshAccess, check_reachable
from ekc.paths import REPO_ROOT
from ekc.render.manifest import BuildManifest, load_manifest

Outcome = Literal["passed", "failed", "skipped", "error"]
_OUTCOMES: dict[str, Outcome] = {"failure": "failed", "error": "error", "skipped": "skipped"}

VERIFY_MODULE = REPO_ROOT / "tests" / "verify" / "test_hosts.py"

# What `verify` runs: the data-driven module and one module per component, sharing tests/verify/conftest.py.
VERIFY_DIR = VERIFY_MODULE.parent

BUILD_ENV = "EKC_VERIFY_BUILD"

LOCK_ENV = "EKC_VERIFY_LOCK"


def host_of_test(test_name: str) -> str:
    """The host a test id belongs to: ``test_x[pbx1:/etc/a]`` or ``test_y[pbx1]`` → ``pbx1`` ("" if none)."""
    param = test_name.partition("[")[2].removesuffix("]")
    if ":" in param:
        return param.split(":")[0]
    return param if param and " " not in param else ""


@dataclass(frozen=True)
class CheckResult:
    """One test of a verify run, as the JUnit XML records it; ``reason`` for failures, errors and skips."""

    host: str
    test: str
    outcome: Outcome
    reason: str = ""


@dataclass(frozen=True)
class HostSummary:
    """One host's counts, and the checks that did not pass."""

    host: str
    passed: int
    failed: int
    skipped: int
    problems: tuple[CheckResult, ...]
    skips: tuple[CheckResult, ...]


@dataclass(frozen=True)
class VerifyResult:
    """A verify run: every check, where its JUnit XML is, how long it took and what pytest said."""

    hosts: tuple[str, ...]
    checks: tuple[CheckResult, ...]
    junit: Path
    seconds: float
    pytest_exit: int
    output: str

    @property
    def failed(self) -> int:
        """Failed checks and errors together."""
        return sum(c.outcome in ("failed", "error") for c in self.checks)

    @property
    def ok(self) -> bool:
        """Every check passed or was skipped with a reason, and pytest itself succeeded."""
        return self.pytest_exit == 0 and self.failed == 0 and bool(self.checks)

    @property
    def exit_code(self) -> int:
        """The CLI's exit code: 0 when ok, 1 otherwise."""
        return 0 if self.ok else 1

    def summaries(self) -> tuple[HostSummary, ...]:
        """Per host (in run order; checks without a host last): counts, failures, skips."""
        names = list(self.hosts) + sorted({c.host for c in self.checks} - set(self.hosts))
        return tuple(_summary(name, [c for c in self.checks if c.host == name]) for name in names)


def _summary(host: str, checks: Sequence[CheckResult]) -> HostSummary:
    return HostSummary(
        host=host,
        passed=sum(c.outcome == "passed" for c in checks),
        failed=sum(c.outcome in ("failed", "error") for c in checks),
        skipped=sum(c.outcome == "skipped" for c in checks),
        problems=tuple(c for c in checks if c.outcome in ("failed", "error")),
        skips=tuple(c for c in checks if c.outcome == "skipped"),
    )


def parse_junit(text: str) -> tuple[CheckResult, ...]:
    """The checks in a pytest JUnit XML report, in file order."""
    root = ET.fromstring(text)
    results = []
    for case in root.iter("testcase"):
        name = case.get("name", "")
        outcome: Outcome = "passed"
        reason = ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = _OUTCOMES[child.tag]
                reason = (child.get("message") or child.text or "").strip().removeprefix("Failed: ")
                break
        results.append(CheckResult(host_of_test(name), name, outcome, _first_lines(reason)))
    return tuple(results)


def _first_lines(text: str, limit: int = 3) -> str:
    """A message cut to its first lines, for a summary that stays readable."""
    lines = text.strip().splitlines()
    return "\n".join(lines[:limit]) + (" …" if len(lines) > limit else "")


def pytest_argv(manifest: BuildManifest, ssh_config: Path, ssh_key: Path, junit: Path) -> list[str]:
    """The pytest command line of a verify run: every verify module, one testinfra host per manifest host."""
    hosts = ",".join(f"ssh://root@{h.address}" for h in manifest.hosts)
    return [
        sys.executable, "-m", "pytest", str(VERIFY_DIR),
        "--rootdir", str(REPO_ROOT), "-p", "no:cacheprovider", "-o", "addopts=", "-q", "--no-header",
        "-o", "junit_suite_name=ekc-verify", "-o", "junit_logging=no", "-o", "junit_family=xunit2",
        f"--hosts={hosts}", f"--ssh-config={ssh_config}", f"--ssh-identity-file={ssh_key}",
        f"--junitxml={junit}",
    ]


def run_verify(build_dir: Path, ssh_key: Path, *, limit: Sequence[str] | None = None, junit: Path,
               bundle_lock: Path | None = None, known_hosts: Path | None = None) -> VerifyResult:
    """Verify the (selected) hosts of a build against its manifest; every host is reached first.

    Raises :class:`ekc.engines.live.UnreachableHosts` naming each host that does not answer, before any test runs.
    """
    junit, ssh_key = junit.resolve(), ssh_key.resolve()  # pytest runs in the repository, not in our cwd
    full = load_manifest(build_dir)
    manifest = select_hosts(full, limit)
    access = SshAccess(ssh_key, known_hosts.resolve() if known_hosts is not None else None)
    check_reachable(manifest, access)
    junit.parent.mkdir(parents=True, exist_ok=True)
    junit.unlink(missing_ok=True)
    env = {**os.environ, BUILD_ENV: str(build_dir.resolve()), "PYTHONPATH": str(REPO_ROOT)}
    env.pop(LOCK_ENV, None)
    if bundle_lock is not None:
        env[LOCK_ENV] = str(bundle_lock.resolve())
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ekc-verify-") as tmp:
        control = Path(tmp) / "cm"
        control.mkdir(mode=0o700)
        config = Path(tmp) / "ssh_config"
        config.write_text(access.config_text(control), encoding="utf-8")
        try:
            done = subprocess.run(pytest_argv(manifest, config, ssh_key, junit), cwd=REPO_ROOT, env=env,
                                  capture_output=True, text=True, check=False)
        finally:
            _close_masters(full, config, control)
    checks = parse_junit(junit.read_text(encoding="utf-8")) if junit.exists() else ()
    return VerifyResult(
        hosts=tuple(h.name for h in manifest.hosts),
        checks=checks,
        junit=junit,
        seconds=round(time.monotonic() - started, 1),
        pytest_exit=done.returncode,
        output=done.stdout + done.stderr,
    )


def _close_masters(manifest: BuildManifest, config: Path, control: Path) -> None:
    """Stop the SSH connection masters the run left behind (testinfra keeps them for 60 s otherwise)."""
    if not any(control.iterdir()):
        return
    for host in manifest.hosts:
        subprocess.run(["ssh", "-F", str(config), "-O", "exit", f"root@{host.address}"],
                       capture_output=True, timeout=10, check=False)


def format_verify(result: VerifyResult) -> str:
    """The run for a terminal: per host its counts, each failure with its reason, each skip with its reason."""
    lines = []
    for summary in result.summaries():
        name = summary.host or "(no host)"
        lines.append(f"{name}: {summary.passed} passed, {summary.failed} failed, {summary.skipped} skipped")
        lines += [f"  FAILED {c.test}: {_indent(c.reason)}" for c in summary.problems]
        lines += [f"  skipped {c.test}: {_indent(c.reason)}" for c in summary.skips]
    if not result.checks or result.pytest_exit not in (0, 1):
        tail = "\n".join(result.output.strip().splitlines()[-20:])
        lines.append(f"pytest exited with {result.pytest_exit}:\n{tail}")
    total = {o: sum(c.outcome == o for c in result.checks) for o in ("passed", "skipped")}
    verdict = "ok" if result.ok else "FAILED"
    lines.append(f"Verify {verdict}: {total['passed']} passed, {result.failed} failed, {total['skipped']} skipped "
                 f"on {len(result.hosts)} host{'s' if len(result.hosts) != 1 else ''} in {result.seconds} s; "
                 f"JUnit XML: {result.junit}")
    return "\n".join(lines) + "\n"


def _indent(text: str) -> str:
    """Continuation lines of a reason, indented under their check."""
    return text.replace("\n", "\n      ")
