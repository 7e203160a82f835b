"""Monitoring on real servers: the example region trimmed to an Asterisk node and a monitoring node.

``montest`` is ``inventories/example`` on 10.240.0.0/24 with two nodes: pbx1 (asterisk, postgresql) and
mon1 (monitoring). The lab gets exactly the render of that spec: no crm node, so no CRM probe. Scrapes every
5 s. The deploy host plays the ministry's mail relay (tests/support/smtpsink.py on the gateway address,
port 25). Then:

- every Prometheus target is up (node, Asterisk's res_prometheus, the queue exporter, postgres_exporter,
  Prometheus, Alertmanager, the SIP probe; no CRM probe without a crm node), and the verify suite's
  monitoring module passes on both nodes;
- the KPI views and the backup's success time reach Prometheus (the backup unit started by hand);
- the trunk's qualify: nothing answers SIP OPTIONS at the trunk peer's address in the lab, so the queue
  exporter reports the trunk unreachable and EkcTrunkUnreachable fires in Alertmanager;
- Prometheus and Alertmanager answer over TLS (region CA) and refuse a request without credentials;
- the wallboard serves its page without a password and proxies GET /api/v1/query alone;
- callers waiting in a queue (real SIPp calls from the trunk peer's address through the IVR, an operator's
  SIPp phone registered and ringing unanswered) show on the wallboard in headless Chromium: the waiting count
  and the longest wait;
- Asterisk stopped on pbx1: the EkcAsteriskDown mail reaches the sink within the rule's ``for`` plus a
  scrape interval, an evaluation interval and Alertmanager's group_wait (the time is printed).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ekc.lab.call import CARRIER_PORT, MEDIA_PORT, Timing, call_plan, caller_number, carrier_params, operator_phone
from ekc.lab.region import lab_call_network
from ekc.lab.sipp import SippRun, SippServer
from ekc.render.components.monitoring import FOR_ASTERISK_DOWN, FOR_TRUNK, GROUP_WAIT_S
from ekc.verify.run import run_verify
from tests.support import prom
from tests.support.browser import _run, require_chromium
from tests.support.labregion import AppliedRegion, applied_region, worker_name
from tests.support.smtpsink import SmtpSink

pytestmark = [pytest.mark.lab, pytest.mark.slow]

PREFIX = "10.240."
NODES = """nodes:
  - {name: pbx1, address: 10.240.0.11, roles: [asterisk, postgresql]}
  - {name: mon1, address: 10.240.0.41, roles: [monitoring]}
"""
SCRAPE_S = 5
SLACK_S = 15
# the checks of tests/verify/test_monitoring.py
MONITORING_CHECKS = ("test_every_target_is_up", "test_prometheus_refuses_requests_without_credentials",
                     "test_alertmanager_refuses_requests_without_credentials",
                     "test_wallboard_answers_queries_without_a_password", "test_wallboard_proxies_nothing_but_queries",
                     "test_queue_exporter_reads_asterisk")


def _edit(text: str) -> str:
    start, end = text.index("nodes:\n"), text.index("\ntelephony:")
    text = text[:start] + NODES + text[end:]
    # the operators' flow to the CRM leaves with the crm role (a flow to a role no node carries is an error)
    crm_flow = re.compile(r"^    - description: .*\n(?:      .*\n)*?      targets: \[role:crm\]\n(?:      .*\n)*", re.M)
    text, removed = crm_flow.subn("", text)
    assert removed == 1, "inventories/example's flows changed shape"
    return text.replace("monitoring:\n  smtp:", f"monitoring:\n  scrape_interval_s: {SCRAPE_S}\n  smtp:")


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppliedRegion]:
    with applied_region(tmp_path_factory.mktemp("montest"), worker_name("montest"), source="example",
                        prefix=PREFIX, edit=_edit) as applied:
        yield applied


_get = prom.get


def _spki(region: AppliedRegion) -> str:
    """The base64 SHA-256 of mon1's certificate's public key, as Chromium's SPKI allow-list wants it."""
    cert = x509.load_pem_x509_certificate(region.secrets.get("tls", "mon1", "cert").encode())
    der = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


_query = prom.query


def test_every_target_is_up(region: AppliedRegion) -> None:
    mon = region.address("mon1")
    down: list[str] = []
    for _ in range(30):
        status, body = _get(region, f"https://{mon}:9090/api/v1/targets", "prometheus_admin")
        assert status == 200, body
        targets = json.loads(body)["data"]["activeTargets"]
        down = [f"{t['labels']['job']} {t['scrapeUrl']}: {t['lastError']}" for t in targets if t["health"] != "up"]
        jobs = {t["labels"]["job"] for t in targets}
        if not down:
            break
        time.sleep(SCRAPE_S)
    # exactly what the spec's nodes give: no crm node, no CRM probe
    assert jobs == {"node", "asterisk", "queues", "postgres", "prometheus", "alertmanager", "sip"}, jobs
    assert not down, down


