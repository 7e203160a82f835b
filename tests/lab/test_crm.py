"""Creme CRM, its database and click-to-call on real servers: the example region, its monitoring scraping every 5 s.

``crmtest`` is ``inventories/example`` on 10.239.0.0/24 (operators' network 10.239.10.0/24) with four nodes,
each carrying exactly its own role: db1 (postgresql), crm1 (crm), pbx1 (asterisk) and mon1 (monitoring). The
deploy host plays the region's mail relay (tests/support/smtpsink.py on the gateway). What the lab gets is the
render of that spec and nothing else: since the region has a CRM, pbx1 also gets the click-to-call service and
puts the screen pop's Call-Info header on the INVITEs of queue calls to operators; since it has a PostgreSQL
node, Asterisk also writes its records there. Then:

- the setup unit built the venv from the bundle's wheels, migrated the database on db1 over TLS
  (verify-full) and made the administrator; gunicorn and the click-to-call service run under hardened units
  (both exposure scores are printed);
- the CRM answers over HTTPS with the region CA's certificate, whose names include ``crm.<domain>``, and plain
  HTTP redirects to HTTPS;
- the administrator logs in with the vault's password; Creme's caller list shows the contact whose phone is
  the caller's number, and offers to create one for an unknown number;
- a real call (SIPp as the carrier) goes through the IVR and the queue to an operator's phone (SIPp), whose
  INVITE carries the screen pop ``Call-Info: <https://crm.<domain>/appeals/call/<callid>/>;purpose=info``, the
  callid being the caller channel's unique id (the queue log's), and the call gets its card; a call without a
  card yet gets a page that reloads itself;
- headless Chromium, trusting nothing but the region CA and resolving ``crm.<domain>`` to crm1, logs in by
  name, shows Creme's caller list of a known number and opens the very address the INVITE carried: the call's
  card;
- the call gets its card; 8 workers taking numbers at once get distinct consecutive ones, and the next after a
  restart of the CRM's services follows them;
- two real calls placed at the same moment, answered by two operators at once, get a card each, with its own
  call id, caller and operator, and two distinct numbers one after the other;
- numbers taken before and after a base backup (``deploy.py db backup``), then ``deploy.py db restore`` with no
  step by hand between: every card and the counter are back, and the next call's card takes the number after
  the last one taken (no number given out twice); the backup's and the restore's times are printed;
- the operator completes the call's card in Chromium, every word on it Russian; a screenshot of the saved card
  is written to ``build/screenshots/operator-card.png`` (for the README; build/ is not in git);
- click-to-call, from the workstation the operator's phone registered from, through the CRM (its nginx passes
  the click on to pbx1's service), rings that phone; another origin is refused (403) and a workstation without
  a phone gets 404; the workstation cannot reach pbx1's service itself;
- the call's card plays its recording: the player's source, through the CRM (which asks the appeals app first)
  from pbx1's service, is the file MixMonitor wrote, for a logged-in user only, and Chromium plays it;
- the verify suite passes on every node;
- a second apply changes nothing, with pyinfra and then with Ansible; rerunning the setup keeps the
  administrator and the data.
"""

from __future__ import annotations

import datetime as dt
import http.client
import http.cookiejar
import json
import re
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from cryptography import x509

from ekc.bundle.serve import serve_bundle
from ekc.crm_app.ekc_appeals.deadlines import Calendar, answer_due, registration_due
from ekc.engines.ansible_engine import apply_ansible
from ekc.lab.call import (
    CallPlan,
    CallRecord,
    CallReport,
    Runner,
    Timing,
    call_plan,
    operator_phone,
    operators_of,
    place_calls_at_once,
    place_test_call,
    report_lines,
)
from ekc.lab.region import lab_call_network
from ekc.render.components.addresses import (
    CRM_METRICS_PORT,
    CTI_PATH,
    MONITOR_DIR,
    RECORDINGS_PATH,
    crm_hostname,
)
from ekc.render.components.asterisk_dialplan import normalise_number
from ekc.render.components.crm import DONE_FILE, catalogue
from ekc.render.components.cti import PORT as CTI_PORT
from ekc.verify.run import run_verify
from tests.support import prom
from tests.support.browser import CHROMIUM, chromium_available
from tests.support.cdp import Page, chromium_page
from tests.support.labregion import REPO, AppliedRegion, applied_region, worker_name
from tests.support.smtpsink import SmtpSink

pytestmark = [pytest.mark.lab, pytest.mark.slow]

PREFIX = "10.239."
NODES = """nodes:
  - {name: pbx1, address: 10.239.0.11, roles: [asterisk]}
  - {name: db1, address: 10.239.0.21, roles: [postgresql]}
  - {name: crm1, address: 10.239.0.31, roles: [crm]}
  - {name: mon1, address: 10.239.0.41, roles: [monitoring]}
"""
SCRAPE_S = 5
KNOWN_NUMBER = "+79130000001"
UNKNOWN_NUMBER = "+79139999999"
CREME = ("cd /var/lib/ekc-crm && PYTHONPATH=/etc/ekc-crm DJANGO_SETTINGS_MODULE=ekc_crm_settings "
         "/opt/ekc-crm/bin/creme")
CALL_INFO = re.compile(r"call-info=(.*)$")


def trim(text: str) -> str:
    """pbx1, db1, crm1 and mon1, each with its own role; Prometheus scrapes every 5 s."""
    text = re.sub(r"^nodes:\n(?:  - .*\n)+", NODES, text, flags=re.M)
    return text.replace("monitoring:\n  smtp:", f"monitoring:\n  scrape_interval_s: {SCRAPE_S}\n  smtp:")


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppliedRegion]:
    """``crmtest`` applied on its own lab, exactly as the spec renders."""
    started = time.monotonic()
    with applied_region(tmp_path_factory.mktemp("crmtest"), worker_name("crmtest"), source="example",
                        prefix=PREFIX, edit=trim) as applied:
        print(f"\ncrmtest: secrets, render, bundle, lab and first apply took {time.monotonic() - started:.0f} s")
        _wait_for_setup(applied)
        print(f"crmtest: the CRM's database setup finished {time.monotonic() - started:.0f} s after the start")
        yield applied


@pytest.fixture(scope="module")
def plan(region: AppliedRegion) -> CallPlan:
    """The call: carrier → IVR → a department open around the clock → its first operator."""
    return call_plan(region.spec.region, lab_call_network(region.spec))


