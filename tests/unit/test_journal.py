"""The call-record journal's replay script (rendered for inventories/ha), its pure parts: which lines are due,
how far it remembers, how a CDR line and a queue_log line become rows. The database side is the lab's."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.render import placeholder_render

SCRIPT = "/usr/local/lib/ekc/ekc-journal"
LINE = ('"1796595100.5","1796595100.6","1796595107.8","""Ivanov"" <+79130000001>","+79130000001","s",'
        '"ekc-dept-health","PJSIP/trunk-carrier-00000000","PJSIP/2005-00000001","Queue","health,c,,,600","7","7",'
        '"ANSWERED","DOCUMENTATION","health","","1796595100.0","1796595100.0","rating=5","3","health"')


@pytest.fixture()
def journal(tmp_path: Path) -> ModuleType:
    """The rendered script as a module, its state directory and files moved under ``tmp_path``."""
    path = tmp_path / "ekc_journal.py"
    path.write_bytes(placeholder_render("ha").contents[("pbx1", SCRIPT)])
    spec = importlib.util.spec_from_file_location("ekc_journal", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.pop("ekc_journal", None)
    spec.loader.exec_module(module)
    module.STATE = tmp_path / "state"
    module.STATE.mkdir()
    return module


def test_only_complete_lines_old_enough_are_due(journal: ModuleType, tmp_path: Path) -> None:
    log = tmp_path / "queue_log"
    log.write_text("1000|a|health|NONE|ENTERQUEUE||+7913|1\n1050|a|health|2005|CONNECT|5\n1100|b|hea", "utf-8")
    lines, offset = journal.pending(log, journal.queue_time, now=1100, min_age_s=journal.CDR_MIN_AGE_S)
    assert lines == ["1000|a|health|NONE|ENTERQUEUE||+7913|1"]  # 1050 is younger than 60 s; the last is cut
    assert offset == len("1000|a|health|NONE|ENTERQUEUE||+7913|1\n")
    everything, _ = journal.pending(log, journal.queue_time, now=1100, min_age_s=0)
    assert len(everything) == 2  # the unfinished line waits for its newline


def test_queue_log_is_shipped_at_once_and_cdrs_wait_for_cdr_pgsql(journal: ModuleType, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """With a cluster the journal is queue_log's only way into the database: its lines are due at once; a
    CDR line waits a minute for cdr_pgsql's own write."""
    monkeypatch.setattr(journal, "QUEUE_LOG", tmp_path / "queue_log")
    monkeypatch.setattr(journal, "JOURNAL", tmp_path / "journal.csv")
    now = journal.time.time()
    journal.QUEUE_LOG.write_text(f"{int(now)}|a|health|NONE|ENTERQUEUE||+7913|1\n", "utf-8")
    journal.JOURNAL.write_text(LINE.replace("1796595107.8", f"{now:.1f}") + "\n", "utf-8")
    sent: list[str] = []

    class Done:
        returncode, stdout, stderr = 0, "1\n", ""

    def run(*args: object, **kwargs: object) -> Done:
        sent.append(str(kwargs["input"]))
        return Done()

    monkeypatch.setattr(journal.subprocess, "run", run)
    assert journal.main() == 0
    assert len(sent) == 1 and "journal_queue_log" in sent[0] and "ENTERQUEUE" in sent[0]


def test_the_offset_is_kept_only_after_the_database_confirmed(journal: ModuleType, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "queue_log"
    log.write_text("1000|a|health|NONE|ENTERQUEUE||+7913|1\n", "utf-8")

    class Refused:
        returncode, stdout, stderr = 2, "", "could not connect to server"

    monkeypatch.setattr(journal.subprocess, "run", lambda *a, **k: Refused())
    with pytest.raises(RuntimeError, match="unreachable"):
        journal.replay(log, journal.queue_time, journal.queue_rows, "journal_queue_log", now=5000, min_age_s=60)
    assert not (journal.STATE / "queue_log.offset").exists()

    class Done:
        returncode, stdout, stderr = 0, "1\n", ""

    monkeypatch.setattr(journal.subprocess, "run", lambda *a, **k: Done())
    replayed = journal.replay(log, journal.queue_time, journal.queue_rows, "journal_queue_log", now=5000, min_age_s=60)
    assert replayed == 1
    assert (journal.STATE / "queue_log.offset").read_text() == str(log.stat().st_size)
    # A rotated (shorter) file is read from its start again.
    log.write_text("2000|c|health|NONE|ENTERQUEUE||+7913|1\n", "utf-8")
    (journal.STATE / "queue_log.offset").write_text("999")
    due = journal.pending(log, journal.queue_time, now=5000, min_age_s=60)[0]
    assert due == ["2000|c|health|NONE|ENTERQUEUE||+7913|1"]


def test_a_cdr_line_becomes_a_row_with_every_column(journal: ModuleType) -> None:
    [row] = journal.cdr_rows([LINE])
    assert row["clid"] == '"Ivanov" <+79130000001>' and row["uniqueid"] == "1796595100.0"
    assert (row["start"], row["duration"], row["sequence"], row["department"]) == (1796595100.5, 7, 3, "health")
    assert list(row) == journal.COLUMNS
    assert journal.cdr_rows(['"1","2"']) == []  # a line of another shape is not a row


def test_a_queue_log_line_keeps_data_beyond_five_fields_in_data5(journal: ModuleType) -> None:
    [row] = journal.queue_rows(["1000|a|health|2005|X|1|2|3|4|5|6"])
    assert row == {"time": 1000, "callid": "a", "queuename": "health", "agent": "2005", "event": "X",
                   "data1": "1", "data2": "2", "data3": "3", "data4": "4", "data5": "5|6"}
    assert journal.literal("it's") == "'it''s'"
