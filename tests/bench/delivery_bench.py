"""``make bench`` (delivery part): bundle build time and size; apply time fresh and no-op for each engine and
for the fast path; an IVR edit to live through the fast path, and through the engine for comparison.

Runs on the example region in the lab: for each engine the lab is brought down and up again, so "fresh"
means freshly booted nodes that have nothing but the base OS. Every other figure is a user's, end to end: the
CLI itself (``deploy.py apply example -y``) run from a copy of the example inventory at the same relative
path outside the checkout (so it renders byte for byte what the lab got), timed from the call. "Live" is the moment
``dialplan show ekc-menu-main`` on pbx1 first shows the new key (polled over one shared SSH connection from
the moment of the call); the split (start-up, load, render, plan, push+reload) comes from the apply record.
Needs root and the lab's tools.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ekc.bundle.region import build_region_bundle
from ekc.bundle.serve import serve_bundle
from ekc.cli.base import load_with_secrets
from ekc.engines.apply import engine
from ekc.engines.common import deploy_key
from ekc.engines.record import read_record
from ekc.engines.ssh import SshAccess, run_on_host, shared_connections
from ekc.lab.model import Lab, preflight
from ekc.lab.nodes import lab_down, lab_up
from ekc.lab.region import lab_for
from ekc.paths import REPO_ROOT
from ekc.render.build import write_build
from ekc.render.region import render_region

REGION = "example"
WORK = Path("build") / "bench"
NODE = "pbx1"
TRIALS = 3
MENU_KEY = '      "2": {department: health}\n'
NEW_KEY = '      "7": {department: health}\n'
_RECORD_LINE = re.compile(r"^apply record: (\S+)", re.MULTILINE)


def _bundle_figures(loaded, secrets) -> None:  # type: ignore[no-untyped-def]
    out = WORK / "bundle"
    shutil.rmtree(out, ignore_errors=True)
    result = build_region_bundle(loaded, secrets, out, relock=False)
    print(f"bundle build (warm caches): {result.seconds:.1f} s, {result.debs} debs, {result.wheels} wheels, "
          f"{result.total_bytes / 2**20:.1f} MiB")


# --- the CLI, as a user runs it -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CliApply:
    """One ``deploy.py apply`` run: its wall time from the call, its output and its apply record."""

    seconds: float
    output: str
    record: dict[str, object]

    @property
    def path(self) -> str:
        """The way the apply went: "fast path", "pyinfra" or "ansible"."""
        return str(self.record["path"])

    def step(self, name: str) -> float:
        """Seconds of one step of the record (load, render, plan, apply, total)."""
        steps = self.record["seconds"]
        assert isinstance(steps, dict)
        return float(steps.get(name, 0.0))


@contextmanager
def cli_inventory() -> Iterator[Path]:
    """A copy of ``inventories/example`` (secrets and vault password included) at ``inventories/example`` in a
    scratch folder outside the checkout: run from there, the spec's path in the rendered files is the same."""
    with tempfile.TemporaryDirectory(prefix="ekc-bench-") as tmp:
        root = Path(tmp)
        shutil.copytree(REPO_ROOT / "inventories" / REGION, root / "inventories" / REGION)
        yield root


def cli_apply(root: Path, *args: str) -> CliApply:
    """``deploy.py apply <region> -y [args]`` from ``root``; fails loudly unless it succeeds."""
    argv = [sys.executable, str(REPO_ROOT / "deploy.py"), "apply", f"./inventories/{REGION}", "-y",
            "--bundle", str((WORK / "bundle").resolve()), "--record-dir", str((WORK / "records").resolve()), *args]
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=root, capture_output=True, text=True, timeout=1800, check=False)
    seconds = time.perf_counter() - started
    assert done.returncode == 0, f"{' '.join(argv)}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    found = _RECORD_LINE.search(done.stdout)
    assert found, f"no apply record named in: {done.stdout}"
    return CliApply(seconds, done.stdout, read_record(Path(found.group(1))))


def set_new_key(root: Path, present: bool) -> None:
    """The IVR edit: main-menu key 7 (also to health) added to the spec copy, or taken out again."""
    spec = root / "inventories" / REGION / "region.yml"
    text = spec.read_text(encoding="utf-8").replace(NEW_KEY, "")
    assert MENU_KEY in text, "the example's IVR changed: update the bench"
    spec.write_text(text.replace(MENU_KEY, MENU_KEY + NEW_KEY) if present else text, encoding="utf-8")


@contextmanager
def first_seen(access: SshAccess, address: str, shown: Callable[[str], bool]) -> Iterator[dict[str, float]]:
    """Poll pbx1's main menu from now on; ``["at"]`` is when ``shown(menu)`` first held (perf_counter)."""
    seen: dict[str, float] = {}
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            menu = run_on_host(access, NODE, address, "asterisk -rx 'dialplan show ekc-menu-main'\n", 30)
            if shown(menu):
                seen["at"] = time.perf_counter()
                return
            time.sleep(0.02)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        thread.join(60)
        stop.set()


