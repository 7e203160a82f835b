"""Deadlines of an appeal's task to a department, on the department's working calendar: pure logic, no Django.

59-FZ: an appeal is registered within 3 days of its receipt and answered within 30 days of its registration.
ekc counts registration in working days (the day of receipt not counted: received on a Friday, with 3 working
days, it is due on Wednesday) and the answer in calendar days, moved to the next working day when the last day
is a day off (Civil Code art. 193). Working days are the department's weekdays less the region's holidays.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import date, timedelta

MAX_SEARCH_DAYS = 3660  # a calendar with no working day in ten years is a broken calendar, not a long wait


class CalendarError(ValueError):
    """The calendar has no working day to count on."""


@dataclass(frozen=True)
class Calendar:
    """A department's working days: weekdays (0 = Monday) less holidays."""

    weekdays: frozenset[int]
    holidays: frozenset[date] = frozenset()

    @classmethod
    def of(cls, weekdays: Collection[int], holidays: Collection[date] = ()) -> Calendar:
        if not weekdays or not set(weekdays) <= set(range(7)):
            raise CalendarError(f"working weekdays must be a non-empty subset of 0-6, got {sorted(weekdays)}")
        return cls(frozenset(weekdays), frozenset(holidays))

    def works(self, day: date) -> bool:
        return day.weekday() in self.weekdays and day not in self.holidays

    def next_working(self, day: date) -> date:
        """``day`` itself when it is a working day, else the next one."""
        for offset in range(MAX_SEARCH_DAYS):
            candidate = day + timedelta(days=offset)
            if self.works(candidate):
                return candidate
        raise CalendarError(f"no working day within {MAX_SEARCH_DAYS} days after {day.isoformat()}")

    def add_working_days(self, day: date, count: int) -> date:
        """The ``count``-th working day after ``day`` (``day`` itself not counted)."""
        current = day
        for _ in range(count):
            current = self.next_working(current + timedelta(days=1))
        return current


def registration_due(received: date, working_days: int, calendar: Calendar) -> date:
    """The last day to register an appeal received on ``received``."""
    return calendar.add_working_days(received, working_days)


def answer_due(registered: date, days: int, calendar: Calendar) -> date:
    """The last day to answer an appeal registered on ``registered``: calendar days, a day off moves it on."""
    return calendar.next_working(registered + timedelta(days=days))


def near_due(today: date, due: date, near_days: int) -> bool:
    """Whether a task due on ``due`` is within ``near_days`` of it (and not yet overdue)."""
    return today <= due <= today + timedelta(days=near_days)


def overdue(today: date, due: date) -> bool:
    return today > due


def urgency(today: date, due: date, near_days: int) -> str:
    """'overdue', 'near_due' or '' for a task due on ``due``: what the lists mark and the figures count."""
    if overdue(today, due):
        return "overdue"
    return "near_due" if near_due(today, due, near_days) else ""
