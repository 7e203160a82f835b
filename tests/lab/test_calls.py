"""Real SIP calls through a real Asterisk node: SIPp plays the carrier and the operators' phones.

``callstest`` is ``inventories/example`` on 10.237.0.0/24 (operators' network 10.237.10.0/24, trunk peer
10.237.0.5) with one server, pbx1, carrying the asterisk role alone (db1, crm1 and mon1 are left out of the
spec): the lab gets exactly the render of that spec, so the module proves Asterisk alone. Without a crm node
the operator's INVITE carries no screen-pop header (the CRM's lab test checks the header on a region that has
one); without a postgresql node the call is recorded in the node's files only. One department (housing)
gets a schedule that is closed now in the region's time zone (computed when the module starts). The deploy
host holds the trunk peer's address and 10.237.10.1 on the lab bridge (``ekc.lab.net``); SIPp runs there
bound to those addresses. Then:

- a carrier call to the DID goes through the IVR (a DTMF digit), health's queue and an operator's phone
  (registered with the vault's password), who hangs up; the caller rates the call; queue_log has
  ENTERQUEUE, CONNECT, the end and RATING, the CDR the normalised number, the answer and ``rating=<n>``;
  the operator's INVITE carries no screen-pop header (no crm node); the recording exists and has audio,
  its retention timer runs;
- a new IVR option applied (``deploy.py apply``: the fast path, a dialplan reload and the prompts synthesized
  again) while a call is bridged to an operator: the call ends normally and the new option is live;
- a call to the closed department gets its after-hours branch (AFTERHOURS) and never a queue;
- incident on: the INCIDENT announcement comes before the queue; off: it does not;
- an INVITE from an address the spec does not allow gets no answer, a REGISTER with a wrong password is
  refused, an operator's and the carrier's calls to an outside number are not placed: the carrier's side
  of the trunk (a SIPp at the trunk peer's address) sees no INVITE at all;
- a hand edit of ``modules.conf`` (its change restarts Asterisk) is not taken by the fast path: pyinfra puts
  the file back and restarts Asterisk.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
import zoneinfo
from collections.abc import Iterator
from pathlib import Path

import pytest

from ekc.lab.call import (
    CallPlan,
    CallRecord,
    Timing,
    call_plan,
    caller_number,
    carrier_call,
    operator_phone,
    read_record,
)
from ekc.lab.region import lab_call_network
from ekc.lab.sipp import SippResult, SippRun, authentication, run_sipp, serving
from tests.support.labregion import AppliedRegion, applied_region, worker_name

pytestmark = [pytest.mark.lab, pytest.mark.slow]

PREFIX = "10.237."
NODE = "pbx1"
TIMEZONE = "Asia/Novosibirsk"
OUTSIDE_NUMBERS = ("89001234567", "+79001234567", "810442079460000")
FAST = Timing(talk_ms=3000)


def closed_now_schedule(now: dt.datetime) -> str:
    """A schedule open only on the day after tomorrow (region time): closed for the whole module."""
    from schemas.telephony import WEEKDAYS  # noqa: PLC0415

    day = WEEKDAYS[(now.weekday() + 2) % 7]
    return f'    closed-now: {{{day}: "10:00-11:00"}}\n'


LEFT_OUT_FLOW = re.compile(r"^    - description: .*\n(?:      (?!targets:).*\n)*"
                           r"      targets: \[role:(?:crm|monitoring|postgresql)\]\n(?:      .*\n)*", re.M)


def asterisk_alone(text: str, address: str) -> str:
    """The example's nodes reduced to pbx1 at ``address`` with the asterisk role; the spec's own flows to the
    crm and monitoring nodes go with them (a flow to a role no node carries is a spec mistake)."""
    node = f"  - {{name: {NODE}, address: {address}, roles: [asterisk]}}\n"
    text = re.sub(r"^nodes:\n(?:  - .*\n)+", "nodes:\n" + node, text, flags=re.M)
    return re.sub(r"^  flows:\n(?!    )", "  flows: []\n", LEFT_OUT_FLOW.sub("", text), flags=re.M)


def trim(text: str) -> str:
    """pbx1 alone with the asterisk role (and no flow to the roles it left out); housing closed now."""
    text = asterisk_alone(text, f"{PREFIX}0.11")
    now = dt.datetime.now(zoneinfo.ZoneInfo(TIMEZONE))
    text = text.replace("  schedules:\n", "  schedules:\n" + closed_now_schedule(now))
    housing = "      queue: {number: \"603\", strategy: rrmemory, max_wait_s: 900}\n      hours: weekdays-08-20\n"
    assert housing in text, "the example's housing department changed: update this test"
    return text.replace(housing, housing.replace("weekdays-08-20", "closed-now"))


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppliedRegion]:
    """``callstest`` applied: pbx1 with Asterisk alone."""
    started = time.monotonic()
    with applied_region(tmp_path_factory.mktemp("callstest"), worker_name("callstest"), source="example",
                        prefix=PREFIX, edit=trim) as applied:
        print(f"\ncallstest: secrets, render, bundle, lab and first apply took {time.monotonic() - started:.0f} s")
        yield applied


def plan_for(region: AppliedRegion, department: str = "health") -> CallPlan:
    """The call plan of ``department`` in the lab."""
    return call_plan(region.spec.region, lab_call_network(region.spec), department=department)


def asterisk(region: AppliedRegion, command: str) -> str:
    """``asterisk -rx`` on pbx1."""
    return region.run(NODE, f"asterisk -rx '{command}'").stdout


def full_call(region: AppliedRegion, work: Path, plan: CallPlan, timing: Timing = FAST,
              rating: str = "4") -> tuple[SippResult, tuple[str, ...], CallRecord]:
    """A carrier call answered by the plan's operator; both ends' outcomes and the node's record."""
    caller = caller_number()
    with operator_phone(plan, plan.operator, region.secrets.get("sip", plan.operator), work,
                        timing=timing) as phone:
        result = carrier_call(plan, work, caller=caller, rating=rating, timing=timing)
        outcomes = phone.outcomes()
    return result, outcomes, read_record(lambda c: region.run(NODE, c).stdout, caller)


