"""The call card's fields folded from a call's queue_log rows (the appeals app's pure logic)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ekc.crm_app.ekc_appeals.calls import ABANDONED, AFTER_HOURS, ANSWERED, MISSED, Event, card_number, summarise

T0 = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)
DEPARTMENTS = {"health": None, "social": None}
CALL = "pbx2-1796673579.7"


def rows(*spec: tuple[int, str, str, str, str]) -> list[Event]:
    """(seconds after T0, event, agent, data1, data2) → Event rows of one call in the health queue."""
    return [Event(i, T0 + timedelta(seconds=s), CALL, "health", agent, event, d1, d2)
            for i, (s, event, agent, d1, d2) in enumerate(spec, start=1)]


def test_an_answered_call_has_its_operator_wait_and_talk() -> None:
    s = summarise(CALL, rows((0, "ENTERQUEUE", "NONE", "", "+79130000001"), (7, "CONNECT", "Смирнова Д. Е.", "7", "x"),
                             (67, "COMPLETEAGENT", "Смирнова Д. Е.", "7", "60"), (70, "RATING", "NONE", "5", "")),
                  DEPARTMENTS)
    assert (s.status, s.department, s.caller, s.operator) == (ANSWERED, "health", "+79130000001", "Смирнова Д. Е.")
    assert (s.wait_s, s.duration_s, s.rating, s.node) == (7, 60, 5, "pbx2")
    assert s.answered_at == T0 + timedelta(seconds=7) and s.ended_at == T0 + timedelta(seconds=67)


def test_a_call_still_waiting_or_talking_without_end() -> None:
    waiting = summarise(CALL, rows((0, "ENTERQUEUE", "NONE", "", "+79130000001")), DEPARTMENTS)
    assert waiting.status is None and waiting.caller == "+79130000001"
    talking = summarise(CALL, rows((0, "ENTERQUEUE", "NONE", "", "+7913"), (3, "CONNECT", "A", "3", "")), DEPARTMENTS)
    assert talking.status == ANSWERED and talking.ended_at is None and talking.duration_s is None


def test_unanswered_endings() -> None:
    for event, status in (("ABANDON", ABANDONED), ("EXITWITHTIMEOUT", MISSED), ("EXITEMPTY", MISSED),
                          ("EXITWITHKEY", MISSED)):
        s = summarise(CALL, rows((0, "ENTERQUEUE", "NONE", "", "+7913"), (40, event, "NONE", "1", "1")), DEPARTMENTS)
        assert (s.status, s.ended_at, s.operator) == (status, T0 + timedelta(seconds=40), ""), event
    closed = summarise(CALL, rows((0, "AFTERHOURS", "NONE", "voicemail", "")), DEPARTMENTS)
    assert closed.status == AFTER_HOURS


def test_a_missed_call_keeps_its_callback() -> None:
    s = summarise(CALL, rows((0, "ENTERQUEUE", "NONE", "", "+7913"), (600, "EXITWITHTIMEOUT", "NONE", "1", "1"),
                             (606, "CALLBACK", "NONE", "+79131112233", ""),
                             (900, "CALLBACKDIAL", "NONE", "+79131112233", "")), DEPARTMENTS)
    assert (s.status, s.callback_number) == (MISSED, "+79131112233")
    assert s.callback_dialled_at == T0 + timedelta(seconds=900)


def test_an_abandon_after_answer_does_not_unanswer_and_other_queues_are_ignored() -> None:
    events = [*rows((0, "ENTERQUEUE", "NONE", "", "+7913"), (2, "CONNECT", "A", "2", ""),
                    (30, "COMPLETECALLER", "A", "2", "28"), (31, "ABANDON", "NONE", "1", "1")),
              Event(99, T0, CALL, "NONE", "NONE", "CONFIGRELOAD")]
    s = summarise(CALL, events, DEPARTMENTS)
    assert (s.status, s.duration_s) == (ANSWERED, 28)
    assert summarise(CALL, [Event(1, T0, CALL, "sales", "A", "CONNECT", "1")], DEPARTMENTS).status is None


def test_card_numbers_read_on_the_phone() -> None:
    assert card_number("54", 2027, 123) == "54-2027-000123"
    assert card_number("154", 2027, 1234567) == "154-2027-1234567"
