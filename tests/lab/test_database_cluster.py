"""The database survives losing its leader, on real lab nodes: a Patroni cluster of three PostgreSQL nodes with etcd on
the same three, Asterisk writing its call records through libpq's multi-host connection.

The region is ``inventories/ha`` without crm1 and mon1: pbx1 (asterisk) and db1, db2, db3 (postgresql, etcd), on
10.241.0.0/24 (queue_log reaches the database through ekc-journal only). The lab gets exactly what the product
renders for that spec. A real call goes through the IVR to an operator (SIPp on the deploy host as carrier and
phone); then db1, the leader, is killed as a power cut would (SIGKILL of its container's whole cgroup): a replica
must take writes within 30 s, the next call must be recorded without any change on pbx1, no record of the earlier
call may be missing, and db1 must come back as a replica when it boots again.
"""

from __future__ import annotations

import csv
import io
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ekc.bundle.serve import serve_bundle
from ekc.engines.ansible_engine import apply_ansible
from ekc.lab.call import Timing, call_plan, caller_number, carrier_call, operator_phone
from ekc.lab.nodes import crash_node, lab_up
from ekc.lab.region import lab_call_network
from ekc.render.components.dbcluster import PATRONI_UNIT
from ekc.verify.run import run_verify
from tests.support.labregion import (
    AppliedRegion,
    applied_region,
    node_state,
    with_asterisk_nodes,
    without_crm_and_monitoring,
    without_sip_edge,
    worker_name,
)

pytestmark = [pytest.mark.lab, pytest.mark.slow]

REGION = worker_name("dbcluster")
PREFIX = "10.241."
TIMING = Timing(talk_ms=2000)
MEMBERS = ("db1", "db2", "db3")
PATRONICTL = "patronictl -c /etc/patroni/18-main.yml"
FAILOVER_LIMIT_S = 30
CUT_AFTER_CALL_S = 25  # longer than cdr_pgsql's write, reconnect and retry against three unreachable members


def _trim(text: str) -> str:
    """pbx1 and the three database nodes only: crm1 and mon1 leave the spec, with the flows to their roles, and
    so does the SIP edge (trunks and phones reach pbx1 directly)."""
    return without_crm_and_monitoring(without_sip_edge(with_asterisk_nodes(text, 1)), 4)


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppliedRegion]:
    with applied_region(tmp_path_factory.mktemp("dbc"), REGION, source="ha", prefix=PREFIX, edit=_trim) as applied:
        yield applied


def _sql(region: AppliedRegion, node: str, sql: str) -> list[str]:
    out = region.run(node, f"runuser -u postgres -- psql -X -At -v ON_ERROR_STOP=1 -d asterisk -c \"{sql}\"")
    assert out.returncode == 0, f"{node}: {out.stderr}"
    return out.stdout.splitlines()


def _members(region: AppliedRegion, on: str) -> dict[str, dict[str, str]]:
    """The cluster's members as ``patronictl list`` on ``on`` sees them ({} while etcd does not answer)."""
    out = region.run(on, f"{PATRONICTL} list -f json")
    if out.returncode != 0:
        print(f"patronictl on {on}: {out.stderr.strip().splitlines()[-1:]}")
        return {}
    return {m["Member"]: m for m in json.loads(out.stdout)}


def _wait_members(region: AppliedRegion, on: str, timeout: float = 180,
                  count: int = 3) -> dict[str, dict[str, str]]:
    """The members once all ``count`` run (the leader) or stream from it (the replicas), one of them in sync."""
    deadline = time.monotonic() + timeout
    members: dict[str, dict[str, str]] = {}
    wanted = sorted(["Leader", "Sync Standby", *["Replica"] * (count - 2)])
    while time.monotonic() < deadline:
        members = _members(region, on)
        states = {name: m.get("State") for name, m in members.items()}
        if len(members) == count and all(s in ("running", "streaming") for s in states.values()):
            roles = sorted(m["Role"] for m in members.values())
            if roles == wanted:
                return members
        time.sleep(2)
    raise AssertionError(f"the cluster did not settle in {timeout:.0f} s: {members}")


