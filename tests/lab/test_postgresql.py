"""Asterisk writes to PostgreSQL on real lab nodes: after a real SIP call, the CDR, CEL and queue_log rows are in
the database (department and the caller's rating included) and the KPI views count the call.

The region is ``inventories/example`` without crm1 and mon1: pbx1 (asterisk) and db1 (postgresql), on
10.238.0.0/24 with the operators' network 10.238.10.0/24. The lab gets exactly what the product renders for
that spec: Asterisk with its database modules (the region has a postgresql node), no screen pop and no
exporters (it has no crm and no monitoring node), and PostgreSQL. The deploy host plays the carrier (SIPp from
the trunk peer's address) and an operator of the health department (SIPp registers from the operators'
network, then answers). The call (``ekc.lab.call``): DID -> IVR -> health's queue -> the operator answers,
talks 3 s, hangs up -> the caller presses 5 to rate it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ekc.lab.call import Timing, call_plan, caller_number, carrier_call, operator_phone
from ekc.lab.region import lab_call_network
from tests.support.labregion import AppliedRegion, applied_region, without_crm_and_monitoring, worker_name

pytestmark = [pytest.mark.lab, pytest.mark.slow]

REGION = worker_name("dbtesta")
PREFIX = "10.238."
TIMING = Timing(talk_ms=3000)


def _trim(text: str) -> str:
    """pbx1 and db1 only: crm1 and mon1 leave the spec, and so do the extra flows to their roles."""
    return without_crm_and_monitoring(text, 2)


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppliedRegion]:
    with applied_region(tmp_path_factory.mktemp("dba"), REGION, source="example", prefix=PREFIX,
                        edit=_trim) as applied:
        yield applied


def _sql(region: AppliedRegion, sql: str) -> list[str]:
    out = region.run("db1", f"runuser -u postgres -- psql -X -At -v ON_ERROR_STOP=1 -d asterisk -c \"{sql}\"")
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_the_lab_carries_asterisk_and_postgresql_and_nothing_else(region: AppliedRegion) -> None:
    """The honest render of this spec: the asterisk node gets its database files, no CRM or exporter part."""
    components = {host.name: {f.component for f in host.files} for host in region.manifest.hosts}
    assert components == {"pbx1": {"base", "asterisk"}, "db1": {"base", "postgresql"}}, components
    pbx1 = {f.path for host in region.manifest.hosts if host.name == "pbx1" for f in host.files}
    assert {"/etc/asterisk/cdr_pgsql.conf", "/etc/asterisk/cel_pgsql.conf", "/etc/asterisk/res_pgsql.conf"} <= pbx1


def test_asterisk_loads_the_database_modules(region: AppliedRegion) -> None:
    out = region.run("pbx1", "asterisk -rx 'module show like pgsql'")
    for module in ("cdr_pgsql.so", "cel_pgsql.so", "res_config_pgsql.so"):
        assert module in out.stdout, out.stdout
    status = region.run("pbx1", "asterisk -rx 'realtime show pgsql status'")
    assert "connected" in status.stdout.lower(), status.stdout


def test_a_call_leaves_cdr_cel_and_queue_log_rows_that_the_kpi_views_count(
        region: AppliedRegion, tmp_path: Path) -> None:
    plan = call_plan(region.spec.region, lab_call_network(region.spec), department="health")
    caller = caller_number()
    started = _sql(region, "SELECT now()")[0]
    with operator_phone(plan, plan.operator, region.secrets.get("sip", plan.operator), tmp_path,
                        timing=TIMING) as phone:
        call = carrier_call(plan, tmp_path, caller=caller, rating="5", timing=TIMING)
        answered = phone.outcomes()
    assert call.ok, call.describe()
    assert any(o.startswith("answered") for o in answered), answered
    time.sleep(5)  # CDRs are posted when the channels are gone

    since = f"'{started}'"
    callids = _sql(region, f"SELECT DISTINCT callid FROM queue_log WHERE time >= {since} AND queuename = 'health' "
                           "AND event = 'ENTERQUEUE'")
    assert len(callids) == 1, callids
    events = _sql(region, f"SELECT event || ':' || data1 FROM queue_log WHERE callid = '{callids[0]}' ORDER BY id")
    kinds = [e.split(":")[0] for e in events]
    assert kinds[0] == "ENTERQUEUE" and "CONNECT" in kinds, events
    assert {"COMPLETEAGENT", "COMPLETECALLER"} & set(kinds) and "RATING:5" in events, events
    cdr = _sql(region, f"SELECT department || '|' || userfield || '|' || src FROM cdr WHERE start >= {since} "
                       "AND department = 'health'")
    assert f"health|rating=5|+7{caller[1:]}" in cdr, cdr  # the carrier's 8XXXXXXXXXX, normalised
    cel = _sql(region, f"SELECT count(*) FROM cel WHERE eventtime >= {since} AND eventtype = 'CHAN_START'")
    assert int(cel[0]) >= 2, cel
    today = _sql(region, "SELECT offered || '|' || answered || '|' || avg_rating FROM kpi.department_today "
                         "WHERE department = 'health'")
    assert today == ["1|1|5.00"], today