def ivr_edit(root: Path, access: SshAccess, address: str, *args: str) -> tuple[float, CliApply]:
    """Add key 7 and apply: seconds from the call to the key in the dialplan, and the run; then take it out."""
    set_new_key(root, present=True)
    with first_seen(access, address, lambda menu: "'7' =>" in menu) as seen:
        started = time.perf_counter()
        run = cli_apply(root, *args)
    live = seen.get("at", float("inf")) - started
    set_new_key(root, present=False)
    with first_seen(access, address, lambda menu: "'7' =>" not in menu):
        cli_apply(root)
    return live, run


# --- the figures ----------------------------------------------------------------------------------------------


def _apply_figures(loaded, secrets, build: Path, root: Path) -> tuple[dict[str, float], Lab]:  # type: ignore[no-untyped-def]
    """Per engine: a fresh apply on new nodes (the engine's API), then a no-op re-apply (the CLI)."""
    net = loaded.region.network
    fresh_s: dict[str, float] = {}
    noop: dict[str, float] = {}
    with deploy_key(secrets) as key:
        lab = lab_for(loaded, secrets, key)
        try:
            for name in ("pyinfra", "ansible"):
                lab_down(lab)
                lab_up(lab)
                with serve_bundle(WORK / "bundle", net.deploy_host, net.bundle_port):
                    started = time.perf_counter()
                    fresh = engine(name)(build, key)
                    fresh_s[name] = time.perf_counter() - started
                assert fresh.ok, f"{name}: the fresh apply failed: {[(h.host, h.error) for h in fresh.hosts]}"
                again = cli_apply(root, "--engine", name, "--no-fast-path")
                hosts = again.record["hosts"]
                assert again.path == name and isinstance(hosts, list) and not any(h["changes"] for h in hosts), (
                    f"{name}: the second apply was not a no-op: {again.output}")
                noop[name] = again.seconds
                print(f"apply {name:<8} fresh {fresh_s[name]:6.1f} s ({fresh.changes} changes)   "
                      f"no-op {again.seconds:5.1f} s (CLI, --no-fast-path)")
        except BaseException:
            lab_down(lab)  # a failed bench leaves nothing running
            raise
    print(f"ratio pyinfra/ansible: fresh {fresh_s['pyinfra'] / fresh_s['ansible']:.2f}, "
          f"no-op {noop['pyinfra'] / noop['ansible']:.2f} ({len(loaded.region.nodes)} nodes)")
    return noop, lab


def _fast_path_figures(secrets, lab: Lab, root: Path, noop: dict[str, float]) -> None:  # type: ignore[no-untyped-def]
    """The fast path's no-op, then the IVR edit to live: best of TRIALS, and once through the engine."""
    again = cli_apply(root)
    assert again.record["result"] == "nothing to do", again.output
    print(f"no-op re-apply (CLI, end to end): fast path {again.seconds:.1f} s (nothing to do: render "
          f"{again.step('render'):.2f} s, plan {again.step('plan'):.2f} s), "
          + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in noop.items()))
    address = lab.node(NODE).address
    with deploy_key(secrets) as key, shared_connections(SshAccess(key, lab.known_hosts), [address]) as access:
        fast = [ivr_edit(root, access, address) for _ in range(TRIALS)]
        slow_live, slow = ivr_edit(root, access, address, "--no-fast-path")
    assert all(run.path == "fast path" for _, run in fast), [run.output for _, run in fast]
    live, best = min(fast, key=lambda trial: trial[0])
    triggers = sorted({t for h in best.record["hosts"] for t in h["triggers"]})  # type: ignore[attr-defined]
    print(f"IVR edit → live (fast path, best of {TRIALS}): {live:.1f} s to the key in the dialplan; the CLI done "
          f"in {best.seconds:.1f} s: start-up {best.seconds - best.step('total'):.2f} s, load (spec, vault) "
          f"{best.step('load'):.2f} s, render {best.step('render'):.2f} s, plan {best.step('plan'):.2f} s, "
          f"push+reload {best.step('apply'):.2f} s ({', '.join(triggers)}); "
          f"all {TRIALS}: {', '.join(f'{t:.1f}' for t, _ in fast)} s")
    print(f"IVR edit → live (engine {slow.path}, --no-fast-path, one run): {slow_live:.1f} s; the CLI done in "
          f"{slow.seconds:.1f} s (plan {slow.step('plan'):.2f} s, bundle check and engine {slow.step('apply'):.1f} s)")


def main() -> None:
    """Print the delivery figures for the example region."""
    logging.getLogger("pyinfra").setLevel(logging.ERROR)
    missing = preflight()
    if missing:
        print("delivery bench skipped: " + "; ".join(missing))
        return
    loaded, secrets = load_with_secrets(REGION, None)
    WORK.mkdir(parents=True, exist_ok=True)
    build = WORK / "build"
    write_build(render_region(loaded, secrets), build)
    _bundle_figures(loaded, secrets)
    with cli_inventory() as root:
        noop, lab = _apply_figures(loaded, secrets, build, root)
        try:
            _fast_path_figures(secrets, lab, root, noop)
        finally:
            lab_down(lab)  # the bench leaves nothing running


if __name__ == "__main__":
    main()
