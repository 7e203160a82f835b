"""``make bench`` (database cluster part): how long the database takes to accept writes again after its leader dies.

The lab of tests/lab/test_database_cluster.py (``inventories/ha`` without the CRM and monitoring nodes: pbx1 and
db1-db3 with Patroni and etcd, on 10.243.0.0/24), applied as the product applies it. ROUNDS times: the current
leader is killed as a power cut would (SIGKILL of its container's cgroup), the seconds until another member
accepts writes are measured, and the killed node boots again and rejoins before the next round. Prints each
round and the worst. Needs root and the lab's tools.

    .venv/bin/python -m tests.bench.failover_bench [ROUNDS]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from ekc.lab.model import preflight
from ekc.lab.nodes import crash_node, lab_up
from tests.lab.test_database_cluster import MEMBERS, _leader, _trim, _wait_members
from tests.support.labregion import AppliedRegion, applied_region

REGION = "dbfailbench"
PREFIX = "10.243."
DEFAULT_ROUNDS = 3
LIMIT_S = 90


def _writable(region: AppliedRegion, node: str) -> bool:
    out = region.run(node, "runuser -u postgres -- psql -X -At -c 'SELECT pg_is_in_recovery()'", timeout=10)
    return out.returncode == 0 and out.stdout.strip() == "f"


def _round(region: AppliedRegion) -> tuple[str, str, float]:
    """Kill the leader; (killed, new leader, seconds until it took writes)."""
    alive = next(m for m in MEMBERS if region.run(m, "true", timeout=10).returncode == 0)
    leader = _leader(_wait_members(region, alive))
    others = [m for m in MEMBERS if m != leader]
    crash_node(region.lab, leader)
    killed = time.monotonic()
    while time.monotonic() - killed < LIMIT_S:
        for node in others:
            if _writable(region, node):
                seconds = time.monotonic() - killed
                lab_up(region.lab)
                _wait_members(region, node, timeout=300)
                return leader, node, seconds
        time.sleep(0.5)
    raise SystemExit(f"no member took writes within {LIMIT_S} s of {leader}'s death")


def main(rounds: int) -> None:
    missing = preflight()
    if missing:
        raise SystemExit("the lab cannot run here: " + "; ".join(missing))
    with (tempfile.TemporaryDirectory(prefix="ekc-failbench-") as tmp,
          applied_region(Path(tmp), REGION, source="ha", prefix=PREFIX, edit=_trim) as region):
        times = []
        for number in range(1, rounds + 1):
            killed, promoted, seconds = _round(region)
            times.append(seconds)
            print(f"round {number}: {killed} killed, {promoted} takes writes after {seconds:.1f} s")
    print(f"database failover (leader killed, Patroni ttl 15 s): worst {max(times):.1f} s, "
          f"mean {sum(times) / len(times):.1f} s over {len(times)} rounds")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_ROUNDS)