def _leader(members: dict[str, dict[str, str]]) -> str:
    return next(name for name, m in members.items() if m["Role"] == "Leader")


def _call(region: AppliedRegion, workdir: Path, name: str) -> tuple[str, str]:
    """One answered call through the IVR to health's queue: the caller number it used, and when it started."""
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    plan = call_plan(region.spec.region, lab_call_network(region.spec), department="health")
    caller = caller_number()
    with operator_phone(plan, plan.operator, region.secrets.get("sip", plan.operator), workdir / name,
                        timing=TIMING) as phone:
        call = carrier_call(plan, workdir / name, caller=caller, timing=TIMING, name=f"carrier-{name}")
        answered = phone.outcomes()
    assert call.ok, call.describe()
    assert any(o.startswith("answered") for o in answered), answered
    return f"+7{caller[1:]}", since


def _journal(region: AppliedRegion, caller: str) -> tuple[int, set[str], int]:
    """What pbx1 itself logged of the call from ``caller``: its CDR lines (cdr_custom journal), their
    uniqueids, and the queue_log file's lines of those calls."""
    journal = region.run("pbx1", "cat /var/log/asterisk/cdr-custom/ekc-journal.csv")
    rows = [r for r in csv.reader(io.StringIO(journal.stdout)) if len(r) > 17 and r[4] == caller]
    ids = {r[17] for r in rows}
    queue = region.run("pbx1", "cat /var/log/asterisk/queue_log")
    events = [line for line in queue.stdout.splitlines() if line.split("|")[1:2] and line.split("|")[1] in ids]
    return len(rows), ids, len(events)


def _database(region: AppliedRegion, node: str, caller: str, ids: set[str]) -> tuple[int, int]:
    """The database's CDR rows of ``caller`` and queue_log rows of the calls ``ids`` on ``node``."""
    cdr = _sql(region, node, f"SELECT count(*) FROM cdr WHERE src = '{caller}'")
    listed = ", ".join(f"'{i}'" for i in sorted(ids)) or "''"
    queue = _sql(region, node, f"SELECT count(*) FROM queue_log WHERE callid IN ({listed})")
    return int(cdr[0]), int(queue[0])


def _all_recorded(region: AppliedRegion, node: str, call: tuple[str, str], timeout: float = 30) -> bool:
    """Whether, within ``timeout``, the database on ``node`` holds exactly the CDR and queue_log rows pbx1
    logged of the call (none missing, none twice)."""
    caller = call[0]
    deadline = time.monotonic() + timeout
    while True:
        lines, ids, events = _journal(region, caller)
        stored = _database(region, node, caller, ids)
        if lines and events and stored == (lines, events):
            return True
        assert stored[0] <= lines and stored[1] <= events, f"rows stored twice: {stored} of {(lines, events)}"
        if time.monotonic() > deadline:
            print(f"{node}: {stored} of {(lines, events)} rows of the call from {caller}")
            return False
        time.sleep(2)


def _promotion(region: AppliedRegion, since: float, found: dict[str, float]) -> None:
    """Poll db2 and db3 until one accepts writes; record which and when (seconds after ``since``)."""
    while time.monotonic() - since < FAILOVER_LIMIT_S + 60:
        for replica in ("db2", "db3"):
            out = region.run(replica, "runuser -u postgres -- psql -X -At -c 'SELECT pg_is_in_recovery()'")
            if out.returncode == 0 and out.stdout.strip() == "f":
                found[replica] = time.monotonic() - since
                return
        time.sleep(0.5)


def test_three_members_one_leader_the_seed(region: AppliedRegion) -> None:
    """db1 (the seed) made the cluster, db2 and db3 cloned it and stream from it; synchronous mode is on."""
    started = time.monotonic()
    members = _wait_members(region, "db2")
    print(f"database cluster settled {time.monotonic() - started:.0f} s after the apply")
    assert _leader(members) == "db1", members
    config = region.run("db1", f"{PATRONICTL} show-config")
    assert "synchronous_mode: true" in config.stdout and "ttl: 15" in config.stdout, config.stdout


