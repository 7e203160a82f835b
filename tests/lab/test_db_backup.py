"""Backups on real lab nodes: `deploy.py db backup` takes a base backup, WAL keeps being archived, and
`deploy.py db restore` puts the backup back onto the node and replays the archive: the node then has the rows
written before the backup and those written after it, and keeps its old data directory beside the new one.

The region is ``inventories/small`` with ekc1 carrying the postgresql role alone, on 10.238.2.0/24: one
database node and nothing else, so the lab gets exactly what the product renders for it (the base layer and
PostgreSQL; no exporter, the region has no monitoring node). (Two or more postgresql nodes form a Patroni
cluster: tests/lab/test_database_cluster.py.) Backup and restore times are printed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ekc.verify.run import run_verify
from tests.support.labregion import REPO, VAULT_PASSWORD, AppliedRegion, applied_region, worker_name

pytestmark = [pytest.mark.lab, pytest.mark.slow]

REGION = worker_name("dbtestb")
PREFIX = f"10.238.{2 + int(os.environ.get('PYTEST_XDIST_WORKER', 'gw0').removeprefix('gw') or 0)}."


VERIFY = REPO / "tests" / "verify"
POSTGRESQL_CHECKS = set(re.findall(r"^def (test_\w+)", (VERIFY / "test_postgresql.py").read_text(), re.M))


def database_nodes(text: str) -> str:
    """``inventories/small``'s ekc1 with the postgresql role alone."""
    marker = "roles: [asterisk, postgresql, crm, monitoring]}\n"
    assert marker in text, "inventories/small's node line changed shape"
    return text.replace(marker, "roles: [postgresql]}\n", 1)


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppliedRegion]:
    with applied_region(tmp_path_factory.mktemp("dbb"), REGION, source="small", prefix=PREFIX,
                        edit=database_nodes) as applied:
        yield applied


def _sql(region: AppliedRegion, node: str, sql: str) -> str:
    out = region.run(node, f"runuser -u postgres -- psql -X -At -v ON_ERROR_STOP=1 -d asterisk -c \"{sql}\"")
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def _cli(region: AppliedRegion, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EKC_VAULT_PASSWORD": VAULT_PASSWORD}
    return subprocess.run([sys.executable, str(REPO / "deploy.py"), "db", *args, str(region.region_dir),
                           "--known-hosts", str(region.lab.known_hosts)],
                          capture_output=True, text=True, env=env, timeout=1800, check=False)


def _wait_archived(region: AppliedRegion, node: str) -> None:
    """Switch WAL and wait until the archiver has copied the segment that holds the last write."""
    segment = _sql(region, node, "SELECT pg_walfile_name(pg_current_wal_lsn())")
    _sql(region, node, "SELECT pg_switch_wal()")
    for _ in range(60):
        if _sql(region, node, "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") >= segment:
            return
        time.sleep(1)
    pytest.fail(f"{node}: WAL segment {segment} was not archived within 60 s")


def test_verify_passes_and_a_second_apply_changes_nothing(region: AppliedRegion, tmp_path: Path) -> None:
    """The whole verify suite passes, its PostgreSQL checks (TLS only, no weak pg_hba line, non-TLS refused,
    roles) included."""
    result = run_verify(region.build, region.key, junit=tmp_path / "verify.xml", bundle_lock=region.lock,
                        known_hosts=region.lab.known_hosts)
    assert [c for c in result.checks if c.outcome in ("failed", "error")] == []
    assert {c.host for c in result.checks if c.outcome == "passed" and c.test.split("[")[0] in POSTGRESQL_CHECKS} == {
        "ekc1"}, result.checks
    again = region.apply()
    assert again.changes == 0, [(h.host, h.changed_files, h.changed_services) for h in again.hosts]


def test_backup_then_restore_keeps_every_row(region: AppliedRegion) -> None:
    insert = "INSERT INTO public.queue_log (callid, queuename, agent, event) VALUES ('{}', 'social', 'NONE', 'X')"
    _sql(region, "ekc1", insert.format("before-backup"))
    backup = _cli(region, "backup")
    assert backup.returncode == 0, backup.stderr
    print(backup.stdout.strip())
    _sql(region, "ekc1", insert.format("after-backup"))
    _wait_archived(region, "ekc1")

    restore = _cli(region, "restore", "-y")
    assert restore.returncode == 0, restore.stderr
    print(restore.stdout.strip())
    rows = _sql(region, "ekc1", "SELECT callid FROM public.queue_log WHERE event = 'X' ORDER BY id").splitlines()
    assert rows == ["before-backup", "after-backup"]
    assert _sql(region, "ekc1", "SELECT pg_is_in_recovery()") == "f"
    # stopping the server stops the setup unit that requires it: the restore starts it again
    assert region.run("ekc1", "systemctl is-active ekc-postgresql-setup").stdout.strip() == "active"
    leftover = region.run("ekc1", "ls /etc/postgresql/18/main/conf.d/; "
                                  "ls -d /var/lib/postgresql/18/main.before-restore-*")
    assert "90-ekc-restore.conf" not in leftover.stdout and "main.before-restore-" in leftover.stdout, leftover


def test_backup_timer_is_scheduled_and_retention_keeps_the_newest(region: AppliedRegion) -> None:
    timer = region.run("ekc1", "systemctl is-enabled ekc-postgresql-backup.timer; "
                               "systemctl show -P NextElapseUSecRealtime ekc-postgresql-backup.timer")
    enabled, next_run = timer.stdout.split("\n", 1)
    assert enabled == "enabled" and next_run.strip(), timer.stdout
    # Age every backup past the retention period: the run removes all but the one it has just made.
    region.run("ekc1", "find /var/backups/ekc/base -mindepth 1 -maxdepth 1 -exec touch -d '30 days ago' {} +")
    made = region.run("ekc1", "systemctl start ekc-postgresql-backup.service && ls -1 /var/backups/ekc/base")
    assert made.returncode == 0, made.stderr
    assert len(made.stdout.split()) == 1, made.stdout


def test_wrong_backup_name_is_refused(region: AppliedRegion) -> None:
    done = _cli(region, "restore", "--from", "20000101T000000Z", "-y")
    assert done.returncode == 1 and "no backup" in done.stderr, done.stderr
