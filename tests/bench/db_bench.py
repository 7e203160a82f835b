"""``make bench`` (database part): base backup and restore times for a call-record database of a given size.

A lab of one PostgreSQL node (``inventories/small``'s ekc1 with the postgresql role alone, on 10.238.4.0/24: the spec
of tests/lab/test_db_backup.py, rendered as the product renders it). ekc1's queue_log and cdr are filled with
synthetic rows (a contact center's months: ROWS queue_log events and ROWS/5 CDRs), then `deploy.py db backup` runs on it
and `deploy.py db restore` puts the backup back and replays the archived WAL. Prints the database size and each
step's time as the CLI measured it. Needs root and the lab's tools.

    .venv/bin/python -m tests.bench.db_bench [ROWS]
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ekc.lab.model import preflight
from tests.lab.test_db_backup import database_nodes
from tests.support.labregion import REPO, VAULT_PASSWORD, AppliedRegion, applied_region

REGION = "dbtestbench"
PREFIX = "10.238.4."
DEFAULT_ROWS = 2_000_000

FILL = """
INSERT INTO public.queue_log (time, callid, queuename, agent, event, data1, data2, data3)
SELECT now() - (g || ' seconds')::interval, 'bench-' || (g / 5), 'social', 'PJSIP/2001',
       (ARRAY['ENTERQUEUE', 'CONNECT', 'COMPLETECALLER', 'RATING', 'ABANDON'])[1 + g % 5], (g % 60)::text,
       (g % 600)::text, '1'
  FROM generate_series(1, {rows}) AS g;
INSERT INTO public.cdr (calldate, src, dst, dcontext, channel, start, answer, "end", duration, billsec,
                        disposition, uniqueid, linkedid, department, userfield)
SELECT now() - (g || ' seconds')::interval, '+7383' || lpad(g::text, 7, '0'), '601', 'ekc-dept-social',
       'PJSIP/trunk-carrier-' || g, now(), now(), now(), 120, 100, 'ANSWERED', 'bench-' || g, 'bench-' || g,
       'social', 'rating=5'
  FROM generate_series(1, {rows} / 5) AS g;
"""


def _sql(region: AppliedRegion, node: str, sql: str) -> str:
    out = region.run(node, f"runuser -u postgres -- psql -X -At -q -v ON_ERROR_STOP=1 -d asterisk <<'SQL'\n{sql}\nSQL",
                     timeout=3600)
    if out.returncode != 0:
        raise SystemExit(f"{node}: {out.stderr}")
    return out.stdout.strip()


def _cli(region: AppliedRegion, *args: str) -> str:
    env = {"EKC_VAULT_PASSWORD": VAULT_PASSWORD, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    done = subprocess.run([sys.executable, str(REPO / "deploy.py"), "db", *args, str(region.region_dir),
                           "--known-hosts", str(region.lab.known_hosts)],
                          capture_output=True, text=True, env=env, timeout=7200, check=False)
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    return done.stdout


def _seconds(text: str, pattern: str) -> float:
    match = re.search(pattern + r".*?\(([0-9.]+) s\)", text)
    return float(match.group(1)) if match else float("nan")


def main(rows: int) -> None:
    """Fill, back up, restore; print the figures."""
    missing = preflight()
    if missing:
        raise SystemExit("the lab cannot run here: " + "; ".join(missing))
    with (tempfile.TemporaryDirectory(prefix="ekc-dbbench-") as tmp,
          applied_region(Path(tmp), REGION, source="small", prefix=PREFIX, edit=database_nodes) as region):
        started = time.monotonic()
        _sql(region, "ekc1", FILL.format(rows=rows))
        fill_s = time.monotonic() - started
        size = _sql(region, "ekc1", "SELECT pg_size_pretty(pg_database_size('asterisk'))")
        backup = _cli(region, "backup")
        restore = _cli(region, "restore", "-y")
        restored = _sql(region, "ekc1", "SELECT count(*) FROM public.queue_log")
    print(f"database asterisk: {rows:,} queue_log rows + {rows // 5:,} CDRs, {size} (filled in {fill_s:.1f} s)")
    print(f"db backup (base backup, compressed tar): {_seconds(backup, 'backup'):.1f} s")
    print(f"db restore: restore + WAL replay {_seconds(restore, 'restored'):.1f} s; "
          f"ekc1 has {int(restored):,} queue_log rows")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_ROWS)
