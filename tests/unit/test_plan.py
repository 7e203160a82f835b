"""The offline plan: two build manifests in, the exact changes and the exact text out."""

from __future__ import annotations

import json
import re
from dataclasses import replace

from ekc.render.manifest import BuildManifest, HostManifest, ManagedFile, ServiceState, Trigger
from ekc.render.plan import (
    AbsentChange,
    FileChange,
    HostPlan,
    PackageChange,
    Plan,
    ServiceAction,
    ServiceChange,
    diff_builds,
)
from ekc.render.plan_text import format_plan, plan_summary, plan_to_json

OLD_SPEC = "1" * 64
NEW_SPEC = "2" * 64
NO_ACTION = Trigger()
RELOAD_DIALPLAN = Trigger(
    action="reload", service="asterisk", command="asterisk -rx 'dialplan reload'", impact="no calls dropped"
)
RESTART_ASTERISK = Trigger(
    action="restart", service="asterisk", impact="drops every call on this node", drops_calls=True
)
RESTART_CHRONY = Trigger(action="restart", service="chrony", impact="the clock is not stepped")


def managed(
    path: str,
    sha: str = "a",
    trigger: Trigger = NO_ACTION,
    *,
    mode: str = "0644",
    owner: str = "root",
    secret: bool = False,
) -> ManagedFile:
    """A managed file whose checksum is ``sha`` repeated: enough to tell versions apart."""
    return ManagedFile(
        path=path, mode=mode, owner=owner, group="root", sha256=sha * 64, component="test",
        secret=secret, trigger=trigger,
    )


def host(
    name: str,
    address: str,
    files: tuple[ManagedFile, ...] = (),
    packages: tuple[str, ...] = (),
    services: tuple[ServiceState, ...] = (),
) -> HostManifest:
    """A host of a fixture build."""
    return HostManifest(
        name=name, address=address, roles=("test",), packages=packages, files=files, services=services
    )


def build(*hosts: HostManifest, spec_sha256: str = OLD_SPEC) -> BuildManifest:
    """A redacted build of region 54 made of ``hosts``."""
    return BuildManifest(
        ekc_version="0.1.0", spec="inventories/example/region.yml", spec_sha256=spec_sha256,
        region_code="54", region_name="Example oblast", redacted=True, hosts=hosts, flows=(),
    )


DB1 = host("db1", "10.54.0.21", (managed("/etc/postgresql/18/main/pg_hba.conf", "d"),), ("postgresql",))
CRM1 = host("crm1", "10.54.0.31", packages=("nginx",))
MON1 = host("mon1", "10.54.0.41", packages=("prometheus",))
PBX1_OLD = host(
    "pbx1", "10.54.0.11",
    files=(
        managed("/etc/asterisk/extensions.conf", "a", RELOAD_DIALPLAN),
        managed("/etc/asterisk/pjsip.conf", "b", RESTART_ASTERISK),
        managed("/etc/old.conf", "c"),
    ),
    packages=("asterisk", "ntp"),
    services=(ServiceState("asterisk"),),
)
PBX1_NEW = host(
    "pbx1", "10.54.0.11",
    files=(
        managed("/etc/asterisk/extensions.conf", "e", RELOAD_DIALPLAN),
        managed("/etc/asterisk/pjsip.conf", "b", RESTART_ASTERISK, mode="0640"),
        managed("/etc/chrony/chrony.conf", "f", RESTART_CHRONY),
    ),
    packages=("asterisk", "chrony"),
    services=(ServiceState("asterisk"), ServiceState("chrony")),
)
OLD = build(PBX1_OLD, DB1, CRM1, MON1)
NEW = build(PBX1_NEW, DB1, CRM1, MON1, spec_sha256=NEW_SPEC)

