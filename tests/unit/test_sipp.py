"""SIPp runs as data: scenario parameters, injection files, command lines, statistics and outcome lines."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from ekc.lab.call import CallRecord, call_record, caller_number, carrier_params, parse_cdr
from ekc.lab.call import Timing as CallTiming
from ekc.lab.sipp import (
    SCENARIO_DIR,
    SippError,
    SippRun,
    authentication,
    dtmf_pcap,
    dtmf_press,
    injection_csv,
    parse_outcomes,
    parse_stats,
    press_steps,
    render_scenario,
    sipp_argv,
)

SCENARIOS = sorted(p.name for p in SCENARIO_DIR.glob("*.xml"))


def test_render_fills_every_parameter() -> None:
    assert render_scenario("<pause milliseconds=\"{{wait}}\"/>", {"wait": "1500"}) == '<pause milliseconds="1500"/>'


def test_render_refuses_missing_and_unknown_parameters() -> None:
    with pytest.raises(SippError, match=r"missing \['wait'\], unknown \['other'\]"):
        render_scenario("{{wait}}", {"other": "1"})


def test_render_leaves_sipp_keywords_alone() -> None:
    assert render_scenario("[$presses] [field0] {{x}}", {"x": "1"}) == "[$presses] [field0] 1"


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_scenario_is_well_formed_xml_once_rendered(name: str) -> None:
    text = (SCENARIO_DIR / name).read_text(encoding="utf-8")
    params = dict.fromkeys(re.findall(r"\{\{([a-z_]+)\}\}", text), "1000")
    root = ET.fromstring(render_scenario(text, params).split("?>", 1)[1].split(">", 1)[1])
    assert root.tag == "scenario"


def test_carrier_call_parameters_fill_the_carrier_scenario(tmp_path: Path) -> None:
    text = (SCENARIO_DIR / "carrier_call.xml").read_text(encoding="utf-8")
    rendered = render_scenario(text, carrier_params("1", "5", CallTiming(rating_presses=3), tmp_path / "call"))
    assert f'play_pcap_audio="{tmp_path}/call-0.pcap"' in rendered
    assert rendered.count('<log message="rating pressed') == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["call-0.pcap", "call-1.pcap", "call-2.pcap", "call-3.pcap"]


def rtp_headers(pcap: bytes) -> list[tuple[int, int, bytes]]:
    """(sequence number, timestamp, UDP checksum) of every packet of an Ethernet/IPv4/UDP/RTP pcap."""
    out, offset = [], 24
    while offset < len(pcap):
        size = int.from_bytes(pcap[offset + 8:offset + 12], "little")
        packet = pcap[offset + 16:offset + 16 + size]
        out.append((int.from_bytes(packet[44:46], "big"), int.from_bytes(packet[46:50], "big"), packet[40:42]))
        offset += 16 + size
    return out


def test_each_key_press_is_a_new_event() -> None:
    first, second = rtp_headers(dtmf_press("5", 0)), rtp_headers(dtmf_press("5", 1))
    assert len(first) == len(second) == 10
    assert len({stamp for _, stamp, _ in first}) == 1
    assert second[0][1] > first[0][1] and second[0][0] > first[-1][0]
    assert {checksum for *_, checksum in first} == {b"\0\0"}


def test_press_steps_wait_for_the_nodes_bye_between_presses() -> None:
    steps = press_steps(["/a.pcap", "/b.pcap"], 1500)
    assert steps.count('<recv request="BYE" timeout="1500"') == 2 and 'play_pcap_audio="/b.pcap"' in steps


def test_authentication_keyword() -> None:
    assert authentication("2001", "pw") == "[authentication username=2001 password=pw]"
    with pytest.raises(SippError):
        authentication("2001", "p w")


def test_injection_file_is_sequential_and_refuses_separators() -> None:
    assert injection_csv([("2001", "secret")]) == "SEQUENTIAL\n2001;secret;\n"
    with pytest.raises(SippError):
        injection_csv([("20;01",)])


@pytest.mark.parametrize(("digit", "name"), [("1", "dtmf_2833_1.pcap"), ("*", "dtmf_2833_star.pcap"),
                                              ("#", "dtmf_2833_pound.pcap")])
def test_dtmf_pcaps(digit: str, name: str) -> None:
    assert dtmf_pcap(digit).endswith("/" + name)


def test_dtmf_refuses_a_non_digit() -> None:
    with pytest.raises(SippError):
        dtmf_pcap("12")


def test_argv_binds_the_source_and_keeps_credentials_off_the_command_line(tmp_path: Path) -> None:
    run = SippRun("phone", "register.xml", "10.54.10.1", 5070, remote="10.54.0.11:5060",
                  rows=(("2001", "s3cret"),), params={"expires": "60"}, media_port=16000)
    argv = sipp_argv(run, tmp_path, sipp="sipp")
    assert argv[:2] == ["sipp", "10.54.0.11:5060"]
    assert argv[argv.index("-i") + 1] == "10.54.10.1" and argv[argv.index("-p") + 1] == "5070"
    assert argv[argv.index("-inf") + 1] == str(tmp_path / "phone.csv")
    assert "s3cret" not in " ".join(argv)
    assert argv[argv.index("-m"):argv.index("-m") + 2] == ["-m", "1"]


def test_a_runs_files_keep_a_dot_in_its_name(tmp_path: Path) -> None:
    argv = sipp_argv(SippRun("load-1.5-0", "carrier_call.xml", "10.54.0.5", 5060, rows=(("89130000000",),)),
                     tmp_path)
    for option, suffix in (("-sf", ".xml"), ("-stf", ".stat.csv"), ("-inf", ".csv"), ("-log_file", ".log")):
        assert argv[argv.index(option) + 1] == str(tmp_path / f"load-1.5-0{suffix}"), option


def test_server_argv_has_no_remote_and_no_call_limit(tmp_path: Path) -> None:
    argv = sipp_argv(SippRun("uas", "carrier_uas.xml", "10.54.0.5", 5060, calls=None, timeout_s=None), tmp_path)
    assert argv[1] == "-sf" and "-m" not in argv and "-timeout" not in argv
    assert "-default_behaviors" not in argv  # a test's call aborts on what it does not expect


def test_a_tolerant_run_goes_on_past_an_unexpected_message(tmp_path: Path) -> None:
    argv = sipp_argv(SippRun("load", "carrier_call.xml", "10.54.0.5", 5060, tolerant=True), tmp_path)
    assert argv[argv.index("-default_behaviors") + 1] == "all,-abortunexp"


STAT = ("StartTime;LastResetTime;CurrentTime;ElapsedTime(P);ElapsedTime(C);TargetRate;CallRate(P);CallRate(C);"
        "IncomingCall(P);IncomingCall(C);OutgoingCall(P);OutgoingCall(C);TotalCallCreated;CurrentCall;"
        "SuccessfulCall(P);SuccessfulCall(C);FailedCall(P);FailedCall(C);Retransmissions(P);Retransmissions(C)\n"
        "x;x;x;00:00:01:000;00:00:01:000;10;0;0;0;0;0;0;0;0;0;0;0;0;0;0\n"
        "x;x;x;00:00:01:000;00:01:02:500;10;1;1;0;0;1;7;7;2;1;4;0;1;0;3\n")


def test_stats_are_the_last_cumulative_line() -> None:
    stats = parse_stats(STAT)
    assert (stats.created, stats.successful, stats.failed, stats.current, stats.retransmissions) == (7, 4, 1, 2, 3)
    assert stats.elapsed_s == pytest.approx(62.5)


def test_stats_of_an_empty_file_are_zero() -> None:
    assert parse_stats("").created == 0


def test_outcomes_drop_sipps_timestamps() -> None:
    log = "2026-11-22\t22:08:35.231387\t1795385315.231387: answered 1-2@h\nrating pressed 2\n\n"
    assert parse_outcomes(log) == ("answered 1-2@h", "rating pressed 2")


CDR = ('"social","+79131234567","+73832000122","ekc-from-trunk","""x"" <+79131234567>","PJSIP/trunk-carrier-1",'
       '"PJSIP/2001-2","Queue","social","2026-11-22 10:00:00","2026-11-22 10:00:01","2026-11-22 10:00:20",'
       '"20","19","ANSWERED","DOCUMENTATION","1795000000.12","rating=5"\n'
       '"","+79130000000","122","ekc-from-trunk","","PJSIP/x","","Hangup","","","","","1","0","NO ANSWER",'
       '"DOCUMENTATION","1795000000.13",""\n')
