"""The rendered schema and KPI views in a real PostgreSQL, against queue_log events whose figures were done by hand.

A throw-away cluster on this machine (Debian's postgresql, any version from 14: the views use date_bin) runs
the very SQL files the render gives a database node of inventories/example (time zone Asia/Novosibirsk,
UTC+7; social answers within 20 s, health within 15 s).

The fixture, on 2026-03-02 (times UTC, wait and talk in seconds; 03:00-03:15 UTC is 10:00-10:15 local):
- social s1: ENTERQUEUE 03:01, CONNECT wait 10, COMPLETECALLER talk 120, RATING 5: answered within SL;
- social s2: ENTERQUEUE 03:02, CONNECT wait 25, COMPLETEAGENT talk 60, RATING 3: answered, late;
- social s3: ENTERQUEUE 03:05, ABANDON after 40: abandoned;
- social s4: ENTERQUEUE 03:14:59, EXITWITHTIMEOUT: offered only;
- social s5: ENTERQUEUE 03:15:00 (next interval), CONNECT wait 20, BLINDTRANSFER talk 30: within SL (20 <= 20);
- health h1: ENTERQUEUE 03:03, CONNECT wait 15, COMPLETECALLER talk 200, RATING 4: within SL (15 <= 15);
- health h2: ENTERQUEUE 03:04, CONNECT wait 16, COMPLETECALLER talk 100, RATING 9 (ignored) then 2: late;
- health h3: ENTERQUEUE 03:06, EXITWITHKEY (callback): offered only;
- an operator's PAUSE (callid NONE): ignored.

By hand:
- social 10:00: offered 4, answered 2, abandoned 1, within SL 1, SL 1/4 = 25.0 %, ASA (10+25)/2 = 17.5,
  AHT (120+60)/2 = 90.0, rating (5+3)/2 = 4.00;
- social 10:15: offered 1, answered 1, abandoned 0, within SL 1, SL 100.0 %, ASA 20.0, AHT 30.0, no rating;
- health 10:00: offered 3, answered 2, abandoned 0, within SL 1, SL 1/3 = 33.3 %, ASA (15+16)/2 = 15.5,
  AHT (200+100)/2 = 150.0, rating (4+2)/2 = 3.00.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ekc.render.components.postgresql import SHARE, scram_verifier
from tests.unit.test_postgresql import render_db

PORT = 54329
HOST = "db1"
FIXTURE = """
INSERT INTO public.queue_log (time, callid, queuename, agent, event, data1, data2, data3, data4) VALUES
('2026-03-02 03:01:00+00', 's1', 'social', 'NONE', 'ENTERQUEUE', '', '+73830000001', '1', ''),
('2026-03-02 03:01:10+00', 's1', 'social', 'PJSIP/2001', 'CONNECT', '10', 's1-b', '3', ''),
('2026-03-02 03:03:10+00', 's1', 'social', 'PJSIP/2001', 'COMPLETECALLER', '10', '120', '1', ''),
('2026-03-02 03:03:20+00', 's1', 'social', 'NONE', 'RATING', '5', '', '', ''),
('2026-03-02 03:02:00+00', 's2', 'social', 'NONE', 'ENTERQUEUE', '', '+73830000002', '1', ''),
('2026-03-02 03:02:25+00', 's2', 'social', 'PJSIP/2002', 'CONNECT', '25', 's2-b', '5', ''),
('2026-03-02 03:03:25+00', 's2', 'social', 'PJSIP/2002', 'COMPLETEAGENT', '25', '60', '1', ''),
('2026-03-02 03:03:30+00', 's2', 'social', 'NONE', 'RATING', '3', '', '', ''),
('2026-03-02 03:05:00+00', 's3', 'social', 'NONE', 'ENTERQUEUE', '', '+73830000003', '1', ''),
('2026-03-02 03:05:40+00', 's3', 'social', 'NONE', 'ABANDON', '1', '1', '40', ''),
('2026-03-02 03:14:59+00', 's4', 'social', 'NONE', 'ENTERQUEUE', '', '+73830000004', '1', ''),
('2026-03-02 03:24:59+00', 's4', 'social', 'NONE', 'EXITWITHTIMEOUT', '1', '1', '600', ''),
('2026-03-02 03:15:00+00', 's5', 'social', 'NONE', 'ENTERQUEUE', '', '+73830000005', '1', ''),
('2026-03-02 03:15:20+00', 's5', 'social', 'PJSIP/2001', 'CONNECT', '20', 's5-b', '2', ''),
('2026-03-02 03:15:50+00', 's5', 'social', 'PJSIP/2001', 'BLINDTRANSFER', '2002', 'ekc-operators', '20', '30'),
('2026-03-02 03:03:00+00', 'h1', 'health', 'NONE', 'ENTERQUEUE', '', '+73830000006', '1', ''),
('2026-03-02 03:03:15+00', 'h1', 'health', 'PJSIP/2003', 'CONNECT', '15', 'h1-b', '4', ''),
('2026-03-02 03:06:35+00', 'h1', 'health', 'PJSIP/2003', 'COMPLETECALLER', '15', '200', '1', ''),
('2026-03-02 03:06:40+00', 'h1', 'health', 'NONE', 'RATING', '4', '', '', ''),
('2026-03-02 03:04:00+00', 'h2', 'health', 'NONE', 'ENTERQUEUE', '', '+73830000007', '2', ''),
('2026-03-02 03:04:16+00', 'h2', 'health', 'PJSIP/2003', 'CONNECT', '16', 'h2-b', '6', ''),
('2026-03-02 03:05:56+00', 'h2', 'health', 'PJSIP/2003', 'COMPLETECALLER', '16', '100', '2', ''),
('2026-03-02 03:06:00+00', 'h2', 'health', 'NONE', 'RATING', '9', '', '', ''),
('2026-03-02 03:06:01+00', 'h2', 'health', 'NONE', 'RATING', '2', '', '', ''),
('2026-03-02 03:06:00+00', 'h3', 'health', 'NONE', 'ENTERQUEUE', '', '+73830000008', '1', ''),
('2026-03-02 03:07:00+00', 'h3', 'health', 'NONE', 'EXITWITHKEY', '1', '1', '1', '60'),
('2026-03-02 03:08:00+00', 'NONE', 'social', 'PJSIP/2001', 'PAUSE', '', '', '', '');
"""
COLUMNS = ("offered", "answered", "abandoned", "answered_within_sl", "service_level_pct", "asa_s", "aht_s",
           "avg_rating")
EXPECTED = {
    ("social", "2026-03-02 10:00"): (4, 2, 1, 1, "25.0", "17.5", "90.0", "4.00"),
    ("social", "2026-03-02 10:15"): (1, 1, 0, 1, "100.0", "20.0", "30.0", None),
    ("health", "2026-03-02 10:00"): (3, 2, 0, 1, "33.3", "15.5", "150.0", "3.00"),
}


def _bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name))
    return Path(found[-1]).parent if found else None


class Cluster:
    """A throw-away cluster run by the postgres user, on a Unix socket and 127.0.0.1."""

    def __init__(self, bindir: Path, root: Path):
        self.bindir, self.root = bindir, root
        self.data, self.socket = root / "data", root / "run"

    def sh(self, *args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> str:
        """A command as the postgres user; its stdout (fails with stderr)."""
        cmd = ["runuser", "-u", "postgres", "--", "env", *(f"{k}={v}" for k, v in (env or {}).items()), *args]
        done = subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=False, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def psql(self, sql: str | None = None, *, file: Path | None = None, db: str = "asterisk") -> str:
        """Run SQL (a string or a file) as postgres; unaligned, tuples only."""
        args = [str(self.bindir / "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", str(self.socket),
                "-p", str(PORT), "-d", db]
        args += ["-f", str(file)] if file else ["-c", sql or ""]
        return self.sh(*args)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """initdb, start, the example's db1 schema/KPI/department SQL applied; stopped at the end."""
    bindir = _bin()
    if bindir is None or os.geteuid() != 0 or shutil.which("runuser") is None:
        pytest.skip("needs root and Debian's postgresql (apt-get install postgresql; make host-deps)")
    # Not under pytest's 0700 base directory: the postgres user must reach it.
    root = Path(tempfile.mkdtemp(prefix="ekc-pg-"))
    os.chmod(root, 0o755)
    db = Cluster(bindir, root)
    for d in (db.data, db.socket):
        d.mkdir()
        shutil.chown(d, "postgres", "postgres")
    db.sh(str(bindir / "initdb"), "-D", str(db.data), "-A", "peer", "--auth-host=scram-sha-256", "-E", "UTF8")
    opts = f"-p {PORT} -k {db.socket} -c listen_addresses=127.0.0.1"
    db.sh(str(bindir / "pg_ctl"), "-D", str(db.data), "-o", opts, "-l", str(db.socket / "log"), "-w", "start")
    try:
        sql = root / "sql"
        sql.mkdir()
        contents = render_db("inventories/example").contents
        for name in ("schema.sql", "kpi.sql", "departments.sql"):
            (sql / name).write_bytes(contents[(HOST, f"{SHARE}/{name}")])
        db.psql("CREATE ROLE asterisk LOGIN; CREATE ROLE monitoring LOGIN; CREATE ROLE crm LOGIN", db="postgres")
        db.psql("CREATE DATABASE asterisk", db="postgres")
        for name in ("schema.sql", "kpi.sql", "departments.sql"):
            db.psql(file=sql / name)
        yield db
    finally:
        subprocess.run(["runuser", "-u", "postgres", "--", str(bindir / "pg_ctl"), "-D", str(db.data), "-m", "fast",
                        "stop"], capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def fixture_loaded(cluster: Cluster) -> Cluster:
    """The hand-computed fixture in queue_log."""
    cluster.psql(FIXTURE)
    return cluster


def _interval_rows(db: Cluster) -> dict[tuple[str, str], tuple[object, ...]]:
    out = db.psql(
        "SET timezone = 'Asia/Novosibirsk'; SELECT department, to_char(interval_start, 'YYYY-MM-DD HH24:MI'), "
        + ", ".join(COLUMNS) + " FROM kpi.department_interval ORDER BY 1, 2")
    rows = {}
    for line in out.splitlines():
        dept, start, *values = line.split("|")
        rows[(dept, start)] = tuple(int(v) for v in values[:4]) + tuple(v or None for v in values[4:])
    return rows


def test_interval_view_matches_the_hand_computed_figures(fixture_loaded: Cluster) -> None:
    assert _interval_rows(fixture_loaded) == EXPECTED


def test_today_view_lists_every_department_and_counts_only_today(fixture_loaded: Cluster) -> None:
    db = fixture_loaded
    db.psql("INSERT INTO public.queue_log (time, callid, queuename, agent, event, data1) VALUES "
            "(now(), 't1', 'health', 'NONE', 'ENTERQUEUE', ''), (now(), 't1', 'health', 'PJSIP/2003', 'CONNECT', '5')")
    try:
        out = db.psql("SELECT department, offered, answered, abandoned, service_level_pct, asa_s "
                      "FROM kpi.department_today ORDER BY 1")
    finally:
        db.psql("DELETE FROM public.queue_log WHERE callid = 't1'")
    rows = {line.split("|")[0]: line.split("|")[1:] for line in out.splitlines()}
    assert set(rows) == {"social", "health", "housing", "transport", "info"}
    assert rows["health"] == ["1", "1", "0", "100.0", "5.0"]
    assert rows["social"] == ["0", "0", "0", "", ""]


def test_setup_sql_runs_again_unchanged(fixture_loaded: Cluster) -> None:
    """Idempotent: the setup's SQL applied a second time keeps data and figures."""
    db = fixture_loaded
    for name in ("schema.sql", "kpi.sql", "departments.sql"):
        db.psql(file=db.root / "sql" / name)
    assert _interval_rows(db) == EXPECTED


def test_monitoring_reads_kpi_but_not_raw_records(fixture_loaded: Cluster) -> None:
    db = fixture_loaded
    db.psql("GRANT CONNECT ON DATABASE asterisk TO monitoring", db="postgres")
    count = db.psql("SET ROLE monitoring; SELECT count(*) FROM kpi.department_interval")
    assert count.strip() == "3"
    done = subprocess.run(["runuser", "-u", "postgres", "--", str(db.bindir / "psql"), "-X", "-At", "-h",
                           str(db.socket), "-p", str(PORT), "-d", "asterisk", "-c",
                           "SET ROLE monitoring; SELECT count(*) FROM public.queue_log"],
                          capture_output=True, text=True, check=False)
    assert done.returncode != 0 and "permission denied" in done.stderr


def test_crm_reads_the_queued_calls_events_but_nothing_else(fixture_loaded: Cluster) -> None:
    db = fixture_loaded
    events = db.psql("SET ROLE crm; SELECT count(*), count(*) FILTER (WHERE callid = 'NONE') "
                     "FROM ekc.crm_queue_events")
    total, none = (int(n) for n in events.strip().split("|"))
    assert total > 0 and none == 0, events
    for sql in ("SELECT count(*) FROM public.queue_log", "SELECT count(*) FROM public.cdr",
                "DELETE FROM ekc.crm_queue_events"):
        done = subprocess.run(["runuser", "-u", "postgres", "--", str(db.bindir / "psql"), "-X", "-h",
                               str(db.socket), "-p", str(PORT), "-d", "asterisk", "-c", f"SET ROLE crm; {sql}"],
                              capture_output=True, text=True, check=False)
        assert done.returncode != 0 and ("permission denied" in done.stderr or "cannot delete" in done.stderr), (
            sql, done.stderr)


def test_asterisk_role_appends_but_cannot_read_or_delete(fixture_loaded: Cluster) -> None:
    db = fixture_loaded
    db.psql("SET ROLE asterisk; INSERT INTO public.cdr (src, dst, department, userfield) "
            "VALUES ('+73830000001', '601', 'social', 'rating=5')")
    for sql in ("SELECT count(*) FROM public.cdr", "DELETE FROM public.queue_log"):
        done = subprocess.run(["runuser", "-u", "postgres", "--", str(db.bindir / "psql"), "-X", "-h",
                               str(db.socket), "-p", str(PORT), "-d", "asterisk", "-c", f"SET ROLE asterisk; {sql}"],
                              capture_output=True, text=True, check=False)
        assert done.returncode != 0 and "permission denied" in done.stderr, sql


def test_rendered_verifier_logs_in_with_the_password_only(cluster: Cluster) -> None:
    """PostgreSQL accepts ekc's deterministic SCRAM verifier: the password logs in over TCP, another does not."""
    verifier = scram_verifier("Correct-horse-battery-9", "asterisk")
    cluster.psql(f"ALTER ROLE asterisk PASSWORD '{verifier}'", db="postgres")
    cluster.psql("GRANT CONNECT ON DATABASE asterisk TO asterisk", db="postgres")
    base = [str(cluster.bindir / "psql"), "-X", "-At", "-h", "127.0.0.1", "-p", str(PORT), "-U", "asterisk",
            "-d", "asterisk", "-c", "SELECT current_user"]
    assert cluster.sh(*base, env={"PGPASSWORD": "Correct-horse-battery-9"}).strip() == "asterisk"
    wrong = subprocess.run(["runuser", "-u", "postgres", "--", "env", "PGPASSWORD=wrong", *base],
                           capture_output=True, text=True, check=False)
    assert wrong.returncode != 0 and "password authentication failed" in wrong.stderr
