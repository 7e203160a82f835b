"""The fast path: which live plans it takes and which go to an engine, what it does on a host (the script, run
here in a POSIX shell on a scratch directory), and the apply record. Data in, decisions and commands out: the
observed host is the example region's golden render with one thing changed, the plan is the ordinary diff."""

from __future__ import annotations

import datetime as dt
import grp
import hashlib
import json
import os
import pwd
import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from ekc.engines.common import ApplyResult, TriggerRun
from ekc.engines.fastpath import (
    DELIMITER,
    FAST_PATH,
    FileWrite,
    HostPush,
    decide,
    push_script,
    read_answer,
)
from ekc.engines.live import NOT_A_REGULAR_FILE
from ekc.engines.record import apply_record, write_record
from ekc.render.manifest import HostManifest, ManagedFile, load_manifest
from ekc.render.plan import Plan, diff_builds

REPO = Path(__file__).resolve().parents[2]
WANTED = load_manifest(REPO / "tests" / "golden" / "example")
CONTENTS = {(h.name, f.path): f"content of {f.path}\n".encode() for h in WANTED.hosts for f in h.files}
DIALPLAN = "asterisk -rx 'dialplan reload'"
QUEUES = "asterisk -rx 'module reload app_queue.so'"
PROMPTS = "systemctl restart ekc-prompts"
HostEdit = Callable[[HostManifest], HostManifest]


def edited_file(path: str, **changes: str) -> HostEdit:
    """The host as observed: ``path`` with other attributes than the render's (default: other content)."""
    changes = changes or {"sha256": "0" * 64}
    return lambda host: replace(host, files=tuple(replace(f, **changes) if f.path == path else f for f in host.files))


def missing_file(path: str) -> HostEdit:
    return lambda host: replace(host, files=tuple(f for f in host.files if f.path != path))


def missing_package(name: str) -> HostEdit:
    return lambda host: replace(host, packages=tuple(p for p in host.packages if p != name))


def missing_service(name: str) -> HostEdit:
    return lambda host: replace(host, services=tuple(s for s in host.services if s.name != name))


def stopped_service(name: str) -> HostEdit:
    return lambda host: replace(host, services=tuple(replace(s, running=False) if s.name == name else s
                                                     for s in host.services))


def present_absent(path: str) -> HostEdit:
    return lambda host: replace(host, absent=tuple(p for p in host.absent if p != path))


def both(*edits: HostEdit) -> HostEdit:
    def edit(host: HostManifest) -> HostManifest:
        for one in edits:
            host = one(host)
        return host
    return edit


def live_plan(edits: dict[str, HostEdit]) -> Plan:
    """The live plan of the golden example render against hosts that equal it except for ``edits``."""
    observed = replace(WANTED, hosts=tuple(edits.get(h.name, lambda x: x)(h) for h in WANTED.hosts))
    return diff_builds(observed, WANTED)


# --- which plans take the fast path ---------------------------------------------------------------------------

TAKEN: dict[str, tuple[dict[str, HostEdit], dict[str, tuple[str, ...]]]] = {
    # case: (what differs on the hosts, the triggers the fast path runs per host)
    "an IVR option (the dialplan and the spoken menu)": (
        {"pbx1": both(edited_file("/etc/asterisk/extensions.conf"),
                      edited_file("/usr/local/lib/ekc/ekc-prompts.json"))},
        {"pbx1": (DIALPLAN, PROMPTS)}),
    "a queue setting": ({"pbx1": edited_file("/etc/asterisk/queues.conf")}, {"pbx1": (QUEUES,)}),
    "a file without a trigger (the wallboard)": (
        {"mon1": edited_file("/var/www/ekc-wallboard/index.html")}, {"mon1": ()}),
    "a mode fixed": ({"pbx1": edited_file("/etc/asterisk/queues.conf", mode="0666")}, {"pbx1": (QUEUES,)}),
    "an owner fixed": ({"pbx1": edited_file("/etc/asterisk/queues.conf", owner="nobody")}, {"pbx1": (QUEUES,)}),
    "a unit file and the dialplan: daemon-reload first, as in the engines": (
        {"pbx1": both(edited_file("/etc/systemd/system/ekc-prompts.service"),
                      edited_file("/etc/asterisk/extensions.conf"))},
        {"pbx1": ("systemctl daemon-reload", DIALPLAN)}),
    "two hosts, one connection each": (
        {"pbx1": edited_file("/etc/asterisk/extensions.conf"), "db1": edited_file("/etc/nftables.conf")},
        {"db1": ("nft -f /etc/nftables.conf",), "pbx1": (DIALPLAN,)}),
    "the prompt synthesis script itself": ({"pbx1": edited_file("/usr/local/lib/ekc/ekc-prompts")},
                                           {"pbx1": (PROMPTS,)}),
}


