"""An apply killed half way through writing files (SIGKILL of the engine's whole process group) leaves every
managed file on every host either its old content or its new content in full, never a part; the next apply
converges (the live plan then has nothing to do) and leaves no staged file behind, also none that an
interrupted apply left.

The region is ``inventories/small`` on two nodes (asterisk; postgresql), copied as ``killtest`` to a subnet of
its own (10.249.0.0/24 on the first xdist worker) and applied with pyinfra. A spec change (time zone, NTP
servers, admin networks) then rewrites files on both nodes; ``deploy.py apply --no-fast-path`` starts, and is
killed as soon as a watcher on the nodes sees the first rewritten file. Then the change is taken back, and the
same is done once with the Ansible engine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ekc.engines.atomic import stale_temps_command, temp_path
from ekc.engines.common import parent_dirs
from ekc.lab.nodes import ssh_command
from ekc.render.manifest import BuildManifest
from tests.support.labregion import WORKER, AppliedRegion, applied_region, worker_name

pytestmark = [pytest.mark.lab, pytest.mark.slow]

PREFIX = f"10.249.{WORKER}."
SPLIT = "@@ekc-staged"
PLANTED = temp_path("/etc/hosts", "planted")  # what an apply killed during an upload leaves: a part of a file


def two_nodes(text: str) -> str:
    """The small region's node split in two: Asterisk on ekc1, PostgreSQL on ekc2 (each has files to rewrite)."""
    return text.replace("roles: [asterisk, postgresql, crm, monitoring]}",
                        f"roles: [asterisk]}}\n  - {{name: ekc2, address: {PREFIX}11, roles: [postgresql]}}")


def rewriting_change(text: str) -> str:
    """A spec change that rewrites files on both nodes and fires only triggers that are quick in the lab."""
    changed = (text.replace("timezone: Europe/Moscow", "timezone: Asia/Novosibirsk")
               .replace(f"ntp: [{PREFIX}1]", f"ntp: [{PREFIX}1, {PREFIX}2]")
               .replace(f"admin_networks: [{PREFIX}0/24]", f"admin_networks: [{PREFIX}0/24, 10.98.0.0/24]"))
    assert changed.count("Asia/Novosibirsk") == 1 and f"{PREFIX}2]" in changed and "10.98.0.0/24" in changed
    return changed


@dataclass(frozen=True)
class HostFiles:
    """What one host has: the sha256 of every path asked about, and the staged files in its directories."""

    sha256: dict[str, str]
    staged: tuple[str, ...]


def host_files(region: AppliedRegion, host: str, paths: list[str], directories: list[str]) -> HostFiles:
    """One SSH command: the checksums of ``paths``, then the staged files in ``directories``."""
    done = region.run(host, f"sha256sum -- {' '.join(paths)}; echo {SPLIT}; {stale_temps_command(directories)}")
    sums, _, staged = done.stdout.partition(f"{SPLIT}\n")
    pairs = (line.split(maxsplit=1) for line in sums.splitlines() if line.strip())
    return HostFiles({path: sha for sha, path in pairs}, tuple(staged.split()))


def every_host(region: AppliedRegion, old: BuildManifest, new: BuildManifest) -> dict[str, HostFiles]:
    """Every managed file of the old and the new render, and the staged files, on every host."""
    seen = {}
    for host in new.hosts:
        before = old.host(host.name)
        files = [*host.files, *(before.files if before else ())]
        paths = sorted({f.path for f in files})
        seen[host.name] = host_files(region, host.name, paths, list(parent_dirs(files)))
    return seen


def rewritten(old: BuildManifest, new: BuildManifest) -> dict[tuple[str, str], str]:
    """(host, path) → new sha256, for the files the change rewrites."""
    return {(h.name, f.path): f.sha256 for h in new.hosts for f in h.files
            if (before := old.host(h.name)) and (was := before.file(f.path)) and was.sha256 != f.sha256}


