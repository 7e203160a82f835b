"""The WAL archive of a lab's PostgreSQL node: a restore replays what was archived, and no more.

A base backup plus the archive restore every write up to the last archived WAL segment; the segment being
written is archived when it fills up or after ``archive_timeout``. A test that wants the writes of its last
seconds back after a restore switches to a new segment first and waits until the archiver has copied the old
one, as an operator does before a planned restore.
"""

from __future__ import annotations

import time

import pytest

from tests.support.labregion import AppliedRegion


def sql(region: AppliedRegion, node: str, query: str, database: str = "postgres") -> str:
    """One query on ``node`` as postgres; its rows, unaligned."""
    out = region.run(node, f"runuser -u postgres -- psql -X -At -v ON_ERROR_STOP=1 -d {database} -c \"{query}\"")
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def wait_archived(region: AppliedRegion, node: str, timeout_s: int = 60) -> None:
    """Switch WAL and wait until the archiver has copied the segment that holds the last write."""
    segment = sql(region, node, "SELECT pg_walfile_name(pg_current_wal_lsn())")
    sql(region, node, "SELECT pg_switch_wal()")
    for _ in range(timeout_s):
        if sql(region, node, "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") >= segment:
            return
        time.sleep(1)
    pytest.fail(f"{node}: WAL segment {segment} was not archived within {timeout_s} s")