@pytest.mark.parametrize("case", TAKEN)
def test_plans_of_reloadable_files_take_the_fast_path(case: str) -> None:
    edits, triggers = TAKEN[case]
    decision = decide(live_plan(edits), WANTED, CONTENTS)
    assert decision.taken, decision.refusals
    assert {p.host: tuple(run.command for run in p.triggers) for p in decision.pushes} == triggers
    for push in decision.pushes:
        changed = {c.path for h in live_plan(edits).hosts if h.host == push.host for c in h.files}
        assert {w.file.path for w in push.writes} == changed
        assert all(w.content == CONTENTS[(push.host, w.file.path)] for w in push.writes)


REFUSED: dict[str, tuple[dict[str, HostEdit], str]] = {
    # case: (what differs on the hosts, the reason given)
    "modules.conf restarts Asterisk": (
        {"pbx1": edited_file("/etc/asterisk/modules.conf")},
        "pbx1: /etc/asterisk/modules.conf: systemctl restart asterisk drops every call on the node"),
    "a restart that drops no call": (
        {"pbx1": edited_file("/etc/chrony/chrony.conf")},
        "pbx1: /etc/chrony/chrony.conf: systemctl restart chrony restarts chrony"),
    "a setup unit that needs the bundle": (
        {"crm1": edited_file("/etc/ekc-crm/requirements.txt")},
        "crm1: /etc/ekc-crm/requirements.txt: systemctl restart ekc-crm-setup restarts ekc-crm-setup"),
    "a package to install": ({"pbx1": missing_package("asterisk")}, "pbx1: package asterisk to install"),
    "a new service": ({"pbx1": missing_service("ekc-cti")}, "pbx1: a new service ekc-cti"),
    "a service to start": ({"pbx1": stopped_service("ekc-cti")}, "pbx1: service ekc-cti to start"),
    "a path to delete": ({"pbx1": present_absent("/etc/asterisk/users.conf")},
                         "pbx1: /etc/asterisk/users.conf to delete"),
    "a file not on the host yet": ({"pbx1": missing_file("/etc/asterisk/queues.conf")},
                                   "pbx1: /etc/asterisk/queues.conf is not on the host yet"),
    "a directory where a file belongs": (
        {"pbx1": edited_file("/etc/asterisk/queues.conf", sha256=NOT_A_REGULAR_FILE)},
        "pbx1: /etc/asterisk/queues.conf is not a regular file on the host"),
    "APT's configuration": (
        {"pbx1": edited_file("/etc/apt/sources.list.d/ekc.sources")},
        "pbx1: /etc/apt/sources.list.d/ekc.sources is APT's configuration (its apt-get update needs the bundle "
        "served)"),
}


@pytest.mark.parametrize("case", REFUSED)
def test_other_plans_go_to_the_engine_with_the_reason(case: str) -> None:
    edits, reason = REFUSED[case]
    decision = decide(live_plan(edits), WANTED, CONTENTS)
    assert not decision.taken and decision.pushes == ()
    assert decision.refusals == (reason,)


def test_one_refused_change_sends_the_whole_plan_to_the_engine() -> None:
    edits = {"pbx1": both(edited_file("/etc/asterisk/extensions.conf"), edited_file("/etc/asterisk/modules.conf"))}
    decision = decide(live_plan(edits), WANTED, CONTENTS)
    assert not decision.taken and len(decision.refusals) == 1


def test_a_new_host_goes_to_the_engine() -> None:
    observed = replace(WANTED, hosts=tuple(h for h in WANTED.hosts if h.name != "mon1"))
    decision = decide(diff_builds(observed, WANTED), WANTED, CONTENTS)
    assert "mon1: a new host" in decision.refusals


def test_nothing_to_do_is_neither_fast_path_nor_refused() -> None:
    decision = decide(live_plan({}), WANTED, CONTENTS)
    assert (decision.taken, decision.pushes, decision.refusals) == (False, (), ())


def test_no_fast_path_refuses_even_a_dialplan_edit() -> None:
    decision = decide(live_plan({"pbx1": edited_file("/etc/asterisk/extensions.conf")}), WANTED, CONTENTS,
                      allowed=False)
    assert not decision.taken and decision.refusals == ("the fast path is switched off (--no-fast-path)",)