QUEUE_LOG = ("1795000001|1795000000.12|social|NONE|ENTERQUEUE||+79131234567|1\n"
             "1795000002|1795000000.12|social|PJSIP/2001|CONNECT|1|1795000003.14|1\n"
             "1795000002|1795000000.99|social|PJSIP/2001|CONNECT|1|1795000003.15|1\n"
             "1795000020|1795000000.12|social|NONE|RATING|5\n")


def test_cdr_rows_of_the_caller() -> None:
    rows = parse_cdr(CDR, "+79131234567")
    assert [(r["uniqueid"], r["userfield"], r["disposition"]) for r in rows] == [("1795000000.12", "rating=5",
                                                                                 "ANSWERED")]


def test_call_record_follows_the_callers_unique_id() -> None:
    record = call_record(QUEUE_LOG, CDR, "+79131234567")
    assert record.events() == ["ENTERQUEUE", "CONNECT", "RATING"]
    assert record.rating == "5"


def test_call_record_of_an_unknown_caller_is_empty() -> None:
    assert call_record(QUEUE_LOG, CDR, "+70000000000") == CallRecord("+70000000000", None, (), ())


def test_caller_numbers_normalise_to_e164() -> None:
    number = caller_number(1_795_000_000_123_000_000)
    assert re.fullmatch(r"8913\d{7}", number)