@pytest.fixture(scope="module")
def queue_call(region: AppliedRegion, plan: CallPlan, tmp_path_factory: pytest.TempPathFactory) -> CallReport:
    """One real call through the IVR and the queue to the operator's phone, which records the INVITE."""
    password = region.secrets.get("sip", plan.operator)
    report = place_test_call(plan, password, tmp_path_factory.mktemp("call"), _on_pbx(region))
    print("\n" + "\n".join(report_lines(report)))
    return report


def _on_pbx(region: AppliedRegion) -> Runner:
    """A shell command on pbx1 -> its output: how the call helpers read what the node recorded."""
    return lambda command: region.run("pbx1", command).stdout


def _wait_for_setup(region: AppliedRegion, timeout_s: float = 900) -> None:
    """Wait until the CRM's database part (migrations, initial data, administrator) has finished."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if region.run("crm1", f"test -f {DONE_FILE}").returncode == 0:
            return
        time.sleep(5)
    log = region.run("crm1", "journalctl -u ekc-crm-migrate --no-pager | tail -30").stdout
    raise AssertionError(f"the CRM's database setup did not finish within {timeout_s:.0f} s:\n{log}")


def _tls(region: AppliedRegion) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=region.secrets.get("ca", "cert"))


def _login(region: AppliedRegion) -> tuple[urllib.request.OpenerDirector, str]:
    """A logged-in session as the spec's administrator with the vault's password."""
    base = f"https://{region.address('crm1')}"
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=_tls(region)),
                                         urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    reply = opener.open(f"{base}/", timeout=60)
    login_url, page = reply.geturl(), reply.read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert token, page[:2000]
    form = urllib.parse.urlencode({
        "csrfmiddlewaretoken": token.group(1), "username": region.spec.region.crm.admin_username,
        "password": region.secrets.get("crm", "admin"),
    }).encode()
    request = urllib.request.Request(login_url, data=form, headers={"Referer": login_url})
    opener.open(request, timeout=60).read()
    return opener, base


def _security_score(region: AppliedRegion, node: str, unit: str) -> str:
    return region.run(node, f"systemd-analyze security {unit} --no-pager | tail -1").stdout.strip()


def test_setup_and_services(region: AppliedRegion) -> None:
    """The setup unit finished, gunicorn and nginx run; print both units' exposure scores and the setup time."""
    for unit in ("ekc-crm-setup", "ekc-crm", "nginx"):
        state = region.run("crm1", f"systemctl is-active {unit}").stdout.strip()
        assert state == "active", (unit, region.run("crm1", f"journalctl -u {unit} --no-pager | tail -40").stdout)
    crm_score = _security_score(region, "crm1", "ekc-crm.service")
    cti_score = _security_score(region, "pbx1", "ekc-cti.service")
    print(f"\nekc-crm.service (crm1): {crm_score}\nekc-cti.service (pbx1): {cti_score}")
    for unit in ("ekc-crm-setup", "ekc-crm-migrate"):
        timing = region.run("crm1", f"systemctl show {unit} -P ExecMainStartTimestampMonotonic "
                                    "-P ExecMainExitTimestampMonotonic").stdout.split()
        if len(timing) == 2 and timing[1] != "0":
            print(f"{unit} (its last run) on a fresh node: {(int(timing[1]) - int(timing[0])) / 1e6:.0f} s")
    wheels = region.run("crm1", "/opt/ekc-crm/bin/pip list --format=freeze | wc -l").stdout.strip()
    print(f"packages in /opt/ekc-crm: {wheels}")
    assert "exposure level" in crm_score and "exposure level" in cti_score, (crm_score, cti_score)


def test_https_and_redirect(region: AppliedRegion) -> None:
    """HTTPS answers with a certificate the region CA signed; plain HTTP is a 301 to https."""
    address = region.address("crm1")
    with urllib.request.urlopen(f"https://{address}/", context=_tls(region), timeout=60) as reply:
        assert reply.status == 200
        assert "csrfmiddlewaretoken" in reply.read().decode()

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.build_opener(NoRedirect()).open(f"http://{address}/cti/", timeout=30)
    assert caught.value.code == 301
    assert caught.value.headers["Location"] == f"https://{address}/cti/"


def test_certificate_names_the_crm_hostname(region: AppliedRegion) -> None:
    """crm1's certificate carries ``crm.<domain>``: a client checking that name against the region CA accepts
    what nginx serves at crm1's address."""
    name = crm_hostname(region.spec.region)
    cert = x509.load_pem_x509_certificate(region.secrets.get("tls", "crm1", "cert").encode())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert name in names.get_values_for_type(x509.DNSName), names
    with socket.create_connection((region.address("crm1"), 443), timeout=30) as raw, \
            _tls(region).wrap_socket(raw, server_hostname=name) as tls:
        served = tls.getpeercert()
    assert ("DNS", name) in served.get("subjectAltName", ()), served


def test_screen_pop(region: AppliedRegion) -> None:
    """The screen pop shows the contact with the caller's number; an unknown number offers a new contact."""
    _create_known_contact(region)
    opener, base = _login(region)
    known = opener.open(f"{base}/cti/respond_to_a_call?number={urllib.parse.quote(KNOWN_NUMBER)}", timeout=60)
    page = known.read().decode()
    assert "Звонков" in page, page[-3000:]
    unknown = opener.open(f"{base}/cti/respond_to_a_call?number={urllib.parse.quote(UNKNOWN_NUMBER)}", timeout=60)
    page = unknown.read().decode()
    assert "Звонков" not in page
    assert f"/cti/contact/add/{UNKNOWN_NUMBER}" in page, page[-3000:]
    form = opener.open(f"{base}/cti/contact/add/{urllib.parse.quote(UNKNOWN_NUMBER)}", timeout=60).read().decode()
    assert f'value="{UNKNOWN_NUMBER}"' in form, form[-3000:]


def _create_known_contact(region: AppliedRegion) -> None:
    """A contact whose mobile phone is the caller's normalised number, made with Creme's own models."""
    created = region.run("crm1", CREME + " shell -c \"" +
                         "from creme.persons.models import Contact; from django.contrib.auth import get_user_model; "
                         "u = get_user_model().objects.get(username='admin'); "
                         f"Contact.objects.get_or_create(phone='{KNOWN_NUMBER}', defaults=dict(user=u, "
                         "first_name='Иван', last_name='Звонков'))\"")
    assert created.returncode == 0, created.stderr


