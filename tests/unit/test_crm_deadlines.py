"""Appeal task deadlines on a department's working calendar (59-FZ: register in 3 days, answer in 30)."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ekc.crm_app.ekc_appeals.deadlines import (
    Calendar,
    CalendarError,
    answer_due,
    near_due,
    overdue,
    registration_due,
)

WEEK = Calendar.of(range(5))
# The 2027 New Year holidays of the example region: 1-8 January.
NEW_YEAR = Calendar.of(range(5), [date(2027, 1, d) for d in range(1, 9)])


def test_registration_counts_working_days_after_receipt() -> None:
    assert registration_due(date(2027, 3, 1), 3, WEEK) == date(2027, 3, 4)  # Monday → Thursday
    assert registration_due(date(2027, 3, 5), 3, WEEK) == date(2027, 3, 10)  # Friday → Wednesday
    assert registration_due(date(2027, 3, 6), 3, WEEK) == date(2027, 3, 10)  # Saturday → Wednesday


def test_registration_across_a_holiday() -> None:
    # received on 30 December 2026 (Wednesday): 31 December, then the holidays to 8 January, then 11 and 12
    assert registration_due(date(2026, 12, 30), 3, NEW_YEAR) == date(2027, 1, 12)


def test_answer_in_calendar_days_moved_off_a_day_off() -> None:
    assert answer_due(date(2027, 3, 1), 30, WEEK) == date(2027, 3, 31)  # a Wednesday: kept
    assert answer_due(date(2027, 3, 4), 30, WEEK) == date(2027, 4, 5)  # Saturday 3 April → Monday
    assert answer_due(date(2026, 12, 2), 30, NEW_YEAR) == date(2027, 1, 11)  # 1 January, a holiday → 11th


def test_a_department_working_on_saturdays() -> None:
    six_days = Calendar.of(range(6))
    assert registration_due(date(2027, 3, 5), 3, six_days) == date(2027, 3, 9)  # Fri → Sat, Mon, Tue


def test_near_due_and_overdue() -> None:
    due = date(2027, 3, 31)
    assert near_due(date(2027, 3, 28), due, 3) and not near_due(date(2027, 3, 27), due, 3)
    assert not overdue(due, due) and overdue(date(2027, 4, 1), due) and not near_due(date(2027, 4, 1), due, 3)


def test_a_calendar_without_working_days_is_refused() -> None:
    with pytest.raises(CalendarError):
        Calendar.of([])
    with pytest.raises(CalendarError):
        Calendar.of([7])


@given(st.dates(min_value=date(2000, 1, 1), max_value=date(2090, 1, 1)), st.integers(1, 30),
       st.sets(st.integers(0, 6), min_size=1))
def test_the_registration_day_is_a_working_day_after_receipt(received: date, days: int, weekdays: set[int]) -> None:
    calendar = Calendar.of(weekdays)
    due = registration_due(received, days, calendar)
    assert calendar.works(due) and due > received
    working = sum(calendar.works(date.fromordinal(n)) for n in range(received.toordinal() + 1, due.toordinal() + 1))
    assert working == days
