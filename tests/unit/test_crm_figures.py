"""The appeals' figures for Prometheus: open, near-due and overdue tasks per department, in the text format."""

from __future__ import annotations

from datetime import date, timedelta

from hypothesis import given
from hypothesis import strategies as st

from ekc.crm_app.ekc_appeals.figures import STATES, OpenTask, count_tasks, exposition

TODAY = date(2027, 3, 10)


def test_tasks_are_counted_by_their_deadline() -> None:
    tasks = [OpenTask("social", TODAY - timedelta(days=1), 3),  # past it
             OpenTask("social", TODAY, 3),  # due today: near, not overdue
             OpenTask("social", TODAY + timedelta(days=3), 3),  # near
             OpenTask("social", TODAY + timedelta(days=4), 3),  # open only
             OpenTask("health", TODAY + timedelta(days=4), 5)]  # that department warns 5 days ahead
    counts = count_tasks(["social", "health", "housing"], tasks, TODAY)
    assert counts == {"social": {"open": 4, "near_due": 2, "overdue": 1},
                      "health": {"open": 1, "near_due": 1, "overdue": 0},
                      "housing": {"open": 0, "near_due": 0, "overdue": 0}}


def test_exposition_lists_every_department_with_zeros() -> None:
    text = exposition(count_tasks(["social"], [], TODAY), unsent_mails=2)
    assert 'ekc_appeal_tasks{department="social",state="overdue"} 0\n' in text
    assert "ekc_appeal_mails_unsent 2\n" in text
    assert text.count("# TYPE ") == 2 and text.endswith("\n")


def test_labels_are_escaped() -> None:
    text = exposition({'a"b\\c': dict.fromkeys(STATES, 1)}, 0)
    assert 'department="a\\"b\\\\c"' in text


@given(st.lists(st.tuples(st.sampled_from(["a", "b"]), st.integers(-40, 40), st.integers(0, 10)), max_size=60))
def test_each_task_is_open_and_at_most_one_of_near_or_overdue(rows: list[tuple[str, int, int]]) -> None:
    tasks = [OpenTask(dep, TODAY + timedelta(days=offset), near) for dep, offset, near in rows]
    counts = count_tasks(["a", "b"], tasks, TODAY)
    assert sum(c["open"] for c in counts.values()) == len(tasks)
    assert sum(c["overdue"] for c in counts.values()) == sum(1 for _, offset, _ in rows if offset < 0)
    for c in counts.values():
        assert c["near_due"] + c["overdue"] <= c["open"]