def _call_info(report: CallReport) -> str:
    """The Call-Info header of the INVITE the operator's phone received."""
    found = [m.group(1) for o in report.phone_outcomes if o.startswith("invite ") and (m := CALL_INFO.search(o))]
    assert found, report.phone_outcomes
    return found[0].strip()


def test_queue_call_carries_the_screen_pop(region: AppliedRegion, queue_call: CallReport) -> None:
    """The call went through the IVR and the queue to the operator, whose INVITE names the call's card in the
    CRM by the caller channel's unique id (the queue log's callid)."""
    assert queue_call.reached_operator, report_lines(queue_call)
    uniqueid = queue_call.record.uniqueid
    assert uniqueid and queue_call.record.event("ENTERQUEUE"), report_lines(queue_call)
    expected = f"<https://{crm_hostname(region.spec.region)}/appeals/call/{uniqueid}/>;purpose=info"
    assert _call_info(queue_call) == expected, queue_call.phone_outcomes


@contextmanager
def _browser_trusting(ca_pem: str, resolve: dict[str, str], workdir: Path) -> Iterator[Page]:
    """Headless Chromium whose only added trust anchor is ``ca_pem`` (an NSS database in its own home) and
    which resolves the names of ``resolve`` to the given addresses and nothing else anywhere."""
    if not chromium_available():
        pytest.skip(f"{CHROMIUM} is not installed (Debian package 'chromium')")
    home = workdir / "home"
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    (workdir / "ca.pem").write_text(ca_pem, encoding="utf-8")
    for argv in (["certutil", "-N", "-d", f"sql:{nssdb}", "--empty-password"],
                 ["certutil", "-A", "-d", f"sql:{nssdb}", "-n", "ekc region CA", "-t", "C,,",
                  "-i", str(workdir / "ca.pem")]):
        try:
            subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60)
        except FileNotFoundError:
            pytest.skip("certutil is not installed (Debian package 'libnss3-tools')")
    rules = ",".join(f"MAP {name} {address}" for name, address in resolve.items()) + ",EXCLUDE localhost"
    with chromium_page(extra_flags=(f"--host-resolver-rules={rules}",), home=home) as page:
        yield page


def _browser_login(page: Page, region: AppliedRegion, base: str) -> None:
    """Log in by name in the browser as the spec's administrator."""
    page.open(f"{base}/")
    page.wait_for("!!document.querySelector('#login-form')")
    assert page.evaluate("location.href").startswith(f"{base}/"), page.evaluate("location.href")
    user, password = region.spec.region.crm.admin_username, region.secrets.get("crm", "admin")
    page.evaluate(f"document.querySelector('#id_username').value = {user!r};"
                  f"document.querySelector('#id_password').value = {password!r};"
                  "document.querySelector('#login-form').submit(); true")
    page.wait_for("document.readyState === 'complete' && !document.querySelector('#login-form')")


def test_screen_pop_in_chromium(region: AppliedRegion, queue_call: CallReport, tmp_path: Path) -> None:
    """Chromium, trusting the region CA only and resolving crm.<domain> to crm1, logs in by name, shows Creme's
    caller list of a known number, and opens the address the operator's INVITE carried: the call's card (its
    number of the region, the caller's number)."""
    _create_known_contact(region)
    name = crm_hostname(region.spec.region)
    base = f"https://{name}"
    pop = _call_info(queue_call).split(";")[0].strip("<>")
    caller = normalise_number(queue_call.record.caller)
    with _browser_trusting(region.secrets.get("ca", "cert"), {name: region.address("crm1")}, tmp_path) as page:
        _browser_login(page, region, base)
        page.open(f"{base}/cti/respond_to_a_call?number={urllib.parse.quote(KNOWN_NUMBER)}")
        page.wait_for("!!document.querySelector('.cti-callers-brick')")
        shown = page.evaluate("document.querySelector('.cti-callers-brick').innerText")
        page.screenshot(tmp_path / "screen-pop-known.png")
        assert "Звонков" in shown, shown
        page.open(pop)
        page.wait_for("!!document.querySelector('#ekc-card-number')")
        number = page.evaluate("document.querySelector('#ekc-card-number').innerText")
        assert page.evaluate("location.href") == f"{base}/appeals/{number}"
        assert page.evaluate("document.querySelector('#ekc-card-caller').innerText") == caller
        page.screenshot(tmp_path / "screen-pop-call.png")
    assert number.startswith(f"{region.spec.region.region.code}-"), number
    print(f"\nscreen pop screenshots: {tmp_path}")


def _psql(region: AppliedRegion, database: str, query: str) -> str:
    """One query on db1 as postgres, its rows unaligned."""
    done = region.run("db1", f"runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -d {database} -At "
                             f"<<'SQL'\n{query}\nSQL")
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _card(region: AppliedRegion, uniqueid: str) -> dict[str, str]:
    """The call's card as the CRM's database holds it (empty while there is none)."""
    query = ("SELECT row_to_json(a) FROM (SELECT number, status, caller_number, operator_name, operator_extension, "
             "wait_s, duration_s, rating, node, d.code AS department, "
             "extract(epoch FROM ended_at) AS ended_at FROM ekc_appeals_appeal c "
             "JOIN ekc_appeals_department d ON d.id = c.department_id "
             f"WHERE call_id = '{uniqueid}') a")
    out = _psql(region, "crm", query)
    return json.loads(out) if out else {}


def test_queue_call_gets_its_card(region: AppliedRegion, plan: CallPlan, queue_call: CallReport) -> None:
    """The answered call has a card within seconds: a number of the region and year, the department, the
    operator who answered, the caller's number and rating, and the talk time of the queue log, ending when the
    call's CDR ends (± 1 s)."""
    uniqueid = queue_call.record.uniqueid
    assert uniqueid, report_lines(queue_call)
    card = _wait_for_card(region, uniqueid)
    year = time.gmtime().tm_year
    assert re.fullmatch(rf"{region.spec.region.region.code}-({year}|{year + 1})-\d{{6}}", card["number"]), card
    operator = next(o for o in region.spec.region.telephony.operators if o.extension == plan.operator)
    assert (card["status"], card["department"], card["operator_name"], card["operator_extension"]) == (
        "answered", plan.department, operator.name, operator.extension), card
    assert card["caller_number"] == normalise_number(queue_call.record.caller), card
    assert card["node"] == "pbx1" and str(card["rating"]) == queue_call.record.rating, card
    talk = [int(e.split("|")[1]) for e in queue_call.record.event("COMPLETEAGENT") + queue_call.record.event(
        "COMPLETECALLER")]
    assert talk and card["duration_s"] == talk[0], (card, queue_call.record.queue_log)
    cdr_end = _psql(region, "asterisk", "SELECT extract(epoch FROM \"end\") FROM cdr "
                                        f"WHERE uniqueid = '{uniqueid}' AND dstchannel <> ''").split()
    assert cdr_end and abs(float(cdr_end[0]) - float(card["ended_at"])) <= 1, (card, cdr_end)


