"""Creme CRM, its database and click-to-call on real servers: the example region without its monitoring node.

``crmtest`` is ``inventories/example`` on 10.239.0.0/24 (operators' network 10.239.10.0/24) with three nodes,
each carrying exactly its own role: db1 (postgresql), crm1 (crm) and pbx1 (asterisk). What the lab gets is the
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
- click-to-call, from the workstation the operator's phone registered from, through the CRM (its nginx passes
  the click on to pbx1's service), rings that phone; another origin is refused (403) and a workstation without
  a phone gets 404; the workstation cannot reach pbx1's service itself;
- the verify suite passes on every node;
- a second apply changes nothing, with pyinfra and then with Ansible; rerunning the setup keeps the
  administrator and the data.
"""

from __future__ import annotations

import http.client
import http.cookiejar
import json
import re
import socket
import ssl
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography import x509

from ekc.bundle.serve import serve_bundle
from ekc.engines.ansible_engine import apply_ansible
from ekc.lab.call import CallPlan, CallReport, Timing, call_plan, operator_phone, place_test_call, report_lines
from ekc.lab.region import lab_call_network
from ekc.render.components.addresses import CTI_PATH, crm_hostname
from ekc.render.components.asterisk_dialplan import normalise_number
from ekc.render.components.crm import DONE_FILE
from ekc.render.components.cti import PORT as CTI_PORT
from ekc.verify.run import run_verify
from tests.support.browser import CHROMIUM, chromium_available
from tests.support.cdp import Page, chromium_page
from tests.support.labregion import AppliedRegion, applied_region, worker_name

pytestmark = [pytest.mark.lab, pytest.mark.slow]

PREFIX = "10.239."
NODES = """nodes:
  - {name: pbx1, address: 10.239.0.11, roles: [asterisk]}
  - {name: db1, address: 10.239.0.21, roles: [postgresql]}
  - {name: crm1, address: 10.239.0.31, roles: [crm]}
"""
KNOWN_NUMBER = "+79130000001"
UNKNOWN_NUMBER = "+79139999999"
CREME = ("cd /var/lib/ekc-crm && PYTHONPATH=/etc/ekc-crm DJANGO_SETTINGS_MODULE=ekc_crm_settings "
         "/opt/ekc-crm/bin/creme")
CALL_INFO = re.compile(r"call-info=(.*)$")


def trim(text: str) -> str:
    """pbx1, db1 and crm1, each with its own role; the monitoring node and its wallboard flow go."""
    text = re.sub(r"^nodes:\n(?:  - .*\n)+", NODES, text, flags=re.M)
    return re.sub(r"    - description: the hall's wallboard screens\n(?:      .*\n)+", "", text)


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
    report = place_test_call(plan, password, tmp_path_factory.mktemp("call"),
                             lambda command: region.run("pbx1", command).stdout)
    print("\n" + "\n".join(report_lines(report)))
    return report


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
    done = region.run("db1", f"runuser -u postgres -- psql -X -d {database} -At <<'SQL'\n{query}\nSQL")
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
    deadline, card = time.monotonic() + 30, {}
    while not card and time.monotonic() < deadline:
        card = _card(region, uniqueid)
        time.sleep(0.5)
    assert card, region.run("crm1", "journalctl -u ekc-crm-appeals --no-pager | tail -20").stdout
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
    after = region.run("crm1", CREME + " shell -c \"from django.db import transaction; from ekc_appeals import sync; "
                       "t = transaction.atomic(); t.__enter__(); print(sync.next_number('00', 1999)); "
                       "t.__exit__(None, None, None)\"", timeout=120)
    assert after.stdout.split()[-1] == f"00-1999-{sequences[-1] + 1:06d}", after.stdout


ENGLISH_ALLOWED = {"Crème", "CRÈME", "pbx"}  # the product's name; the node name (pbx1) of the card


def test_card_completed_in_chromium(region: AppliedRegion, queue_call: CallReport, tmp_path: Path) -> None:
    """The operator completes the call's card in Chromium: the card opens from the call, the topic is picked,
    the answer typed and the card saved; the steps and their time are printed, every word on the card's page
    is Russian, and the saved card holds what was entered."""
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
        page.screenshot(tmp_path / "call-card.png")
    words = set(re.findall(r"[^\W\d_А-Яа-яЁё]{2,}", text)) - ENGLISH_ALLOWED
    assert not words, sorted(words)
    print(f"\ncall card {number}: opened, filled and saved in {len(steps)} steps, {elapsed:.1f} s; "
          f"screenshot {tmp_path / 'call-card.png'}")
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
