"""The appeals' figures for monitoring, in Prometheus' text format: pure logic, no Django.

Per department: its open tasks (not answered), those near their deadline and those past it (the deadline that
matters is the registration's until the task is registered, then the answer's). Every active department is
listed, with zeros, so an alert on it resolves as soon as the last overdue task is dealt with.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

from .deadlines import urgency

STATES = ("open", "near_due", "overdue")


@dataclass(frozen=True)
class OpenTask:
    """What the figures need of a task not yet answered."""

    department: str
    due: date
    near_due_days: int


def count_tasks(departments: Iterable[str], tasks: Iterable[OpenTask], today: date) -> dict[str, dict[str, int]]:
    """Open, near-due and overdue tasks per department (one pass over the open tasks)."""
    counts = {code: dict.fromkeys(STATES, 0) for code in departments}
    for task in tasks:
        row = counts.setdefault(task.department, dict.fromkeys(STATES, 0))
        row["open"] += 1
        mark = urgency(today, task.due, task.near_due_days)
        if mark:
            row[mark] += 1
    return counts


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def exposition(counts: dict[str, dict[str, int]], unsent_mails: int) -> str:
    """The text Prometheus scrapes."""
    lines = ["# HELP ekc_appeal_tasks Tasks to departments not yet answered: open, near their deadline, past it.",
             "# TYPE ekc_appeal_tasks gauge"]
    for code in sorted(counts):
        lines += [f'ekc_appeal_tasks{{department="{_label(code)}",state="{state}"}} {counts[code][state]}'
                  for state in STATES]
    lines += ["# HELP ekc_appeal_mails_unsent Letters to citizens the mail relay has not taken yet.",
              "# TYPE ekc_appeal_mails_unsent gauge", f"ekc_appeal_mails_unsent {unsent_mails}"]
    return "\n".join(lines) + "\n"
