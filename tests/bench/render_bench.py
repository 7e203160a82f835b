"""``make bench`` (render part): validate, secrets and render of synthetic regions, and the CLI end to end.

Synthetic regions (tests/support/synthetic.py) of 1,000, 5,000 and 10,000 operators on 200 departments and
20 PBX nodes. Every figure is the best of 3 runs (the others measure the machine, which is shared), and each
run is a fresh interpreter, so that caches and peak memory are its own. Printed:

- per size: hosts, files, output size and bytes per operator, seconds to validate the spec, to check (in
  memory: fill_secrets over an empty tree) and generate its secrets, to render (``render_region``), peak RSS;
- linearity: seconds per 1,000 operators at each size, and the marginal cost of 1,000 more operators from
  1k to 5k and from 5k to 10k: equal when growth is linear (fixed costs only make small regions look
  dear), flagged SUPER-LINEAR when the second is clearly larger;
- ``deploy.py render`` end to end and ``deploy.py secrets init`` fresh and rerun, on a temporary copy of the
  10,000-operator inventory with the vault password in $EKC_VAULT_PASSWORD;
- what dominates the CLI render: its phases timed, and the hottest function of the largest one (cProfile).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SIZES = (1_000, 5_000, 10_000)
CLI_SIZE = 10_000
REPEATS = 3  # each figure is the fastest of this many runs
REPO = Path(__file__).resolve().parents[2]
PASSWORD = "render-bench-vault-password-0123456789"
SUPER_LINEAR = 1.5  # marginal cost of operators 5k..10k over that of 1k..5k above which growth is flagged
NOISE_S = 0.02  # per 1,000 operators: differences below this are the machine, not the code


def measure(operators: int) -> dict[str, float]:
    """Validate, fill the secrets of and render one synthetic region; seconds per phase and peak RSS in MiB."""
    import resource  # noqa: PLC0415

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
        "secrets_s": generated - validated,
        "render_s": rendered - generated,
        "peak_mib": peak_kib / 1024,
    }


def phases(region_dir: str, out: str) -> dict[str, float]:
    """``deploy.py render``'s steps in this interpreter, timed one by one (imports included).

    As in the command (``region_sized``), the cyclic garbage collector is off once the modules are imported.
    """
    import gc  # noqa: PLC0415

    started = time.perf_counter()
    from ekc.render.build import write_build  # noqa: PLC0415
    from ekc.render.region import render_region  # noqa: PLC0415
    from ekc.spec.load import load_spec, message_path  # noqa: PLC0415
    from ekc.spec.secrets import load_secrets  # noqa: PLC0415

    times = {"imports": time.perf_counter() - started}
    gc.disable()

    def step(name: str, run: Callable[[], Any]) -> Any:
        begun = time.perf_counter()
        value = run()
        times[name] = time.perf_counter() - begun
        return value

    loaded = step("load_spec", lambda: load_spec(region_dir))
    shown = message_path(loaded.region_dir)
    secrets = step("load_secrets", lambda: load_secrets(loaded.region, loaded.region_dir, shown, PASSWORD.encode()))
    result = step("render_region", lambda: render_region(loaded, secrets))
    step("write_build", lambda: write_build(result, Path(out)))
    return times


def hottest(profile: str, phase: str) -> str:
    """The function with the most own time among those ``phase`` calls, directly or not, in a cProfile dump."""
    import pstats  # noqa: PLC0415

    stats: dict[Any, Any] = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    callees: dict[Any, set[Any]] = {}
    for function, (*_, callers) in stats.items():
        for caller in callers:
            callees.setdefault(caller, set()).add(function)
    roots = [f for f in stats if f[2] == phase and f[0].endswith(".py")]
    seen, stack = set(roots), list(roots)
    while stack:
        for callee in callees.get(stack.pop(), ()):
            if callee not in seen:
                seen.add(callee)
                stack.append(callee)
    python = [f for f in seen if f[0] != "~"]
    if not python:
        return "?"
    top = max(python, key=lambda f: stats[f][2])
    where = Path(top[0])
    shown = where.relative_to(REPO).as_posix() if where.is_relative_to(REPO) else where.name
    return f"{shown}:{top[1]}({top[2]})"


def _fresh(args: list[str]) -> Any:
    """Run this module with ``args`` in a fresh interpreter and return the JSON it prints."""
    done = subprocess.run([sys.executable, "-m", "tests.bench.render_bench", *args], check=True,
                          capture_output=True, text=True, cwd=REPO, env=_env())
    return json.loads(done.stdout)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("EKC_VAULT_PASSWORD_FILE",)}
    return {**env, "EKC_VAULT_PASSWORD": PASSWORD, "PYTHONPATH": str(REPO)}


def _cli(*args: str) -> float:
    """Seconds for one ``deploy.py`` command, from starting the interpreter to its exit."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "deploy.py", *args], check=True, capture_output=True, cwd=REPO, env=_env())
    return time.perf_counter() - started