def test_a_trigger_two_files_fire_runs_once_with_both() -> None:
    edits = {"pbx1": both(edited_file("/usr/local/lib/ekc/ekc-prompts"),
                          edited_file("/usr/local/lib/ekc/ekc-prompts.json"))}
    (push,) = decide(live_plan(edits), WANTED, CONTENTS).pushes
    assert push.triggers == (TriggerRun(PROMPTS, "ekc-prompts", ("/usr/local/lib/ekc/ekc-prompts",
                                                                  "/usr/local/lib/ekc/ekc-prompts.json")),)


# --- the script -------------------------------------------------------------------------------------------------


def scratch_push(root: Path, files: dict[str, bytes], triggers: tuple[TriggerRun, ...] = (), *,
                 mode: str = "0640", sha: dict[str, str] | None = None) -> HostPush:
    """A push of ``files`` (relative to ``root``) owned by the user running the test."""
    owner, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
    writes = tuple(
        FileWrite(ManagedFile(str(root / name), mode, owner, group,
                              (sha or {}).get(name, hashlib.sha256(data).hexdigest()), "test"), "", data)
        for name, data in files.items())
    return HostPush("scratch", "127.0.0.1", writes, triggers)


def run_script(push: HostPush) -> str:
    return subprocess.run(["sh", "-s"], input=push_script(push), capture_output=True, text=True, timeout=60,
                          check=False).stdout


def test_the_script_stages_everything_before_it_replaces_anything() -> None:
    push = scratch_push(Path("/etc/x"), {"a.conf": b"a\n", "b.conf": b"b\n"},
                        (TriggerRun(DIALPLAN, "asterisk", ("/etc/x/a.conf",)),))
    lines = push_script(push).splitlines()
    body = lines[lines.index("staged_files=2") + 1:]
    staged = [i for i, line in enumerate(body) if line.startswith("stage ")]
    placed = [i for i, line in enumerate(body) if line.startswith("place ")]
    fired = [i for i, line in enumerate(body) if line.startswith("trigger ")]
    assert max(staged) < min(placed) < max(placed) < min(fired)
    assert body[staged[0]].startswith("stage 0 /etc/x/.a.conf.ekc-tmp.XXXXXXXX 0640 ")  # beside its target
    assert body[staged[0]].endswith(f"<<'{DELIMITER}'") and body[staged[0] + 2] == DELIMITER
    assert "sync -- /etc/x || true" in body  # the renames reach the disk
    assert body[fired[0]] == "trigger 0 asterisk.service 'asterisk -rx '\"'\"'dialplan reload'\"'\"''"
    assert body[-1] == "printf 'E\\tend\\n'"


def test_owner_and_mode_are_set_and_flushed_before_the_rename() -> None:
    script = push_script(scratch_push(Path("/etc/x"), {"a.conf": b"a\n"}))
    stage = script[script.index("stage() {"):script.index("place() {")]
    order = [stage.index(step) for step in ("mktemp --", "base64 -d", "sha256sum", "chown --", "chmod --",
                                            "sync --")]
    assert order == sorted(order)
    assert "mv -fT --" in script[script.index("place() {"):]  # rename(2): never into a directory of that name


def test_the_script_replaces_files_atomically_and_runs_each_trigger_once(tmp_path: Path) -> None:
    (tmp_path / "a.conf").write_text("old\n")
    marker = tmp_path / "fired"
    triggers = (TriggerRun(f"echo once >> {marker}", None, (str(tmp_path / "a.conf"),)),
                TriggerRun("reload-a-service-that-is-not-here", "ekc-no-such-unit", (str(tmp_path / "b c.conf"),)))
    push = scratch_push(tmp_path, {"a.conf": b"new\n", "b c.conf": bytes(range(256)) * 40}, triggers)
    result = read_answer(push, run_script(push))
    assert result.ok, result.error
    assert (tmp_path / "a.conf").read_bytes() == b"new\n"
    assert (tmp_path / "b c.conf").read_bytes() == bytes(range(256)) * 40
    assert {oct((tmp_path / n).stat().st_mode & 0o7777) for n in ("a.conf", "b c.conf")} == {"0o640"}
    assert marker.read_text() == "once\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.conf", "b c.conf", "fired"]  # no temporary file left
    assert result.files == (str(tmp_path / "a.conf"), str(tmp_path / "b c.conf"))
    assert result.triggers == (f"echo once >> {marker}",)
    assert result.skipped_triggers == ("reload-a-service-that-is-not-here",)  # its service is not running