def test_the_default_test_call_goes_to_a_department_open_around_the_clock() -> None:
    from ekc.lab.call import call_plan  # noqa: PLC0415
    from ekc.lab.net import CallNetwork  # noqa: PLC0415
    from ekc.spec.load import load_spec  # noqa: PLC0415

    region = load_spec("inventories/example").region
    calls = CallNetwork(extra_addresses=("10.54.10.1/24", "10.54.0.5/24"), routes=("10.54.10.0/24",))
    plan = call_plan(region, calls)
    assert (plan.department, plan.digit, plan.operator) == ("health", "2", "2005")
    assert (plan.trunk_peer, plan.operator_address, plan.target) == ("10.54.0.5", "10.54.10.1", "10.54.0.11:5060")
    assert call_plan(region, calls, department="social").digit == "1"


def test_operators_of_a_department_include_those_with_a_penalty() -> None:
    from ekc.lab.call import operators_of  # noqa: PLC0415
    from ekc.spec.load import load_spec  # noqa: PLC0415

    region = load_spec("inventories/example").region
    assert operators_of(region, "health") == ["2005", "2006", "2007", "2008", "2009", "2020"]
    assert "2019" in operators_of(region, "transport")


def test_a_call_was_answered_by_the_phone_whose_invite_came_from_its_caller() -> None:
    from ekc.lab.call import answered_by  # noqa: PLC0415

    first = "invite 1-7@h from=\"+79131111111\" <sip:+79131111111@10.54.0.11>;tag=a call-info=<https://crm/x>"
    second = "invite 2-7@h from=\"+79132222222\" <sip:+79132222222@10.54.0.11>;tag=b call-info=<https://crm/y>"
    outcomes = {"2005": (first, "answered 1-7@h", "operator hung up 1-7@h"),
                "2006": ("options", second, "answered 2-7@h", "caller hung up 2-7@h")}
    assert answered_by(outcomes, "89132222222") == ("2006", (second, "answered 2-7@h", "caller hung up 2-7@h"))
    assert answered_by(outcomes, "89131111111")[0] == "2005"
    assert answered_by(outcomes, "89133333333") == (None, ())