def test_backup_success_time_reaches_prometheus(region: AppliedRegion) -> None:
    """A base backup run by hand writes its success time to node_exporter's textfile directory."""
    started = time.time()
    done = region.run("pbx1", "systemctl start ekc-postgresql-backup.service")
    assert done.returncode == 0, done.stdout + done.stderr
    stamps: list[float] = []
    for _ in range(12):
        stamps = [float(r["value"][1]) for r in _query(  # type: ignore[index]
            region, 'ekc_backup_last_success_timestamp_seconds{node="pbx1"}')]
        if stamps and stamps[0] >= started - 5:
            break
        time.sleep(SCRAPE_S)
    assert stamps and stamps[0] >= started - 5, stamps
    assert not [a for a in _alerts(region) if a["labels"]["alertname"] == "EkcBackupTooOld"]


_alerts = prom.alerts


def test_unanswered_trunk_qualify_fires_trunk_unreachable(region: AppliedRegion) -> None:
    """Nothing answers OPTIONS at the trunk peer's address here: the trunk is unreachable, and the alert says so."""
    firing: list[dict[str, dict[str, str]]] = []
    for _ in range(int((_seconds(FOR_TRUNK) + 60) / SCRAPE_S)):
        firing = [a for a in _alerts(region) if a["labels"]["alertname"] == "EkcTrunkUnreachable"]
        if firing:
            break
        time.sleep(SCRAPE_S)
    assert [(a["labels"]["node"], a["labels"]["trunk"]) for a in firing] == [("pbx1", "carrier")], firing
    reachable = {r["metric"]["trunk"]: r["value"][1] for r in _query(region, "ekc_trunk_reachable")}  # type: ignore[index]
    assert reachable == {"carrier": "0"}, reachable
    contacts = region.run("pbx1", "asterisk -rx 'pjsip show contacts'")
    assert "trunk-carrier" in contacts.stdout and "Unavail" in contacts.stdout, contacts.stdout


def test_kpi_views_are_metrics(region: AppliedRegion) -> None:
    """postgres_exporter turns kpi.department_today into one series per department and column."""
    departments = {d.id for d in region.spec.region.telephony.departments}
    for _ in range(12):
        offered = {r["metric"]["department"] for r in _query(region, "ekc_department_today_offered")}  # type: ignore[index]
        if offered == departments:
            break
        time.sleep(SCRAPE_S)
    assert offered == departments


def test_prometheus_and_alertmanager_refuse_requests_without_credentials(region: AppliedRegion) -> None:
    mon = region.address("mon1")
    assert _get(region, f"https://{mon}:9090/api/v1/targets")[0] == 401
    assert _get(region, f"https://{mon}:9093/api/v2/status")[0] == 401
    assert _get(region, f"https://{mon}:9093/api/v2/status", "alertmanager_admin")[0] == 200


def test_wallboard_proxies_only_instant_queries(region: AppliedRegion) -> None:
    mon = region.address("mon1")
    status, page = _get(region, f"https://{mon}/")
    assert status == 200 and page.count(b'class="tile"') == 5
    status, body = _get(region, f"https://{mon}/api/v1/query?query=ekc_ami_up")
    assert status == 200 and json.loads(body)["data"]["result"][0]["value"][1] == "1"
    assert _get(region, f"https://{mon}/api/v1/targets")[0] == 404
    assert _get(region, f"https://{mon}/api/v1/query?query=up", method="POST")[0] == 403


def test_wallboard_shows_callers_waiting(region: AppliedRegion, tmp_path: Path) -> None:
    """Two real calls from the carrier (SIPp at the trunk peer's address) wait in health's queue (open always).

    A queue turns callers away when every member is unavailable (``joinempty``): operator 2005's phone (SIPp on
    the operators' network) registers and rings without ever answering, so the callers stay in the queue.
    """
    require_chromium()
    plan = call_plan(region.spec.region, lab_call_network(region.spec), department="health")
    # the carrier's callers press the IVR key, then wait in the queue for two minutes before hanging up
    timing = Timing(rating_wait_ms=120_000, rating_presses=1, end_wait_ms=1000, answer_ms=600_000)
    params = carrier_params(plan.digit, "5", timing, tmp_path / "waiting-press")
    callers = SippRun("waiting", "carrier_call.xml", plan.trunk_peer, CARRIER_PORT, remote=plan.target,
                      service=plan.did, rows=((caller_number(),), (caller_number(1),)), params=params, calls=2,
                      rate=1, limit=2, media_port=MEDIA_PORT, timeout_s=180)
    with operator_phone(plan, plan.operator, region.secrets.get("sip", plan.operator), tmp_path, timing=timing):
        carrier = SippServer(callers, tmp_path)
        try:
            for _ in range(12):
                waiting = {r["metric"]["department"]: r["value"][1]  # type: ignore[index]
                           for r in _query(region, "ekc_queue_callers")}
                if waiting.get("health") == "2":
                    break
                time.sleep(SCRAPE_S)
            assert waiting.get("health") == "2", (waiting, carrier.outcomes())
            dom = wallboard_dom(region)
            tile = re.search(r'data-department="health".*?</section>', dom, re.S)
            assert tile is not None
            assert re.search(r'data-metric="waiting">2<', tile.group(0)), tile.group(0)
            assert re.search(r'data-metric="longest">0:\d\d<', tile.group(0)), tile.group(0)
        finally:
            region.run("pbx1", "asterisk -rx 'channel request hangup all'")
            carrier.stop()