EXPECTED_TEXT = """\
Spec: 111111111111 → 222222222222
pbx1 (10.54.0.11)
  ~ /etc/asterisk/extensions.conf                 reload: asterisk -rx 'dialplan reload' — no calls dropped
! ~ /etc/asterisk/pjsip.conf (mode 0644 → 0640)   restart asterisk — drops every call on this node
  + /etc/chrony/chrony.conf                       restart chrony — the clock is not stepped
  - /etc/old.conf
  packages: + chrony  - ntp
  services: + chrony
crm1: no changes
db1: no changes
mon1: no changes
Plan: 4 files, 2 packages, 1 service to change on 1 of 4 hosts; 1 restart that drops calls (pbx1: asterisk)
"""


def test_identical_builds_plan_nothing() -> None:
    plan = diff_builds(OLD, OLD)
    assert not plan.changed
    assert plan.restarts_dropping_calls == []
    assert format_plan(plan) == (
        "Spec: 111111111111 (unchanged)\n"
        "crm1: no changes\ndb1: no changes\nmon1: no changes\npbx1: no changes\n"
        "Plan: no changes on 4 hosts\n"
    )


def test_file_changes_are_added_changed_removed_with_their_triggers() -> None:
    pbx1 = diff_builds(OLD, NEW).hosts[3]
    old_files = {f.path: f for f in PBX1_OLD.files}
    new_files = {f.path: f for f in PBX1_NEW.files}
    assert pbx1.files == (
        FileChange("pbx1", "/etc/asterisk/extensions.conf", "changed", RELOAD_DIALPLAN, False, ("content",),
                   old_files["/etc/asterisk/extensions.conf"], new_files["/etc/asterisk/extensions.conf"]),
        FileChange("pbx1", "/etc/asterisk/pjsip.conf", "changed", RESTART_ASTERISK, False, ("mode",),
                   old_files["/etc/asterisk/pjsip.conf"], new_files["/etc/asterisk/pjsip.conf"]),
        FileChange("pbx1", "/etc/chrony/chrony.conf", "added", RESTART_CHRONY, False,
                   new=new_files["/etc/chrony/chrony.conf"]),
        FileChange("pbx1", "/etc/old.conf", "removed", NO_ACTION, False, old=old_files["/etc/old.conf"]),
    )


def test_packages_and_services_added_and_removed() -> None:
    pbx1 = diff_builds(OLD, NEW).hosts[3]
    assert pbx1.packages == (
        PackageChange("pbx1", "chrony", "added"), PackageChange("pbx1", "ntp", "removed")
    )
    assert pbx1.services == (ServiceChange("pbx1", "chrony", "added", new=ServiceState("chrony")),)


def test_unchanged_hosts_have_empty_plans() -> None:
    plan = diff_builds(OLD, NEW)
    assert [h.host for h in plan.hosts] == ["crm1", "db1", "mon1", "pbx1"]
    assert plan.hosts[1] == HostPlan("db1", "10.54.0.21")
    assert [h.changed for h in plan.hosts] == [False, False, False, True]


def test_format_plan_exact_text() -> None:
    assert format_plan(diff_builds(OLD, NEW)) == EXPECTED_TEXT


def test_restart_that_drops_calls_stands_out() -> None:
    text = format_plan(diff_builds(OLD, NEW))
    flagged = [line for line in text.splitlines() if line.startswith("!")]
    assert flagged == [
        "! ~ /etc/asterisk/pjsip.conf (mode 0644 → 0640)   restart asterisk — drops every call on this node"
    ]


def test_restarts_dropping_calls_are_counted_once_per_service() -> None:
    old = build(host("pbx1", "10.54.0.11", (
        managed("/etc/asterisk/pjsip.conf", "a", RESTART_ASTERISK),
        managed("/etc/asterisk/modules.conf", "a", RESTART_ASTERISK),
    )))
    new = build(host("pbx1", "10.54.0.11", (
        managed("/etc/asterisk/pjsip.conf", "b", RESTART_ASTERISK),
        managed("/etc/asterisk/modules.conf", "b", RESTART_ASTERISK),
    )), spec_sha256=NEW_SPEC)
    plan = diff_builds(old, new)
    assert plan.restarts_dropping_calls == [
        ServiceAction("pbx1", "restart", "asterisk", None, "drops every call on this node", True,
                      ("/etc/asterisk/modules.conf", "/etc/asterisk/pjsip.conf")),
    ]
    assert plan_summary(plan) == (
        "Plan: 2 files to change on 1 of 1 host; 1 restart that drops calls (pbx1: asterisk)"
    )