# --- a call through the IVR, the queue, an operator and the rating ---------------------------------


@pytest.fixture(scope="module")
def answered(region: AppliedRegion, tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[SippResult, tuple[str, ...], CallRecord]:
    """One complete call to health (key 2), rated 4."""
    return full_call(region, tmp_path_factory.mktemp("answered"), plan_for(region))


def test_the_carrier_call_ends_normally_after_the_rating(answered: tuple[SippResult, tuple[str, ...],
                                                                           CallRecord]) -> None:
    result, _, _ = answered
    assert result.ok, result.describe()
    assert "node hung up" in result.outcomes, result.describe()


def test_the_operator_answered_and_hung_up(answered: tuple[SippResult, tuple[str, ...], CallRecord]) -> None:
    _, phone, _ = answered
    assert any(o.startswith("answered") for o in phone), phone
    assert any(o.startswith("operator hung up") for o in phone), phone


def test_queue_log_shows_the_queue_the_operator_and_the_rating(
        answered: tuple[SippResult, tuple[str, ...], CallRecord]) -> None:
    _, _, record = answered
    events = record.events()
    assert record.uniqueid, "no CDR row for the caller's normalised number"
    assert events[:2] == ["ENTERQUEUE", "CONNECT"], record.queue_log
    assert "COMPLETEAGENT" in events, record.queue_log
    assert record.rating == "4", record.queue_log
    assert all(line.split("|")[2] == "health" for line in record.queue_log), record.queue_log


def test_cdr_has_the_normalised_caller_the_answer_and_the_rating(
        answered: tuple[SippResult, tuple[str, ...], CallRecord]) -> None:
    _, _, record = answered
    assert re.fullmatch(r"\+7913\d{7}", record.caller)
    answered_rows = [row for row in record.cdr if row["disposition"] == "ANSWERED"]
    assert answered_rows, record.cdr
    assert any(row["userfield"] == "rating=4" for row in record.cdr), record.cdr
    assert any(row["accountcode"] == "health" for row in record.cdr), record.cdr
    assert any(row["dstchannel"].startswith("PJSIP/2005-") for row in answered_rows), record.cdr


def test_without_a_crm_node_the_operators_invite_carries_no_screen_pop(
        answered: tuple[SippResult, tuple[str, ...], CallRecord]) -> None:
    _, phone, _ = answered
    invite = next(o for o in phone if o.startswith("invite "))
    assert "call-info=" in invite and "respond_to_a_call" not in invite, invite


# The recording's audio, measured on the node (Python's standard library: no audioop since 3.13).
AUDIO_PROBE = """
import array, sys, wave
with wave.open(sys.argv[1]) as w:
    frames = w.readframes(w.getnframes())
    rate, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
samples = array.array("h", frames)
second = rate * channels
loud = sum(1 for i in range(0, len(samples), second // 10)
           if max((abs(v) for v in samples[i:i + second // 10]), default=0) > 500)
print(rate, width, channels, len(samples) / second, loud / 10)
"""


def test_the_call_was_recorded_with_audio(region: AppliedRegion,
                                          answered: tuple[SippResult, tuple[str, ...], CallRecord]) -> None:
    _, _, record = answered
    found = region.run(NODE, f"find /var/spool/asterisk/monitor -name '*-{record.uniqueid}.wav'").stdout.split()
    assert len(found) == 1, f"no recording of {record.uniqueid}: {found}"
    probe = region.run(NODE, f"python3 -c '{AUDIO_PROBE}' {found[0]}")
    rate, width, channels, seconds, loud_s = probe.stdout.split()
    print(f"\nrecording {found[0]}: {rate} Hz, {width} bytes, {channels} channel(s), {float(seconds):.1f} s,"
          f" {float(loud_s):.1f} s of it above -36 dBFS")
    assert (rate, width, channels) == ("8000", "2", "1"), probe.stdout
    # The operator speaks for FAST.talk_ms (SIPp's g711a.pcap: 0.6 s of silence, then speech); the caller is
    # silent once bridged. An empty or silent recording fails here: at least a second of speech is heard.
    assert float(seconds) >= FAST.talk_ms / 1000 - 1, probe.stdout
    assert float(loud_s) >= 1.0, probe.stdout


def test_the_retention_timer_is_active(region: AppliedRegion) -> None:
    assert region.run(NODE, "systemctl is-active ekc-recordings-retention.timer").stdout.strip() == "active"


# --- an IVR change applied while a call is up -------------------------------------------------------


def add_ivr_option(text: str) -> str:
    """Key 7 of the main menu also leads to health."""
    marker = '      "2": {department: health}\n'
    assert marker in text
    return text.replace(marker, marker + '      "7": {department: health}\n')


def test_an_ivr_change_applied_during_a_call_keeps_the_call(region: AppliedRegion, tmp_path: Path) -> None:
    assert "'7' =>" not in asterisk(region, "dialplan show ekc-menu-main")
    plan = plan_for(region)
    timing = Timing(talk_ms=60000, rating_presses=50)
    caller = caller_number()
    done: dict[str, SippResult] = {}
    with operator_phone(plan, plan.operator, region.secrets.get("sip", plan.operator), tmp_path,
                        timing=timing) as phone:
        thread = threading.Thread(target=lambda: done.setdefault(
            "call", carrier_call(plan, tmp_path, caller=caller, rating="3", timing=timing)))
        thread.start()
        deadline = time.monotonic() + 40
        while not any(o.startswith("answered") for o in phone.outcomes()):
            assert time.monotonic() < deadline and thread.is_alive(), "the operator never answered"
            time.sleep(0.5)
        started = time.monotonic()
        region.rerender(add_ivr_option)
        record, output = region.cli_apply(tmp_path / "applies")
        took = time.monotonic() - started
        up = [line for line in asterisk(region, "core show channels concise").splitlines() if "2005" in line]
        thread.join(120)
        outcomes = phone.outcomes()
    (host,) = record["hosts"]
    print(f"\nIVR change rendered and applied in {took:.1f} s while the call was up ({record['path']}, "
          f"{record['seconds']}): files {[f['path'] for f in host['files']]}, triggers {host['triggers']}")
    assert (record["path"], record["result"], host["host"]) == ("fast path", "ok", NODE), output
    assert "/etc/asterisk/extensions.conf" in [f["path"] for f in host["files"]], host["files"]
    # The only Asterisk command is the dialplan reload; the spoken menu (which lists the keys) is synthesized
    # again by its own oneshot unit, which touches no call.
    assert host["triggers"] == ["asterisk -rx 'dialplan reload'", "systemctl restart ekc-prompts"], host
    assert took < timing.talk_ms / 1000, "the apply outlasted the operator's talk: the proof is void"
    assert up, "the operator's channel was gone right after the apply"
    assert done["call"].ok and "node hung up" in done["call"].outcomes, done["call"].describe()
    assert any(o.startswith("operator hung up") for o in outcomes), outcomes
    call = read_record(lambda c: region.run(NODE, c).stdout, caller)
    assert call.rating == "3" and "COMPLETEAGENT" in call.events(), call.queue_log
    assert "'7' =>" in asterisk(region, "dialplan show ekc-menu-main")


# --- working hours and incidents -------------------------------------------------------------------


def test_a_call_outside_hours_gets_the_after_hours_branch(region: AppliedRegion, tmp_path: Path) -> None:
    plan = plan_for(region, "housing")
    caller = caller_number()
    result = carrier_call(plan, tmp_path, caller=caller, timing=Timing(rating_wait_ms=1000, rating_presses=1,
                                                                        end_wait_ms=20000))
    record = read_record(lambda c: region.run(NODE, c).stdout, caller)
    assert result.ok and "node hung up" in result.outcomes, result.describe()
    assert record.event("AFTERHOURS") == ["message:ekc/closed"], record.queue_log
    assert "ENTERQUEUE" not in record.events(), record.queue_log


@pytest.mark.parametrize("incident", [True, False], ids=["on", "off"])
def test_the_incident_announcement_comes_before_the_queue_only_when_on(region: AppliedRegion, tmp_path: Path,
                                                                        incident: bool) -> None:
    if incident:
        region.run(NODE, "asterisk -rx 'database put ekc/incident health ekc/incident'")
    else:
        region.run(NODE, "asterisk -rx 'database del ekc/incident health'")
    try:
        result, _, record = full_call(region, tmp_path, plan_for(region))
    finally:
        region.run(NODE, "asterisk -rx 'database del ekc/incident health'")
    assert result.ok, result.describe()
    events = record.events()
    assert "ENTERQUEUE" in events, record.queue_log
    if incident:
        assert record.event("INCIDENT") == ["ekc/incident"], record.queue_log
        assert events.index("INCIDENT") < events.index("ENTERQUEUE"), record.queue_log
    else:
        assert "INCIDENT" not in events, record.queue_log


# --- toll fraud: nothing leaves through the trunk --------------------------------------------------


def test_no_call_leaves_through_the_trunk(region: AppliedRegion, tmp_path: Path) -> None:
    plan = plan_for(region)
    password = region.secrets.get("sip", plan.operator)
    good, bad = authentication(plan.operator, password), authentication(plan.operator, password + "x")

    def probe(name: str, scenario: str, source: str, port: int, number: str | None, row: tuple[str, ...],
              **params: str) -> SippResult:
        return run_sipp(SippRun(name, scenario, source, port, remote=plan.target, service=number, rows=(row,),
                                params=params, timeout_s=30), tmp_path)

    detector = SippRun("carrier-side", "carrier_uas.xml", plan.trunk_peer, 5060, calls=None, timeout_s=None)
    with serving(detector, tmp_path) as carrier_side:
        stranger = probe("stranger", "invite_probe.xml", region.lab.gateway, 5080, OUTSIDE_NUMBERS[0],
                         ("83832999999",), wait_ms="5000")
        wrong = probe("wrong-password", "register_refused.xml", plan.operator_address, 5082, None,
                      (plan.operator, bad))
        dials = [probe(f"dial-{i}", "operator_dial.xml", plan.operator_address, 5084 + 2 * i, number,
                       (plan.operator, good), wait_ms="8000") for i, number in enumerate(OUTSIDE_NUMBERS)]
        relays = [probe(f"relay-{i}", "invite_probe.xml", plan.trunk_peer, 5092 + 2 * i, number,
                        ("83832999999",), wait_ms="8000") for i, number in enumerate(OUTSIDE_NUMBERS)]
        time.sleep(2)
        seen = [o for o in carrier_side.outcomes() if o.startswith("invite")]
        # The control: an INVITE sent straight to the carrier's side is seen, so the detector detects.
        control = run_sipp(SippRun("control", "invite_probe.xml", region.lab.gateway, 5098,
                                   remote=f"{plan.trunk_peer}:5060", service="control", rows=(("1",),),
                                   params={"wait_ms": "3000"}), tmp_path)
        time.sleep(1)
        detected = [o for o in carrier_side.outcomes() if o.startswith("invite")]
    assert control.outcomes == ("refused 403",) and len(detected) == len(seen) + 1, \
        f"{control.describe()}\ndetected: {detected}"
    assert stranger.outcomes and not any(o.startswith("answered") for o in stranger.outcomes), stranger.describe()
    assert wrong.ok and any(o in ("refused 401", "refused 403") for o in wrong.outcomes), wrong.describe()
    for run in (*dials, *relays):
        assert run.outcomes, run.describe()
    assert seen == [], f"calls left through the trunk: {seen}"


# --- a change that restarts Asterisk goes to the engine --------------------------------------------


def test_a_change_that_restarts_asterisk_is_not_taken_by_the_fast_path(region: AppliedRegion,
                                                                       tmp_path: Path) -> None:
    """Last in the module: it restarts Asterisk."""
    region.run(NODE, "echo '; a hand edit' >> /etc/asterisk/modules.conf")
    before = asterisk_uptime(region)
    record, output = region.cli_apply(tmp_path / "applies")
    (host,) = record["hosts"]
    wanted = next(f for f in region.manifest.hosts[0].files if f.path == "/etc/asterisk/modules.conf")
    assert (record["path"], record["result"]) == ("pyinfra", "ok"), output
    assert record["fast_path_refused"] == [
        "pbx1: /etc/asterisk/modules.conf: systemctl restart asterisk drops every call on the node"], record
    (file,) = host["files"]
    assert (file["path"], file["change"], file["new_sha256"]) == (wanted.path, "written", wanted.sha256), file
    assert file["old_sha256"] not in (None, wanted.sha256), file  # the hand-edited content, as the plan read it
    assert host["triggers"] == ["systemctl restart asterisk"], host
    assert region.run(NODE, f"sha256sum {wanted.path}").stdout.split()[0] == wanted.sha256
    assert asterisk_uptime(region) < before, "Asterisk was not restarted"


def asterisk_uptime(region: AppliedRegion) -> int:
    """Seconds since Asterisk started (waiting up to 30 s for it to answer after a restart)."""
    deadline = time.monotonic() + 30
    while True:
        found = re.search(r"System uptime: (\d+)", asterisk(region, "core show uptime seconds"))
        if found or time.monotonic() > deadline:
            assert found, "Asterisk does not answer"
            return int(found.group(1))
        time.sleep(0.5)