def wallboard_dom(region: AppliedRegion) -> str:
    """The wallboard's page after its script ran, as headless Chromium has it. Chromium trusts mon1's own key
    (its SPKI pinned) rather than a CA it has no store for here."""
    return _run(f"https://{region.address('mon1')}/", [
        "--dump-dom", "--virtual-time-budget=8000", f"--ignore-certificate-errors-spki-list={_spki(region)}"])


def server_tile(dom: str, node: str) -> tuple[str, dict[str, str]]:
    """A server's tile on the wallboard's page: its classes, and each fact's words."""
    tile = re.search(rf'<section class="server ([^"]*)" data-node="{node}">(.*?)</section>', dom, re.S)
    assert tile is not None, f"no tile for {node}"
    facts = dict(re.findall(r'<li data-fact="(\w+)"[^>]*>([^<]*)</li>', tile.group(2)))
    return tile.group(1), facts


def test_wallboard_shows_the_servers(region: AppliedRegion) -> None:
    """Every node has a tile: up, and its own role's state (Asterisk, PostgreSQL, both on pbx1 here)."""
    require_chromium()
    classes, facts = server_tile(wallboard_dom(region), "pbx1")
    assert facts == {"up": "работает", "asterisk": "Asterisk работает", "database": "PostgreSQL работает"}, facts
    assert classes.split() == ["active", "ok"], classes
    assert server_tile(wallboard_dom(region), "mon1")[1] == {"up": "работает"}


def test_verify_suite_runs_its_monitoring_checks(region: AppliedRegion, tmp_path: Path) -> None:
    """deploy.py verify's monitoring module passes on both nodes.

    The other modules' results are printed, not judged: their components are proven by their own lab tests.
    """
    result = run_verify(region.build, region.key, junit=tmp_path / "verify.xml", bundle_lock=region.lock,
                        known_hosts=region.lab.known_hosts)
    ours = [c for c in result.checks if c.test.split("[")[0] in MONITORING_CHECKS]
    for check in result.checks:
        if check.outcome in ("failed", "error") and check not in ours:
            print(f"\nverify (not monitoring): {check.host} {check.test}: {check.reason}")
    failed = [(c.host, c.test, c.reason) for c in ours if c.outcome in ("failed", "error")]
    assert not failed, failed
    assert {c.host for c in ours if c.outcome == "passed"} == {"pbx1", "mon1"}, ours
    assert len([c for c in ours if c.outcome == "passed"]) >= 5, ours


def _seconds(duration: str) -> int:
    return int(duration[:-1]) * (60 if duration.endswith("m") else 1)


def test_asterisk_down_alert_reaches_the_mail_relay(region: AppliedRegion) -> None:
    relay = region.spec.region.monitoring.smtp
    assert relay is not None
    bound = _seconds(FOR_ASTERISK_DOWN) + 2 * SCRAPE_S + GROUP_WAIT_S + SLACK_S
    with SmtpSink(relay.relay, relay.port) as sink:
        stopped = time.time()
        done = region.run("pbx1", "systemctl stop asterisk")
        assert done.returncode == 0, done.stderr
        try:
            mail = sink.wait_for(lambda m: "EkcAsteriskDown" in m.subject and "FIRING" in m.subject,
                                 timeout=bound + 60)
        finally:
            region.run("pbx1", "systemctl start asterisk")
        # critical alerts go to every receiver that takes them: one message per address
        sink.wait_for(lambda m: "EkcAsteriskDown" in m.subject and "duty@example.local" in m.recipients, timeout=30)
    assert mail is not None, [m.subject for m in sink.messages]
    recipients = {r for m in sink.messages if "EkcAsteriskDown" in m.subject for r in m.recipients}
    assert recipients == {"duty@example.local", "head@example.local"}, recipients
    elapsed = mail.received_at - stopped
    print(f"\nAsterisk stopped -> alert e-mail in the sink: {elapsed:.1f} s "
          f"(for {FOR_ASTERISK_DOWN}, scrape {SCRAPE_S} s, group_wait {GROUP_WAIT_S} s)")
    assert elapsed <= bound, f"{elapsed:.1f} s > {bound} s"