def test_etcd_has_three_healthy_members_over_tls(region: AppliedRegion) -> None:
    address = region.address("db1")
    tls = "--cacert /etc/etcd/ekc-ca.crt --cert /etc/etcd/ekc-node.crt --key /etc/etcd/ekc-node.key"
    out = region.run("db1", f"etcdctl --endpoints https://{address}:2379 {tls} endpoint health --cluster -w json")
    assert out.returncode == 0, out.stderr
    health = json.loads(out.stdout)
    assert len(health) == 3 and all(h["health"] for h in health), health
    plain = region.run("db1", f"etcdctl --endpoints https://{address}:2379 --cacert /etc/etcd/ekc-ca.crt "
                              "endpoint health")
    assert plain.returncode != 0, "etcd answered a client without a certificate"


def test_verify_passes_on_every_member_and_neither_engine_finds_anything_to_change(
        region: AppliedRegion, tmp_path: Path) -> None:
    result = run_verify(region.build, region.key, junit=tmp_path / "verify.xml", bundle_lock=region.lock,
                        known_hosts=region.lab.known_hosts)
    assert [c for c in result.checks if c.outcome in ("failed", "error")] == []
    members = {c.host for c in result.checks if c.outcome == "passed" and c.test.startswith("test_cluster_member")}
    assert members == set(MEMBERS), result.checks
    again = region.apply()
    assert again.changes == 0, [(h.host, h.changed_files, h.changed_services) for h in again.hosts]
    with serve_bundle(region.bundle, region.lab.gateway, region.bundle_port):
        other = apply_ansible(region.build, region.key, known_hosts=region.lab.known_hosts)
    assert other.ok and other.changes == 0, [(h.host, h.error, h.changed_files) for h in other.hosts]


def test_a_call_is_recorded_on_the_leader_and_on_every_replica(region: AppliedRegion, tmp_path: Path) -> None:
    modules = region.run("pbx1", "asterisk -rx 'module show like pgsql'").stdout
    assert "cdr_pgsql.so" in modules and "res_config_pgsql.so" not in modules, modules  # no realtime writes
    call = _call(region, tmp_path, "before")
    assert _all_recorded(region, "db1", call)
    for replica in ("db2", "db3"):
        assert _all_recorded(region, replica, call, timeout=15), replica


def _replayed(region: AppliedRegion, table: str) -> int:
    """How many runs of ekc-journal on pbx1 so far inserted rows of ``table`` the database lacked."""
    out = region.run("pbx1", f"journalctl -u ekc-journal --no-pager -o cat | grep -c ' {table} rows were missing'")
    return int(out.stdout.strip() or 0)


def test_a_call_while_asterisk_cannot_reach_the_database_loses_no_record(
        region: AppliedRegion, tmp_path: Path) -> None:
    """pbx1 loses its way to every database member (its own firewall drops PostgreSQL) from before a call until
    well after it ended: Asterisk drops the rows it cannot write, the journal puts them in once the way is back."""
    before = _replayed(region, "cdr")
    cut = ("nft add table inet ekc_drill; nft add chain inet ekc_drill out '{ type filter hook output priority 0; }';"
           " nft add rule inet ekc_drill out tcp dport 5432 drop")
    assert region.run("pbx1", cut).returncode == 0
    try:
        call = _call(region, tmp_path, "cut")
        time.sleep(CUT_AFTER_CALL_S)  # the call's CDRs are posted after it ends: they fail too
    finally:
        region.run("pbx1", "nft delete table inet ekc_drill")
    leader = _leader(_wait_members(region, "db2"))
    assert _all_recorded(region, leader, call, timeout=150), "rows of the call without a database are missing"
    assert _replayed(region, "cdr") > before, "no CDR was replayed: did Asterisk write them despite the cut?"