def test_reloads_are_actions_but_drop_no_calls() -> None:
    plan = diff_builds(OLD, NEW)
    assert [(a.host, a.action, a.service) for a in plan.actions] == [
        ("pbx1", "reload", "asterisk"), ("pbx1", "restart", "asterisk"), ("pbx1", "restart", "chrony"),
    ]
    assert [(a.host, a.service) for a in plan.restarts_dropping_calls] == [("pbx1", "asterisk")]


def test_removed_file_takes_the_old_files_trigger() -> None:
    old = build(host("pbx1", "10.54.0.11", (managed("/etc/asterisk/queues.conf", "a", RESTART_ASTERISK),)))
    new = build(host("pbx1", "10.54.0.11"), spec_sha256=NEW_SPEC)
    plan = diff_builds(old, new)
    assert plan.hosts[0].files[0].trigger == RESTART_ASTERISK
    assert format_plan(plan).splitlines()[2] == (
        "! - /etc/asterisk/queues.conf   restart asterisk — drops every call on this node"
    )


def test_secret_in_either_build_marks_the_change_secret() -> None:
    old = build(host("db1", "10.54.0.21", (managed("/etc/pgpass", "a", secret=True),)))
    new = build(host("db1", "10.54.0.21", (managed("/etc/pgpass", "b"),)), spec_sha256=NEW_SPEC)
    assert diff_builds(old, new).hosts[0].files[0].secret
    assert diff_builds(new, old).hosts[0].files[0].secret


def test_owner_and_content_change_are_both_named() -> None:
    old = build(host("db1", "10.54.0.21", (managed("/etc/x.conf", "a"),)))
    new = build(host("db1", "10.54.0.21", (managed("/etc/x.conf", "b", owner="postgres"),)))
    plan = diff_builds(old, new)
    assert plan.hosts[0].files[0].attributes == ("content", "owner")
    assert format_plan(plan).splitlines()[2] == "  ~ /etc/x.conf (content, owner root → postgres)"


def test_service_state_change() -> None:
    old = build(host("pbx1", "10.54.0.11", services=(ServiceState("asterisk"),)))
    stopped = ServiceState("asterisk", enabled=False, running=False)
    new = build(host("pbx1", "10.54.0.11", services=(stopped,)))
    plan = diff_builds(old, new)
    assert plan.hosts[0].services == (
        ServiceChange("pbx1", "asterisk", "changed", ServiceState("asterisk"),
                      ServiceState("asterisk", enabled=False, running=False)),
    )
    assert format_plan(plan).splitlines()[2] == (
        "  services: ~ asterisk (enabled → disabled, running → stopped)"
    )


def test_hosts_added_and_removed() -> None:
    pbx2 = host("pbx2", "10.54.0.12", (managed("/etc/asterisk/pjsip.conf", "a", RESTART_ASTERISK),),
                ("asterisk",), (ServiceState("asterisk"),))
    plan = diff_builds(build(PBX1_OLD, DB1), build(PBX1_OLD, pbx2, spec_sha256=NEW_SPEC))
    assert [(h.host, h.added_host, h.removed_host) for h in plan.hosts] == [
        ("db1", False, True), ("pbx1", False, False), ("pbx2", True, False),
    ]
    assert plan.hosts[0] == HostPlan("db1", "10.54.0.21", removed_host=True)
    assert format_plan(plan) == (
        "Spec: 111111111111 → 222222222222\n"
        "db1 (10.54.0.21): removed from the spec; nothing is applied to it\n"
        "pbx2 (10.54.0.12): new host\n"
        "! + /etc/asterisk/pjsip.conf   restart asterisk — drops every call on this node\n"
        "  packages: + asterisk\n"
        "  services: + asterisk\n"
        "pbx1: no changes\n"
        "Plan: 1 file, 1 package, 1 service to change on 2 of 3 hosts (1 added, 1 removed);"
        " 1 restart that drops calls (pbx2: asterisk)\n"
    )


