"""``make bench``: time and peak memory of validate + render for synthetic regions.

Each size runs in a fresh interpreter so that its peak memory is its own. Secrets are generated in memory
(the vault's encryption is not what is measured).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

SIZES = (1_000, 5_000, 10_000)
REPEATS = 3  # each size runs this many times; the fastest run is reported (the others measure the machine)


def measure(operators: int) -> dict[str, float]:
    """Validate and render one synthetic region; return seconds per phase and peak RSS in MiB."""
    import resource  # noqa: PLC0415
    import tempfile  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    from ekc.render.region import render_region  # noqa: PLC0415
    from ekc.spec.load import load_spec  # noqa: PLC0415
    from ekc.spec.secretgen import fill_secrets  # noqa: PLC0415
    from ekc.spec.secrets import SecretsView, required_secrets  # noqa: PLC0415
    from tests.support.synthetic import synthetic_yaml  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp:
        spec_path = Path(tmp) / "synthetic" / "region.yml"
        spec_path.parent.mkdir()
        spec_path.write_text(synthetic_yaml(operators), encoding="utf-8")
        started = time.perf_counter()
        loaded = load_spec(spec_path)
        validated = time.perf_counter()
        tree, _ = fill_secrets({}, required_secrets(loaded.region))
        secrets = SecretsView(tree)
        generated = time.perf_counter()
        result = render_region(loaded, secrets)
        rendered = time.perf_counter()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "operators": operators,
        "hosts": len(result.manifest.hosts),
        "files": sum(len(h.files) for h in result.manifest.hosts),
        "bytes": sum(len(c) for c in result.contents.values()),
        "validate_s": validated - started,
        "render_s": rendered - generated,
        "total_s": (validated - started) + (rendered - generated),
        "peak_mib": peak_kib / 1024,
    }


def main() -> None:
    """Run every size in fresh processes and print a table (best of REPEATS per size)."""
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        print(json.dumps(measure(int(sys.argv[2]))))
        return
    print(f"{'operators':>10} {'hosts':>6} {'files':>6} {'MiB out':>8} {'validate s':>11} {'render s':>9} "
          f"{'total s':>8} {'peak MiB':>9}")
    for size in SIZES:
        runs = [
            json.loads(subprocess.run([sys.executable, "-m", "tests.bench.render_bench", "--one", str(size)],
                                      check=True, capture_output=True, text=True).stdout)
            for _ in range(REPEATS)
        ]
        r = min(runs, key=lambda run: run["total_s"])
        print(f"{r['operators']:>10,} {r['hosts']:>6} {r['files']:>6} {r['bytes'] / 2**20:>8.2f} "
              f"{r['validate_s']:>11.3f} {r['render_s']:>9.3f} {r['total_s']:>8.3f} {r['peak_mib']:>9.1f}")


if __name__ == "__main__":
    main()