class Watcher:
    """A loop on each host that prints the checksums of the files to be rewritten every 20 ms; ``seen`` is set
    once one of them has its new content."""

    def __init__(self, region: AppliedRegion, wanted: dict[tuple[str, str], str]) -> None:
        self.wanted = wanted
        self.seen = threading.Event()
        self.loops: list[subprocess.Popen[str]] = []
        for host in sorted({h for h, _ in wanted}):
            paths = " ".join(p for h, p in wanted if h == host)
            loop = f"while :; do sha256sum -- {paths} 2>/dev/null; sleep 0.02; done"
            proc = subprocess.Popen([*ssh_command(region.lab, host), "-o", "BatchMode=yes", loop],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self.loops.append(proc)
            threading.Thread(target=self._read, args=(host, proc), daemon=True).start()

    def _read(self, host: str, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            sha, _, path = line.strip().partition("  ")
            if self.wanted.get((host, path)) == sha:
                self.seen.set()

    def stop(self) -> None:
        for proc in self.loops:
            proc.kill()
            proc.wait()


@dataclass(frozen=True)
class Killed:
    """An apply killed while it wrote files: the renders before and after, and what each host then had."""

    engine: str
    spec_before: str
    old: BuildManifest
    new: BuildManifest
    hosts: dict[str, HostFiles]
    seconds_to_kill: float


def kill_while_writing(region: AppliedRegion, engine: str, edit: Callable[[str], str], tmp: Path) -> Killed:
    """Change the spec with ``edit``, start ``deploy.py apply`` with ``engine``, SIGKILL its process group once a
    rewritten file shows on a host, and read every host."""
    spec_before = (region.region_dir / "region.yml").read_text(encoding="utf-8")
    old = region.rerender(lambda text: text)
    new = region.rerender(edit)
    wanted = rewritten(old, new)
    assert {h for h, _ in wanted} == {h.name for h in new.hosts}, "the change must rewrite files on every host"
    watcher = Watcher(region, wanted)
    started = time.monotonic()
    with (tmp / f"{engine}-killed.log").open("wb") as log:
        apply = region.start_apply(tmp, log, "--engine", engine, "--no-fast-path")
        try:
            landed = watcher.seen.wait(timeout=240)
            finished = apply.poll()
        finally:
            if apply.poll() is None:
                os.killpg(apply.pid, signal.SIGKILL)
            apply.wait()
            watcher.stop()
    assert landed and finished is None, (tmp / f"{engine}-killed.log").read_text(encoding="utf-8")[-2000:]
    return Killed(engine, spec_before, old, new, every_host(region, old, new), round(time.monotonic() - started, 1))


@dataclass(frozen=True)
class Rerun:
    """The apply after the kill: what it did, then the hosts and the live plan's exit status."""

    record: dict[str, object]
    hosts: dict[str, HostFiles]
    plan_status: int
    plan: str


def apply_again(region: AppliedRegion, engine: str, killed: Killed, tmp: Path) -> Rerun:
    """Plant what a kill during an upload leaves (a part of a file, staged), apply with ``engine``, read every
    host, then the live plan."""
    for host in killed.new.hosts:
        assert region.run(host.name, f"head -c 40 /etc/hosts > {PLANTED}").returncode == 0
    record, _ = region.cli_apply(tmp, "--engine", engine, "--no-fast-path")
    plan = region.deploy("plan", str(region.region_dir), "--known-hosts", str(region.lab.known_hosts))
    return Rerun(record, every_host(region, killed.old, killed.new), plan.returncode, plan.stdout + plan.stderr)


# --- fixtures: the applied region, then one kill and one rerun per engine ------------------------------------


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppliedRegion]:
    """``killtest`` applied on its own lab."""
    with applied_region(tmp_path_factory.mktemp("killtest"), worker_name("killtest"), prefix=PREFIX,
                        edit=two_nodes) as applied:
        yield applied


@pytest.fixture(scope="module")
def pyinfra_killed(region: AppliedRegion, tmp_path_factory: pytest.TempPathFactory) -> Killed:
    """The spec changed, the pyinfra apply killed while it writes the files."""
    return kill_while_writing(region, "pyinfra", rewriting_change, tmp_path_factory.mktemp("pyinfra"))


@pytest.fixture(scope="module")
def pyinfra_rerun(region: AppliedRegion, pyinfra_killed: Killed, tmp_path_factory: pytest.TempPathFactory) -> Rerun:
    """pyinfra again, after the kill."""
    return apply_again(region, "pyinfra", pyinfra_killed, tmp_path_factory.mktemp("pyinfra-rerun"))


@pytest.fixture(scope="module")
def ansible_killed(region: AppliedRegion, pyinfra_killed: Killed, pyinfra_rerun: Rerun,
                   tmp_path_factory: pytest.TempPathFactory) -> Killed:
    """The change taken back, the Ansible apply killed while it writes the files."""
    return kill_while_writing(region, "ansible", lambda _: pyinfra_killed.spec_before,
                              tmp_path_factory.mktemp("ansible"))


@pytest.fixture(scope="module")
def ansible_rerun(region: AppliedRegion, ansible_killed: Killed, tmp_path_factory: pytest.TempPathFactory) -> Rerun:
    """Ansible again, after the kill."""
    return apply_again(region, "ansible", ansible_killed, tmp_path_factory.mktemp("ansible-rerun"))


@pytest.fixture(scope="module", params=["pyinfra", "ansible"])
def killed(request: pytest.FixtureRequest) -> Killed:
    """The kill of each engine's apply (pyinfra first: Ansible's takes its change back)."""
    result: Killed = request.getfixturevalue(f"{request.param}_killed")
    return result


@pytest.fixture(scope="module")
def rerun(killed: Killed, request: pytest.FixtureRequest) -> tuple[Killed, Rerun]:
    """The apply after each engine's kill, with the kill."""
    result: Rerun = request.getfixturevalue(f"{killed.engine}_rerun")
    return killed, result


# --- tests --------------------------------------------------------------------------------------------------


def old_or_new(killed: Killed) -> dict[str, list[str]]:
    """Per host, the managed paths whose content is neither the old render's nor the new one's."""
    torn: dict[str, list[str]] = {}
    for host in killed.new.hosts:
        before, seen = killed.old.host(host.name), killed.hosts[host.name].sha256
        for file in host.files:
            was = before.file(file.path) if before else None
            if seen.get(file.path) not in {file.sha256, was.sha256 if was else None}:
                torn.setdefault(host.name, []).append(file.path)
    return torn


def test_the_kill_landed_while_the_engine_was_writing_files(killed: Killed) -> None:
    """Some rewritten files already have their new content, and some still their old one."""
    wanted = rewritten(killed.old, killed.new)
    states = {killed.hosts[host].sha256.get(path) == sha for (host, path), sha in wanted.items()}
    assert states == {True, False}, (killed.engine, killed.seconds_to_kill, killed.hosts)


def test_after_the_kill_every_managed_file_is_its_old_or_its_new_content_in_full(killed: Killed) -> None:
    assert old_or_new(killed) == {}


def test_the_next_apply_converges_every_host_to_the_new_render(rerun: tuple[Killed, Rerun]) -> None:
    killed, again = rerun
    differing = [(h.name, f.path) for h in killed.new.hosts for f in h.files
                 if again.hosts[h.name].sha256.get(f.path) != f.sha256]
    assert (again.record.get("path"), again.record.get("result"), differing) == (killed.engine, "ok", [])


def test_the_next_apply_leaves_no_staged_file_behind_also_none_left_by_the_kill(rerun: tuple[Killed, Rerun]) -> None:
    _, again = rerun
    assert {host: files.staged for host, files in again.hosts.items()} == dict.fromkeys(again.hosts, ())


def test_the_live_plan_then_has_nothing_to_do(rerun: tuple[Killed, Rerun]) -> None:
    _, again = rerun
    assert again.plan_status == 0, again.plan