def test_files_staged_by_an_interrupted_apply_are_removed_before_staging(tmp_path: Path) -> None:
    (tmp_path / "a.conf").write_text("old\n")
    (tmp_path / ".a.conf.ekc-tmp.k1ll3d").write_text("half of the n")  # a killed apply's staged file
    (tmp_path / ".keep").write_text("not ekc's\n")
    push = scratch_push(tmp_path, {"a.conf": b"new\n"})
    result = read_answer(push, run_script(push))
    assert result.ok, result.error
    assert sorted(p.name for p in tmp_path.iterdir()) == [".keep", "a.conf"]
    assert (tmp_path / "a.conf").read_text() == "new\n"


def test_content_that_does_not_match_the_render_changes_nothing(tmp_path: Path) -> None:
    (tmp_path / "a.conf").write_text("old\n")
    push = scratch_push(tmp_path, {"a.conf": b"new\n", "b.conf": b"b\n"}, sha={"b.conf": "f" * 64})
    result = read_answer(push, run_script(push))
    assert not result.ok and result.error == f"{tmp_path / 'b.conf'}: the written content has another sha256"
    assert (tmp_path / "a.conf").read_text() == "old\n" and result.files == ()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.conf"]


def test_a_failed_trigger_fails_the_host_and_stops_the_later_ones(tmp_path: Path) -> None:
    later = tmp_path / "later"
    triggers = (TriggerRun("echo no such module >&2; exit 3", None, (str(tmp_path / "a.conf"),)),
                TriggerRun(f"touch {later}", None, (str(tmp_path / "a.conf"),)))
    push = scratch_push(tmp_path, {"a.conf": b"new\n"}, triggers)
    result = read_answer(push, run_script(push))
    assert not result.ok and result.error == "echo no such module >&2; exit 3 failed (exit 3): no such module"
    assert result.files == (str(tmp_path / "a.conf"),) and not later.exists()


def test_an_answer_cut_short_is_a_failure() -> None:
    push = scratch_push(Path("/etc/x"), {"a.conf": b"a\n"})
    result = read_answer(push, "W\t0\n")
    assert not result.ok and result.files == ("/etc/x/a.conf",) and "cut short" in (result.error or "")


# --- the record -------------------------------------------------------------------------------------------------


def test_the_record_names_every_file_with_its_sha256_before_and_after_and_no_secret(tmp_path: Path) -> None:
    plan = live_plan({"pbx1": edited_file("/etc/ekc/callback.json"),  # a secret file
                      "mon1": edited_file("/var/www/ekc-wallboard/index.html")})
    secret = next(f for f in WANTED.host("pbx1").files if f.path == "/etc/ekc/callback.json")  # type: ignore[union-attr]
    assert secret.secret
    results = (read_answer(HostPush("pbx1", "", (FileWrite(secret, "0" * 64, b"s3cr3t"),), ()), "W\t0\nE\tend\n"),)
    result = ApplyResult(FAST_PATH, False, results, 0.5)
    started = dt.datetime(2026, 12, 6, 19, 0, 1, tzinfo=dt.UTC)
    record = apply_record(WANTED, result, plan=plan, plan_note="read from the hosts", refused=(), limit=("pbx1",),
                          seconds={"render": 0.1, "total": 1.0}, started_at=started)
    first = write_record(record, tmp_path / "applies")
    second = write_record(record, tmp_path / "applies")
    assert (first.name, second.name) == ("20261206T190001Z-fast-path.json", "20261206T190001Z-fast-path-2.json")
    data = json.loads(first.read_text())
    assert (data["path"], data["result"], data["spec_sha256"], data["limit"]) == (
        "fast path", "ok", WANTED.spec_sha256, ["pbx1"])
    assert data["hosts"][0]["files"] == [{"path": "/etc/ekc/callback.json", "change": "written",
                                         "old_sha256": "0" * 64, "new_sha256": secret.sha256}]
    assert "s3cr3t" not in first.read_text()


def test_a_plan_with_nothing_to_do_is_recorded_as_such(tmp_path: Path) -> None:
    record = apply_record(WANTED, None, plan=live_plan({}), plan_note="read from the hosts", refused=(), limit=(),
                          seconds={"total": 0.6}, started_at=dt.datetime.now(dt.UTC))
    data = json.loads(write_record(record, tmp_path).read_text())
    assert (data["path"], data["result"], data["hosts"]) == ("fast path", "nothing to do", [])