def test_the_leader_fails_a_replica_takes_writes_and_no_record_is_lost(
        region: AppliedRegion, tmp_path: Path) -> None:
    """Power cut of the leader with a call under way: a replica accepts writes within 30 s; every CDR and
    queue_log row of the calls before, during and after the failover is in the database exactly once (the
    journal replays what Asterisk could not write while there was no leader); db1 rejoins as a replica."""
    first = _call(region, tmp_path, "first")
    assert _all_recorded(region, "db1", first)

    crash_node(region.lab, "db1")
    try:
        killed = time.monotonic()
        found: dict[str, float] = {}
        poller = threading.Thread(target=_promotion, args=(region, killed, found))
        poller.start()
        during = _call(region, tmp_path, "during")  # in the window without a leader
        during_ended = time.monotonic() - killed
        poller.join()
        assert found, "no replica took over"
        promoted, failover_s = next(iter(found.items()))
        print(f"database failover: {promoted} takes writes {failover_s:.1f} s after db1 was killed; the call "
              f"placed meanwhile ended {during_ended:.1f} s after the kill")
        assert failover_s <= FAILOVER_LIMIT_S, f"failover took {failover_s:.1f} s"

        after = _call(region, tmp_path, "after")  # pbx1's libpq finds the new leader; nothing changed on pbx1
        # The journal ships queue_log every 5 s and replays CDRs older than a minute: within about 70 s
        # everything is there.
        for call in (first, during, after):
            assert _all_recorded(region, promoted, call, timeout=150), f"rows of {call[0]} are missing"
        replayed = region.run("pbx1", "journalctl -u ekc-journal --no-pager -o cat | grep 'were missing' || true")
        print(f"ekc-journal: {replayed.stdout.strip() or 'nothing to replay'}")
        if during_ended < failover_s:
            assert "cdr rows were missing" in replayed.stdout, "the call without a leader needed no replay?"
    finally:
        lab_up(region.lab)  # db1 boots again, whatever failed above: the next tests need all three members

    # db1 rejoins as a replica of the new leader, with every call.
    members = _wait_members(region, promoted, timeout=240)
    assert _leader(members) == promoted and members["db1"]["Role"] != "Leader", members
    assert _all_recorded(region, "db1", after, timeout=60)


def test_backups_run_on_the_leader_and_replicas_decline(region: AppliedRegion) -> None:
    members = _wait_members(region, "db2")
    leader = _leader(members)
    replica = next(name for name in MEMBERS if name != leader)
    taken = region.run(leader, "/usr/local/lib/ekc/postgresql-backup", timeout=300)
    assert taken.returncode == 0, taken.stderr
    assert re.fullmatch(r"\d{8}T\d{6}Z", taken.stdout.strip().splitlines()[-1]), taken.stdout
    declined = region.run(replica, "/usr/local/lib/ekc/postgresql-backup")
    assert declined.returncode == 0 and "replica" in declined.stderr, declined
    wal = region.run(leader, "ls /var/backups/ekc/wal | wc -l")
    assert int(wal.stdout.strip()) >= 1, "the new leader archives no WAL"


def test_the_leader_drained_hands_over_and_leaves_the_cluster_cleanly(region: AppliedRegion, tmp_path: Path) -> None:
    """``state: drain`` on the leader, applied as an engineer does it (render, then apply): apply switches the
    leader over to a replica first, then Patroni stops on the drained node; two members remain, one of them in
    sync, and the next call is recorded without a change on pbx1 beyond the host list."""
    leader = _leader(_wait_members(region, "db2"))
    assert region.deploy("render", str(region.region_dir)).returncode == 0
    drained = region.changed(node_state(leader, "drain"))
    planned = drained.plan()
    assert f"{leader} leaves the database cluster" in planned, planned
    drained.cli_apply(tmp_path / "drain")
    remaining = [m for m in MEMBERS if m != leader]
    members = _wait_members(drained, remaining[0], count=2)
    assert sorted(members) == remaining, members
    assert drained.run(leader, f"systemctl is-active {PATRONI_UNIT}").stdout.strip() != "active"
    call = _call(drained, tmp_path, "drained")
    assert _all_recorded(drained, _leader(members), call)
