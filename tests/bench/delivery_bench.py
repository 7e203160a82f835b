"""``make bench`` (delivery part): bundle build time and size, apply time fresh and no-op for each engine.

Runs on the example region in the lab: for each engine the lab is brought down and up again, so "fresh"
means freshly booted nodes that have nothing but the base OS. Needs root and the lab's tools.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from ekc.bundle.region import build_region_bundle
from ekc.bundle.serve import serve_bundle
from ekc.cli.base import load_with_secrets
from ekc.engines.apply import engine
from ekc.engines.common import deploy_key
from ekc.lab.model import preflight
from ekc.lab.nodes import lab_down, lab_up
from ekc.lab.region import lab_for
from ekc.render.build import write_build
from ekc.render.region import render_region

REGION = "example"
WORK = Path("build") / "bench"


def _bundle_figures(loaded, secrets) -> None:  # type: ignore[no-untyped-def]
    out = WORK / "bundle"
    shutil.rmtree(out, ignore_errors=True)
    result = build_region_bundle(loaded, secrets, out, relock=False)
    print(f"bundle build (warm caches): {result.seconds:.1f} s, {result.debs} debs, {result.wheels} wheels, "
          f"{result.total_bytes / 2**20:.1f} MiB")


def _apply_figures(loaded, secrets, build: Path) -> dict[str, tuple[float, float]]:  # type: ignore[no-untyped-def]
    net = loaded.region.network
    figures: dict[str, tuple[float, float]] = {}
    with deploy_key(secrets) as key:
        lab = lab_for(loaded, secrets, key)
        for name in ("pyinfra", "ansible"):
            lab_down(lab)
            lab_up(lab)
            with serve_bundle(WORK / "bundle", net.deploy_host, net.bundle_port):
                started = time.perf_counter()
                fresh = engine(name)(build, key)
                fresh_s = time.perf_counter() - started
                started = time.perf_counter()
                noop = engine(name)(build, key)
                noop_s = time.perf_counter() - started
            assert fresh.ok and noop.ok and noop.changes == 0, f"{name}: apply failed or was not idempotent"
            figures[name] = (fresh_s, noop_s)
            print(f"apply {name:<8} fresh {fresh_s:6.1f} s ({fresh.changes} changes)   no-op {noop_s:5.1f} s")
    return figures


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
    figures = _apply_figures(loaded, secrets, build)
    py, an = figures["pyinfra"], figures["ansible"]
    print(f"ratio pyinfra/ansible: fresh {py[0] / an[0]:.2f}, no-op {py[1] / an[1]:.2f} "
          f"({len(loaded.region.nodes)} nodes)")


if __name__ == "__main__":
    main()