def test_a_call_without_a_card_yet_gets_the_waiting_page(region: AppliedRegion) -> None:
    """The screen pop opens as the phone rings, before the card is made: the call's address is then a page that
    reloads itself every second."""
    opener, base = _login(region)
    waiting = opener.open(f"{base}/appeals/call/pbx1-1.99999/", timeout=60)
    page = waiting.read().decode()
    assert waiting.status == 202 and '<meta http-equiv="refresh" content="1">' in page, page[-2000:]
    assert 'id="ekc-card-waiting"' in page, page[-2000:]


def test_card_numbers_are_distinct_under_concurrency_and_survive_a_restart(region: AppliedRegion) -> None:
    """Eight workers taking 25 numbers each at once from the CRM's database get 200 distinct, consecutive
    numbers; after the CRM's services restart the next number follows the last."""
    script = ("import threading; from django.db import connection, transaction; from ekc_appeals import sync; "
              "got = []; lock = threading.Lock()\n"
              "def work():\n"
              "    for _ in range(25):\n"
              "        with transaction.atomic():\n"
              "            n = sync.next_number('00', 1999)\n"
              "        with lock: got.append(n)\n"
              "    connection.close()\n"
              "ts = [threading.Thread(target=work) for _ in range(8)]\n"
              "[t.start() for t in ts]; [t.join() for t in ts]; print(' '.join(got))")
    region.run("crm1", f"cat > /tmp/numbers.py <<'EOF'\n{script}\nEOF")
    done = region.run("crm1", CREME + " shell -c \"exec(open('/tmp/numbers.py').read())\"", timeout=120)
    assert done.returncode == 0, done.stderr
    numbers = done.stdout.split()[-200:]
    sequences = sorted(int(n.rsplit("-", 1)[1]) for n in numbers)
    assert len(set(numbers)) == 200 and sequences == list(range(sequences[0], sequences[0] + 200)), numbers
    restarted = region.run("crm1", "systemctl restart ekc-crm ekc-crm-appeals")
    assert restarted.returncode == 0, restarted.stderr
    assert _take_numbers(region, "00", 1999, 1) == [f"00-1999-{sequences[-1] + 1:06d}"]