def _best(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: min(run[key] for run in runs) for key in runs[0]}


def _size_table() -> dict[int, dict[str, float]]:
    print(f"{'operators':>10} {'hosts':>6} {'files':>6} {'MiB out':>8} {'B/op':>7} {'validate s':>11} "
          f"{'secrets s':>10} {'render s':>9} {'peak MiB':>9}")
    best: dict[int, dict[str, float]] = {}
    for size in SIZES:
        r = best[size] = _best([_fresh(["--one", str(size)]) for _ in range(REPEATS)])
        print(f"{size:>10,} {r['hosts']:>6.0f} {r['files']:>6.0f} {r['bytes'] / 2**20:>8.2f} "
              f"{r['bytes'] / size:>7,.0f} {r['validate_s']:>11.3f} {r['secrets_s']:>10.3f} {r['render_s']:>9.3f} "
              f"{r['peak_mib']:>9.1f}")
    return best


def linearity(best: dict[int, dict[str, float]], key: str) -> str:
    """Seconds per 1,000 operators at each size and the marginal cost of 1,000 more, with a verdict."""
    small, middle, large = SIZES
    per_1k = "/".join(f"{best[size][key] / size * 1000:.3f}" for size in SIZES)
    first = (best[middle][key] - best[small][key]) / (middle - small) * 1000
    second = (best[large][key] - best[middle][key]) / (large - middle) * 1000
    verdict = "SUPER-LINEAR" if second > SUPER_LINEAR * max(first, 0) + NOISE_S else "linear"
    ratio = best[large][key] / best[small][key]
    return (f"{key:<11} per 1k ops at 1k/5k/10k: {per_1k} s; +1k ops costs {first:.3f} s (1k-5k), "
            f"{second:.3f} s (5k-10k); 10k/1k = {ratio:.1f}x: {verdict}")


def _cli_figures(work: Path) -> tuple[float, float, float, Path]:
    """Best-of-3 seconds of secrets init (fresh, rerun) and render; returns a ready region too."""
    from tests.support.synthetic import synthetic_yaml  # noqa: PLC0415

    text = synthetic_yaml(CLI_SIZE)
    fresh = []
    for run in range(REPEATS):
        region = work / f"fresh{run}"
        region.mkdir()
        (region / "region.yml").write_text(text, encoding="utf-8")
        fresh.append(_cli("secrets", "init", str(region)))
    region = work / "fresh0"
    rerun = min(_cli("secrets", "init", str(region)) for _ in range(REPEATS))
    out = work / "build"  # the 2nd and 3rd renders replace the previous build, as a rerun does
    render = min(_cli("render", str(region), "-o", str(out)) for _ in range(REPEATS))
    return min(fresh), rerun, render, region


def _dominant(region: Path, work: Path) -> str:
    times = _best([_fresh(["--phases", str(region), str(work / "phases")]) for _ in range(REPEATS)])
    profile = work / "render.prof"
    subprocess.run([sys.executable, "-m", "cProfile", "-o", str(profile), "deploy.py", "render", str(region), "-o",
                    str(work / "profiled")], check=True, capture_output=True, cwd=REPO, env=_env())
    total = sum(times.values())
    name = max(times, key=lambda phase: times[phase])
    where = hottest(str(profile), name) if name != "imports" else "module imports"
    others = ", ".join(f"{phase} {seconds:.2f}" for phase, seconds in times.items() if phase != name)
    return (f"dominant: {name} {times[name]:.2f} s of {total:.2f} s ({times[name] / total:.0%}), hottest in the "
            f"profile: {where}; then {others} s")


def main() -> None:
    """Print the size table, the linearity rows, the CLI figures and what dominates."""
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        print(json.dumps(measure(int(sys.argv[2]))))
        return
    if len(sys.argv) == 4 and sys.argv[1] == "--phases":
        print(json.dumps(phases(sys.argv[2], sys.argv[3])))
        return
    print(f"synthetic regions, 200 departments, 20 PBX nodes; every figure the best of {REPEATS} fresh runs")
    best = _size_table()
    for key in ("validate_s", "secrets_s", "render_s"):
        print(linearity(best, key))
    work = Path(tempfile.mkdtemp(prefix="ekc-render-bench-"))
    try:
        fresh, rerun, render, region = _cli_figures(work)
        print(f"deploy.py render, {CLI_SIZE:,} operators, end to end: {render:.2f} s")
        print(f"deploy.py secrets init, {CLI_SIZE:,} operators: {fresh:.2f} s fresh, {rerun:.2f} s rerun")
        print(_dominant(region, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