def test_colour_only_adds_ansi_codes() -> None:
    plan = diff_builds(OLD, NEW)
    coloured = format_plan(plan, color=True)
    assert "\x1b[1;31m!\x1b[0m" in coloured
    assert re.sub(r"\x1b\[[0-9;]*m", "", coloured) == EXPECTED_TEXT


def test_plan_to_json_is_stable_and_complete() -> None:
    plan = diff_builds(OLD, NEW)
    text = plan_to_json(plan)
    assert text == plan_to_json(diff_builds(OLD, NEW))
    document = json.loads(text)
    assert document["changed"] is True
    assert document["old_spec_sha256"] == OLD_SPEC
    assert document["new_spec_sha256"] == NEW_SPEC
    assert document["summary"] == EXPECTED_TEXT.splitlines()[-1]
    pbx1 = document["hosts"][3]
    assert (pbx1["host"], pbx1["changed"]) == ("pbx1", True)
    assert [(f["change"], f["path"]) for f in pbx1["files"]] == [
        ("changed", "/etc/asterisk/extensions.conf"), ("changed", "/etc/asterisk/pjsip.conf"),
        ("added", "/etc/chrony/chrony.conf"), ("removed", "/etc/old.conf"),
    ]
    assert [(r["host"], r["service"], r["drops_calls"]) for r in document["restarts_dropping_calls"]] == [
        ("pbx1", "asterisk", True)
    ]


def with_absent(base: HostManifest, *paths: str) -> HostManifest:
    """``base`` with ``paths`` required absent."""
    return HostManifest(name=base.name, address=base.address, roles=base.roles, packages=base.packages,
                        files=base.files, services=base.services, absent=paths)


def test_a_path_newly_required_absent_is_deleted() -> None:
    old = build(with_absent(DB1, "/etc/kept"))
    new = build(with_absent(DB1, "/etc/apt/sources.list.d/debian.sources", "/etc/kept"), spec_sha256=NEW_SPEC)
    plan = diff_builds(old, new)
    assert plan.hosts[0].absent == (AbsentChange("db1", "/etc/apt/sources.list.d/debian.sources", "added"),)
    assert plan.changed
    assert format_plan(plan).splitlines()[2:] == [
        "  delete: - /etc/apt/sources.list.d/debian.sources",
        "Plan: 1 absent path to change on 1 of 1 host; no restart drops calls",
    ]


def test_a_path_no_longer_required_absent_is_named_but_not_deleted() -> None:
    plan = diff_builds(build(with_absent(DB1, "/etc/old")), build(DB1, spec_sha256=NEW_SPEC))
    assert plan.hosts[0].absent == (AbsentChange("db1", "/etc/old", "removed"),)
    assert "  no longer deleted: /etc/old" in format_plan(plan).splitlines()


def test_the_same_absent_paths_change_nothing() -> None:
    same = build(with_absent(DB1, "/etc/a", "/etc/b"))
    assert not diff_builds(same, same).changed


def test_notes_are_printed_but_are_not_changes() -> None:
    plan = diff_builds(build(DB1), build(DB1))
    noted = Plan(hosts=(replace(plan.hosts[0], notes=("chrony: skips itself here",)),),
                 old_spec_sha256="", new_spec_sha256=NEW_SPEC)
    assert not noted.changed
    assert format_plan(noted) == (
        "Spec: 222222222222 (compared with the live hosts)\n"
        "db1: no changes\n"
        "  note: chrony: skips itself here\n"
        "Plan: no changes on 1 host\n"
    )
    assert json.loads(plan_to_json(noted))["hosts"][0]["notes"] == ["chrony: skips itself here"]