def _take_numbers(region: AppliedRegion, code: str, year: int, count: int) -> list[str]:
    """``count`` card numbers of region ``code`` and ``year`` taken one after another from the counter on crm1,
    each in a transaction of its own, as the sync service takes them."""
    done = region.run("crm1", CREME + " shell -c \"from django.db import transaction; from ekc_appeals import sync\n"
                      f"for _ in range({count}):\n"
                      "    with transaction.atomic():\n"
                      f"        print(sync.next_number('{code}', {year}))\"", timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()[-count:]


def _sequence(number: str) -> int:
    """The sequence part of a card number (``54-2026-000123`` -> 123)."""
    return int(number.rsplit("-", 1)[1])


def _wait_for_card(region: AppliedRegion, uniqueid: str, timeout_s: float = 30) -> dict[str, str]:
    """The call's card as soon as the sync service has made it; fails with the service's log otherwise."""
    deadline, card = time.monotonic() + timeout_s, _card(region, uniqueid)
    while not card and time.monotonic() < deadline:
        time.sleep(0.5)
        card = _card(region, uniqueid)
    assert card, region.run("crm1", "journalctl -u ekc-crm-appeals --no-pager | tail -20").stdout
    return card


def _event_times(record: CallRecord, *events: str) -> list[int]:
    """When the node's queue log wrote the call's ``events`` (its first field: seconds since the epoch)."""
    fields = [line.split("|") for line in record.queue_log]
    return [int(f[0]) for f in fields if len(f) > 4 and f[4] in events]


def test_two_calls_at_once_get_distinct_numbers(region: AppliedRegion, plan: CallPlan, tmp_path: Path) -> None:
    """Two real calls placed by the carrier at the same moment go through the IVR into the same queue and are
    answered by two operators at once (both talking at the same time, by the queue log): each gets a card of
    its own, with its own call id (the queue log's), caller and operator, and the two numbers are distinct and
    follow one another."""
    operators = operators_of(region.spec.region, plan.department)[:2]
    assert len(operators) == 2, f"department {plan.department} needs two operators for two calls at once"
    phones = {ext: region.secrets.get("sip", ext) for ext in operators}
    reports = place_calls_at_once(plan, phones, tmp_path, _on_pbx(region))
    print("\n" + "\n".join(line for r in reports for line in report_lines(r)))
    assert all(r.reached_operator for r in reports), [report_lines(r) for r in reports]
    uniqueids = [r.record.uniqueid or "" for r in reports]
    assert all(uniqueids) and len(set(uniqueids)) == 2, uniqueids
    connected = [_event_times(r.record, "CONNECT") for r in reports]
    ended = [_event_times(r.record, "COMPLETEAGENT", "COMPLETECALLER") for r in reports]
    assert all(connected) and all(ended), (connected, ended)
    assert max(c[0] for c in connected) < min(e[0] for e in ended), ("not talking at once", connected, ended)
    cards = [_wait_for_card(region, u) for u in uniqueids]
    for report, card in zip(reports, cards, strict=True):
        assert card["caller_number"] == normalise_number(report.record.caller), (card, report.record)
        assert (card["status"], card["operator_extension"]) == ("answered", report.plan.operator), card
    assert {c["operator_extension"] for c in cards} == set(operators), cards
    numbers = sorted(c["number"] for c in cards)
    assert numbers[0] != numbers[1] and numbers[0].rsplit("-", 1)[0] == numbers[1].rsplit("-", 1)[0], numbers
    assert _sequence(numbers[1]) == _sequence(numbers[0]) + 1, numbers
    print(f"two calls at once: cards {numbers[0]} and {numbers[1]}")


def _db_command(region: AppliedRegion, verb: str, *options: str) -> tuple[str, float]:
    """``deploy.py db <verb> <region>`` as an operator runs it (it must succeed): its output and its time."""
    started = time.monotonic()
    done = region.deploy("db", verb, str(region.region_dir), *options, "--known-hosts", str(region.lab.known_hosts),
                         timeout=1800)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip(), time.monotonic() - started


def _cards_and_counters(region: AppliedRegion) -> tuple[str, str]:
    """Every card (number, call id, status) and every year's counter, as the CRM's database holds them."""
    return (_psql(region, "crm", "SELECT number, call_id, status FROM ekc_appeals_appeal ORDER BY number"),
            _psql(region, "crm", "SELECT year, last FROM ekc_appeals_numbercounter ORDER BY year"))


def test_card_numbers_survive_a_database_restore(region: AppliedRegion, plan: CallPlan, queue_call: CallReport,
                                                 tmp_path: Path) -> None:
    """Numbers taken, a base backup (``deploy.py db backup``), a real call's card and more numbers taken, then
    ``deploy.py db restore``, with nothing done by hand between (no WAL switch: the restore stops the server
    cleanly, which archives the last WAL segment): every card and the counter are back as they were, and the
    next real call's card takes the number after the last one taken, so no number is given out twice. The
    backup's and the restore's times are printed."""
    code, year, _ = _wait_for_card(region, queue_call.record.uniqueid or "")["number"].split("-")
    password = region.secrets.get("sip", plan.operator)
    before = _take_numbers(region, code, int(year), 2)
    backup, backup_s = _db_command(region, "backup")
    after_call = place_test_call(plan, password, tmp_path / "after-backup", _on_pbx(region))
    assert after_call.reached_operator, report_lines(after_call)
    after_card = _wait_for_card(region, after_call.record.uniqueid or "")["number"]
    after = _take_numbers(region, code, int(year), 2)
    sequences = [_sequence(n) for n in (*before, after_card, *after)]
    assert sequences == list(range(sequences[0], sequences[0] + 5)), (before, after_card, after)
    kept = _cards_and_counters(region)
    assert after_card in kept[0] and f"{year}|{sequences[-1]}" in kept[1].splitlines(), kept
    restore, restore_s = _db_command(region, "restore", "-y")
    print(f"\n{backup} (took {backup_s:.1f} s)\n{restore} (took {restore_s:.1f} s)")
    assert _psql(region, "postgres", "SELECT pg_is_in_recovery()") == "f"
    setup = region.run("db1", "systemctl is-active ekc-postgresql-setup").stdout.strip()
    assert setup == "active", "the restore left the database's setup unit stopped"
    assert _cards_and_counters(region) == kept
    next_call = place_test_call(plan, password, tmp_path / "after-restore", _on_pbx(region))
    assert next_call.reached_operator, report_lines(next_call)
    next_card = _wait_for_card(region, next_call.record.uniqueid or "")["number"]
    assert next_card == f"{code}-{year}-{sequences[-1] + 1:06d}", (next_card, after)


SCREENSHOTS = REPO / "build" / "screenshots"  # build/ is git-ignored: the README's images are taken, not kept
ENGLISH_ALLOWED = {"Crème", "CRÈME", "pbx"}  # the product's name; the node name (pbx1) of the card


def test_card_completed_in_chromium(region: AppliedRegion, queue_call: CallReport, tmp_path: Path) -> None:
    """The operator completes the call's card in Chromium: the card opens from the call, the topic is picked,
    the answer typed and the card saved; the steps and their time are printed, every word on the card's page
    is Russian, and the saved card holds what was entered. A screenshot of the saved card goes to
    ``build/screenshots/operator-card.png`` (the README's picture of the operator's screen)."""
    uniqueid = queue_call.record.uniqueid
    assert uniqueid and _card(region, uniqueid), "the call has no card"
    name = crm_hostname(region.spec.region)
    base = f"https://{name}"
    with _browser_trusting(region.secrets.get("ca", "cert"), {name: region.address("crm1")}, tmp_path) as page:
        _browser_login(page, region, base)
        started = time.monotonic()
        page.open(f"{base}/appeals/call/{uniqueid}/")
        page.wait_for("!!document.querySelector('#ekc-card-form')")
        number = page.evaluate("document.querySelector('#ekc-card-number').innerText")
        steps = [
            "document.activeElement.id === 'id_topic'",
            "(() => { const s = document.querySelector('#id_topic'); s.selectedIndex = 1; return s.value !== ''; })()",
            "(() => { const a = document.querySelector('#id_answer'); a.focus(); "
            "a.value = 'Разъяснён порядок записи к врачу через региональный портал.'; return true; })()",
            "(() => { document.querySelector('#id_outcome').value = 'answered'; return true; })()",
            "(() => { document.querySelector('#ekc-card-save').click(); return true; })()",
        ]
        for step in steps:
            assert page.evaluate(step), step
        page.wait_for("!!document.querySelector('#ekc-card-saved')")
        elapsed = time.monotonic() - started
        # Creme's credits (its name, its makers' address) are not the operator's screen.
        text = page.evaluate("document.querySelectorAll('.page-decoration, .footer')"
                             ".forEach(e => e.style.display = 'none'); document.body.innerText")
        screenshot = page.screenshot(SCREENSHOTS / "operator-card.png", full_page=True)
    words = set(re.findall(r"[^\W\d_А-Яа-яЁё]{2,}", text)) - ENGLISH_ALLOWED
    assert not words, sorted(words)
    print(f"\ncall card {number}: opened, filled and saved in {len(steps)} steps, {elapsed:.1f} s; "
          f"screenshot {screenshot}")
    saved = _psql(region, "crm", "SELECT outcome, topic_id IS NOT NULL, completed_at IS NOT NULL "
                                 f"FROM ekc_appeals_appeal WHERE number = '{number}'")
    assert saved == "answered|t|t", saved


def click(region: AppliedRegion, plan: CallPlan, number: str, origin: str | None = None) -> tuple[int, dict[str, str]]:
    """The operator's browser calling Creme's ABCTI_URL (the CRM's own /ekc-cti/dial) from the operators'
    address: status and JSON body. The CRM's nginx passes it to an Asterisk node's click-to-call service."""
    connection = http.client.HTTPSConnection(region.address("crm1"), 443, context=_tls(region), timeout=30,
                                             source_address=(plan.operator_address, 0))
    hostname = crm_hostname(region.spec.region)
    try:
        connection.request("GET", f"{CTI_PATH}?n_tel={number}",
                           headers={"Origin": origin or f"https://{hostname}", "Host": hostname})
        reply = connection.getresponse()
        body = reply.read()
        try:
            return reply.status, json.loads(body or b"{}")
        except ValueError:  # nginx's own error page
            return reply.status, {"error": body.decode(errors="replace")[:500]}
    finally:
        connection.close()


def test_click_to_call_runs_on_the_node_address_for_the_crm_only(region: AppliedRegion, plan: CallPlan) -> None:
    """ekc-cti is active on pbx1 and listens on the node's address at its port, which the workstations cannot
    reach (the firewall lets the CRM's node in only)."""
    assert region.run("pbx1", "systemctl is-active ekc-cti").stdout.strip() == "active"
    listening = region.run("pbx1", f"ss -Htln 'sport = :{CTI_PORT}'").stdout
    assert f"{region.address('pbx1')}:{CTI_PORT}" in listening, listening
    with pytest.raises(OSError):
        socket.create_connection((region.address("pbx1"), CTI_PORT), timeout=3,
                                 source_address=(plan.operator_address, 0)).close()


def test_click_without_a_registered_phone(region: AppliedRegion, plan: CallPlan) -> None:
    """Without a phone registered from the caller's address, nothing is placed (404)."""
    status, body = click(region, plan, "601")
    assert status == 404, body
    assert plan.operator_address in body["error"]


def test_click_rings_the_operators_phone(region: AppliedRegion, plan: CallPlan, tmp_path: Path) -> None:
    """A click from the workstation rings the phone registered from it; a foreign page is refused."""
    password = region.secrets.get("sip", plan.operator)
    with operator_phone(plan, plan.operator, password, tmp_path, timing=Timing(answer_ms=300, talk_ms=2000)) as phone:
        status, body = click(region, plan, "601", origin="https://elsewhere.example")
        assert status == 403, body
        status, body = click(region, plan, "601")
        assert (status, body.get("extension")) == (200, plan.operator), body
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(o.startswith("answered") for o in phone.outcomes()):
            time.sleep(1)
        outcomes = phone.outcomes()
    assert any(o.startswith("answered") for o in outcomes), outcomes


CITIZEN = "citizen@example.local"


def _post(opener: urllib.request.OpenerDirector, base: str, path: str, fields: dict[str, str],
          form_page: str | None = None) -> tuple[int, str]:
    """A form posted as the logged-in user (the CSRF token from the form's page: ``path`` itself unless
    ``form_page`` is given); the status and final page."""
    page = opener.open(f"{base}{form_page or path}", timeout=60).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert token, page[:2000]
    data = urllib.parse.urlencode({"csrfmiddlewaretoken": token.group(1), **fields}).encode()
    request = urllib.request.Request(f"{base}{path}", data=data, headers={"Referer": f"{base}{path}"})
    try:
        with opener.open(request, timeout=60) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _task(region: AppliedRegion, task_id: int) -> dict[str, str]:
    out = _psql(region, "crm", "SELECT row_to_json(t) FROM (SELECT state, received_on, registration_due, "
                               f"registered_on, answer_due FROM ekc_appeals_task WHERE id = {task_id}) t")
    return json.loads(out) if out else {}


@pytest.fixture(scope="module")
def task_id(region: AppliedRegion, queue_call: CallReport, tmp_path_factory: pytest.TempPathFactory) -> int:
    """The operator, in Chromium, puts the citizen's address on the call's card and gives the department a
    task from it; the task's page follows."""
    card = _card(region, queue_call.record.uniqueid or "")
    assert card, "the call has no card"
    name = crm_hostname(region.spec.region)
    base = f"https://{name}"
    shots = tmp_path_factory.mktemp("task")
    with _browser_trusting(region.secrets.get("ca", "cert"), {name: region.address("crm1")}, shots) as page:
        _browser_login(page, region, base)
        page.open(f"{base}/appeals/{card['number']}/")
        page.wait_for("!!document.querySelector('#ekc-task-form')")
        started = time.monotonic()
        steps = [
            f"(() => {{ document.querySelector('#id_email').value = {CITIZEN!r}; "
            "const t = document.querySelector('#id_topic'); if (!t.value) t.selectedIndex = 1; "
            "document.querySelector('#id_outcome').value = 'task'; "
            "document.querySelector('#ekc-card-save').click(); return true; })()",
        ]
        for step in steps:
            assert page.evaluate(step), step
        page.wait_for("!!document.querySelector('#ekc-card-saved')")
        task_steps = [
            "document.querySelector('#id_department').value !== '' && "
            "document.querySelector('#id_responsible').value !== ''",
            "(() => { document.querySelector('#id_question').value = "
            "'Проверить запись гражданина к врачу и сообщить ему дату приёма.'; return true; })()",
            "(() => { document.querySelector('#ekc-task-create').click(); return true; })()",
        ]
        for step in task_steps:
            assert page.evaluate(step), step
        page.wait_for("location.search.startsWith('?task=')")
        elapsed = time.monotonic() - started
        created = int(page.evaluate("new URLSearchParams(location.search).get('task')"))
        text = page.evaluate("document.querySelectorAll('.page-decoration, .footer')"
                             ".forEach(e => e.style.display = 'none'); document.querySelector('#ekc-tasks')"
                             ".nextElementSibling.innerText")
        page.evaluate("window.scrollTo(0, 0); true")
        page.screenshot(SCREENSHOTS / "card-with-task.png", full_page=True)
    assert "Зарегистрировать до" in text, text
    print(f"\ntask {created} from card {card['number']}: address, save and task in "
          f"{len(steps) + len(task_steps)} steps, {elapsed:.1f} s; screenshot {SCREENSHOTS / 'card-with-task.png'}")
    return created


def test_task_deadlines_follow_the_working_calendar(region: AppliedRegion, task_id: int) -> None:
    """The task made today is due for registration 3 working days later and for the answer 30 days later,
    moved off the region's holidays and days off (a task made in December crosses the New Year holidays)."""
    task = _task(region, task_id)
    dep = next(d for d in catalogue(region.spec.region)["departments"]
               if d["code"] == _psql(region, "crm", "SELECT d.code FROM ekc_appeals_task t JOIN "
                                                    "ekc_appeals_department d ON d.id = t.department_id "
                                                    f"WHERE t.id = {task_id}"))
    holidays = [dt.date.fromisoformat(d) for d in catalogue(region.spec.region)["holidays"]]  # type: ignore[attr-defined]
    calendar = Calendar.of(dep["workdays"], holidays)
    received = dt.date.fromisoformat(task["received_on"])
    assert received == dt.datetime.now(ZoneInfo(region.spec.region.region.timezone)).date(), task
    assert task["state"] == "new" and task["registration_due"] == registration_due(
        received, dep["register_working_days"], calendar).isoformat(), task
    assert task["answer_due"] == answer_due(received, dep["answer_days"], calendar).isoformat(), task
    print(f"\ntask received {received}: register by {task['registration_due']}, answer by {task['answer_due']}")


def test_citizen_gets_letters_on_registration_and_answer(region: AppliedRegion, task_id: int) -> None:
    """The department registers the task, then answers it: the citizen's two letters, in Russian, with the
    appeal's number and the answer, reach the region's mail relay (a real SMTP server on the deploy host)."""
    relay = region.spec.region.monitoring.smtp
    assert relay is not None
    number = _psql(region, "crm", f"SELECT a.number FROM ekc_appeals_task t JOIN ekc_appeals_appeal a "
                                  f"ON a.id = t.appeal_id WHERE t.id = {task_id}")
    opener, base = _login(region)
    answer = "Вы записаны к врачу на 15 января, 10:00."
    with SmtpSink(str(relay.relay), relay.port) as sink:
        started = time.monotonic()
        assert _post(opener, base, f"/appeals/tasks/{task_id}/", {"action": "register"})[0] == 200
        assert _task(region, task_id)["state"] == "registered"
        registered = sink.wait_for(lambda m: CITIZEN in m.recipients and number in m.subject, timeout=60)
        assert registered is not None, [m.subject for m in sink.messages]
        assert _post(opener, base, f"/appeals/tasks/{task_id}/", {"action": "answer", "answer": answer})[0] == 200
        answered = sink.wait_for(lambda m: CITIZEN in m.recipients and m is not registered
                                 and number in m.subject, timeout=60)
        assert answered is not None, [m.subject for m in sink.messages]
        elapsed = time.monotonic() - started
    assert "зарегистрировано" in registered.subject, registered.subject
    assert answer in answered.message.get_content() and "Ответ" in answered.subject, answered.text
    # The service marks a letter sent once the relay has taken it: a moment after the relay has it.
    deadline, sent = time.monotonic() + 15, ""
    while sent != "2" and time.monotonic() < deadline:
        sent = _psql(region, "crm", f"SELECT count(*) FROM ekc_appeals_mail WHERE task_id = {task_id} "
                                    "AND sent_at IS NOT NULL")
        time.sleep(0.5)
    assert sent == "2", sent
    print(f"\nletters '{registered.subject}' and '{answered.subject}' reached the relay; both in {elapsed:.1f} s")


def test_overdue_task_is_listed_and_alerts(region: AppliedRegion, queue_call: CallReport) -> None:
    """A task past its registration deadline (its deadline moved to yesterday, as time would) is marked in the
    department's list and raises EkcAppealTasksOverdue in Alertmanager through Prometheus; the figures' port
    is closed to everyone but the monitoring node."""
    number = _card(region, queue_call.record.uniqueid or "")["number"]
    department = _psql(region, "crm", "SELECT d.code FROM ekc_appeals_appeal a JOIN ekc_appeals_department d "
                                      f"ON d.id = a.department_id WHERE a.number = '{number}'")
    opener, base = _login(region)
    admin = _psql(region, "crm", f"SELECT id FROM creme_core_cremeuser WHERE username = "
                                 f"'{region.spec.region.crm.admin_username}'")
    dep_id = _psql(region, "crm", f"SELECT id FROM ekc_appeals_department WHERE code = '{department}'")
    status, page = _post(opener, base, f"/appeals/{number}/tasks/new/",
                         {"department": dep_id, "responsible": admin, "question": "Просроченная проверка."},
                         form_page=f"/appeals/{number}/")
    assert status == 200, re.findall(r'class="errorlist[^"]*"[^>]*>(.*?)</ul>', page, re.S)
    late = _psql(region, "crm", "UPDATE ekc_appeals_task SET registration_due = current_date - 1 WHERE id = "
                                "(SELECT max(id) FROM ekc_appeals_task) RETURNING id")
    listed = opener.open(f"{base}/appeals/tasks/?department={department}&show=overdue", timeout=60).read().decode()
    assert re.search(rf'class="ekc-task overdue" data-task="{late}"', listed), listed[-3000:]
    with pytest.raises(OSError):
        socket.create_connection((region.address("crm1"), CRM_METRICS_PORT), timeout=3).close()
    started, deadline = time.monotonic(), time.monotonic() + 180
    fired: list[dict[str, dict[str, str]]] = []
    while not fired and time.monotonic() < deadline:
        fired = [a for a in prom.alerts(region) if a["labels"].get("alertname") == "EkcAppealTasksOverdue"
                 and a["labels"].get("department") == department]
        time.sleep(3)
    assert fired, prom.query(region, "ekc_appeal_tasks")
    print(f"\nEkcAppealTasksOverdue fired for {department} {time.monotonic() - started:.0f} s after the task went "
          f"overdue: {fired[0]['annotations']['summary']}")
    assert _post(opener, base, f"/appeals/tasks/{late}/", {"action": "answer", "answer": "Проверено."})[0] == 200
    deadline, left = time.monotonic() + 60, None
    while left != 0 and time.monotonic() < deadline:
        values = prom.query(region, f'max(ekc_appeal_tasks{{department="{department}",state="overdue"}})')
        left = int(float(values[0]["value"][1])) if values else None  # type: ignore[index]
        time.sleep(2)
    assert left == 0, "the answered task still counts as overdue"


def _recording_on_node(region: AppliedRegion, uniqueid: str) -> tuple[str, int]:
    """The call's recording on pbx1: its path and size (MixMonitor closed it when the call ended)."""
    found = region.run("pbx1", f"find {MONITOR_DIR} -type f -name '*-{uniqueid}.*' -printf '%p %s\\n'").stdout.split()
    assert len(found) == 2, (found, region.run("pbx1", f"ls -lR {MONITOR_DIR}").stdout)
    modes = region.run("pbx1", f"stat -c '%n %A %U:%G' /var/spool/asterisk {MONITOR_DIR} {Path(found[0]).parent} "
                               f"{found[0]}").stdout
    print(f"\n{modes.strip()}")
    return found[0], int(found[1])


def _fetch(opener: urllib.request.OpenerDirector, url: str,
           headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=60) as reply:
            return reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_card_plays_the_calls_recording_through_the_crm(region: AppliedRegion, queue_call: CallReport) -> None:
    """The card of the recorded call has a player whose source, fetched through the CRM by a logged-in user, is
    the very file on pbx1 (a RIFF/WAVE of its length; a byte range too); without a login it is refused (401), an
    unknown call, a path out of the recordings and a node that is not an Asterisk node are 404; the deploy host
    cannot reach ekc-cti itself."""
    uniqueid = queue_call.record.uniqueid or ""
    deadline = time.monotonic() + 30
    while not _card(region, uniqueid) and time.monotonic() < deadline:
        time.sleep(0.5)
    path, size = _recording_on_node(region, uniqueid)
    opener, base = _login(region)
    page = opener.open(f"{base}/appeals/call/{uniqueid}/", timeout=60).read().decode()
    player = re.search(r'<audio id="ekc-card-recording" controls preload="none" src="([^"]+)"', page)
    assert player, page[-3000:]
    source = player.group(1)
    assert source == f"{RECORDINGS_PATH}/pbx1/{uniqueid}", source
    assert "Запись разговора" in page
    started = time.monotonic()
    status, headers, body = _fetch(opener, base + source)
    elapsed = time.monotonic() - started
    assert status == 200, (status, body[:500])
    assert headers["Content-Type"] == "audio/wav" and int(headers["Content-Length"]) == size == len(body), headers
    assert body[:4] == b"RIFF" and body[8:12] == b"WAVE", body[:64]
    status, headers, part = _fetch(opener, base + source, {"Range": "bytes=0-11"})
    assert (status, part, headers.get("Content-Range")) == (206, body[:12], f"bytes 0-11/{size}"), headers
    print(f"\nrecording {path} ({size} bytes) played through the CRM in {elapsed:.2f} s")
    anonymous = urllib.request.build_opener(urllib.request.HTTPSHandler(context=_tls(region)))
    assert _fetch(anonymous, base + source)[0] == 401
    for wrong in (f"{RECORDINGS_PATH}/pbx1/pbx1-1000000000.1", f"{RECORDINGS_PATH}/pbx1/..%2F..%2Fasterisk.conf",
                  f"{RECORDINGS_PATH}/pbx1/{uniqueid}%2F..%2F..%2F..%2Fetc%2Fpasswd",
                  f"{RECORDINGS_PATH}/db1/{uniqueid}", f"{RECORDINGS_PATH}/10.239.0.11/{uniqueid}"):
        status, _, answer = _fetch(opener, base + wrong)
        assert status == 404 and not answer.startswith(b"RIFF"), (wrong, status, answer[:200])
    with pytest.raises(OSError):
        socket.create_connection((region.address("pbx1"), CTI_PORT), timeout=3).close()


def test_card_recording_plays_in_chromium(region: AppliedRegion, queue_call: CallReport, tmp_path: Path) -> None:
    """Chromium, logged in, loads the card's player: the recording's duration is the call's (within a second)."""
    uniqueid = queue_call.record.uniqueid or ""
    _, size = _recording_on_node(region, uniqueid)
    name = crm_hostname(region.spec.region)
    base = f"https://{name}"
    with _browser_trusting(region.secrets.get("ca", "cert"), {name: region.address("crm1")}, tmp_path) as page:
        _browser_login(page, region, base)
        page.open(f"{base}/appeals/call/{uniqueid}/")
        page.wait_for("!!document.querySelector('#ekc-card-recording')")
        page.evaluate("(() => { const a = document.querySelector('#ekc-card-recording'); a.preload = 'auto'; "
                      "a.load(); return true; })()")
        page.wait_for("(a => a.readyState >= 1 || !!a.error)(document.querySelector('#ekc-card-recording'))")
        state = page.evaluate("(a => ({duration: a.duration, error: a.error && a.error.code}))"
                              "(document.querySelector('#ekc-card-recording'))")
    # MixMonitor's WAV: 8 kHz, 16-bit mono, a 44-byte header.
    assert state["error"] is None and abs(state["duration"] - (size - 44) / 16000) < 1, (state, size)
    print(f"\nChromium plays the card's recording: {state['duration']:.1f} s")


def test_verify_passes(region: AppliedRegion, tmp_path: Path) -> None:
    """The whole verify suite passes on every node: the CRM's, the click-to-call and every other module."""
    result = run_verify(region.build, region.key, junit=tmp_path / "verify.xml", bundle_lock=region.lock,
                        known_hosts=region.lab.known_hosts)
    crm = {"test_setup_finished", "test_https_answers_with_the_region_certificate",
           "test_plain_http_redirects_to_https", "test_database_is_reached_over_verified_tls",
           "test_no_default_login_and_an_administrator", "test_click_to_call_refuses_other_sites"}
    ran = {c.test.split("[")[0] for c in result.checks if c.outcome == "passed"}
    assert crm <= ran, sorted(crm - ran)
    failed = [f"{c.host} {c.test}: {c.reason}" for c in result.checks if c.outcome in ("failed", "error")]
    assert failed == [], "\n".join(failed)


def test_second_apply_changes_nothing(region: AppliedRegion) -> None:
    """Idempotence: a second apply (pyinfra, then Ansible) has nothing to do; the setup reruns keeping the admin."""
    result = region.apply()
    assert result.changes == 0, result
    with serve_bundle(region.bundle, region.lab.gateway, region.bundle_port):
        ansible = apply_ansible(region.build, region.key, known_hosts=region.lab.known_hosts)
    assert ansible.ok and ansible.changes == 0, [(h.host, h.error) for h in ansible.hosts]
    rerun = region.run("crm1", f"rm -f {DONE_FILE} && systemctl restart ekc-crm-setup", timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    _wait_for_setup(region)
    log = region.run("crm1", "journalctl -u ekc-crm-migrate -n 5 --no-pager").stdout
    assert "administrator admin: unchanged" in log, log
