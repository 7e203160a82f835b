"""Node lifecycle in the plan and the apply: the placement a build keeps, the lines that say which departments
move and what a leaving node loses, what the live plan reads of an absent node, the database switchover, and
apply's refusal to remove a node that holds data without --allow-data-loss."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from ekc.cli import hosts
from ekc.cli.main import main
from ekc.engines.fastpath import refusals
from ekc.engines.lifecycle import (
    LifecycleError,
    Switchover,
    choose_switchover,
    departing_host,
    departure_plan,
    hand_over_leader,
    live_calls,
    parse_calls,
    plan_departures,
    stop_departures,
    stop_script,
)
from ekc.engines.ssh import LiveError
from ekc.render.build import write_build
from ekc.render.components.asterisk_pool import load_placements, placements
from ekc.render.lifecycle import Departure, data_loss_refusal, departures, lifecycle_lines
from ekc.render.plan import Plan
from ekc.render.plan_text import format_plan
from ekc.render.pool import describe, moves
from ekc.spec.load import load_spec
from ekc.spec.secrets import SecretsView, init_secrets, required_secrets
from schemas.region import Region
from tests.support.render import placeholder_tree
from tests.unit.test_node_lifecycle import HA, ha_data, ha_region, rendered

VAULT = "unit-test-vault-password-not-a-secret-0123456789"

PBX3 = Departure("pbx3", "10.56.0.13", ("asterisk",), ("asterisk", "ekc-callback"), ("call recordings and voicemail",))


# --- the placement a build keeps ---------------------------------------------------------------------------------


def test_a_build_keeps_its_placement_and_reads_it_back(tmp_path: Path) -> None:
    result = rendered(("pbx1", "drain"))
    write_build(result, tmp_path / "build")
    assert load_placements(tmp_path / "build") == dict(result.placements) == placements(ha_region(pbx1="drain"))
    assert "placements.json" in (tmp_path / "build" / "SHA256SUMS").read_text(encoding="utf-8")


def test_a_build_without_a_placement_reads_as_none(tmp_path: Path) -> None:
    assert load_placements(tmp_path) is None


# --- the plan's lines ------------------------------------------------------------------------------------------


def test_the_plan_names_the_departments_a_drain_moves_and_the_calls_that_finish() -> None:
    before, after = placements(ha_region()), placements(ha_region(pbx1="drain"))
    expected = describe(moves(before, after))
    lines = lifecycle_lines(ha_region(pbx1="drain"), before, after, (), {"pbx1": 3})
    assert lines[0] == f"departments that move ({len(expected)}):"
    assert list(lines[1:1 + len(expected)]) == [f"  {line}" for line in expected]
    assert any(line.startswith("department ") and "primary pbx1 ->" in line for line in expected)
    assert lines[-1].startswith("pbx1 drains: Asterisk keeps running and its calls end normally")
    assert lines[-1].endswith("; 3 call(s) in progress finish there")


def test_the_plan_says_what_a_drained_database_node_does_and_that_etcd_stays() -> None:
    lines = lifecycle_lines(ha_region(db3="drain"), None, {}, ())
    assert lines == (
        "db3 leaves the database cluster: if it leads, apply first switches the leader over to a healthy replica "
        "(patronictl switchover), then stops and disables Patroni there; clients no longer list it",
        "db3 stays an etcd member: etcd keeps running there (3 members, quorum 2, unchanged)",
    )


def test_the_plan_lists_a_removed_nodes_services_and_the_calls_it_drops() -> None:
    lines = lifecycle_lines(ha_region(pbx3="absent"), None, {"a": placements(ha_region())["social"]}, [PBX3],
                            {"pbx3": None})
    assert lines[0].startswith("departments: the previous build recorded no placement")
    assert lines[-1] == ("pbx3 is absent: apply stops and disables asterisk, ekc-callback; it holds call recordings "
                         "and voicemail (apply needs --allow-data-loss); calls in progress could not be read")


def test_the_plan_warns_of_an_asterisk_node_taken_out_of_the_spec_while_it_served() -> None:
    """A node deleted from the spec outright is no longer managed: its services would go on with a configuration
    nothing maintains. The plan says so and names the way out of service; a node that served nothing (it was
    marked absent before) is not named."""
    data = ha_data()
    data["nodes"] = [n for n in data["nodes"] if n["name"] != "pbx3"]
    smaller = Region.model_validate(data)
    before, after = placements(ha_region()), placements(smaller)
    lines = lifecycle_lines(smaller, before, after, ())
    left = [line for line in lines if "no longer in the spec" in line]
    assert left == [line for line in lines if line.startswith("pbx3 ")] and len(left) == 1, lines
    assert "its services keep running" in left[0] and "state: drain, then state: absent" in left[0]
    assert not any("no longer in the spec" in line
                   for line in lifecycle_lines(smaller, placements(ha_region(pbx3="absent")), after, ()))


def test_a_removed_node_keeps_ssh_its_firewall_time_and_audit() -> None:
    """apply stops the roles' services of an absent node (and node_exporter), never the base layer's: the server
    stays reachable for its administrators and closed to everyone else."""
    region = ha_region(pbx3="absent")
    loaded = replace(load_spec(str(HA)), region=region)
    (gone,) = departures(loaded, SecretsView(placeholder_tree(required_secrets(region))))
    assert {"asterisk", "ekc-cti", "ekc-member-states", "prometheus-node-exporter"} <= set(gone.services)
    assert not {"ssh", "nftables", "chrony", "auditd"} & set(gone.services), gone.services


def test_format_plan_prints_the_lifecycle_lines_under_the_spec() -> None:
    plan = Plan(hosts=(), old_spec_sha256="a" * 64, new_spec_sha256="b" * 64,
                lifecycle=("departments that move (1):", "  department x: primary p1 -> p2 (standby p2 -> p3)"))
    text = format_plan(plan).splitlines()
    assert text[1:3] == ["Lifecycle: departments that move (1):",
                         "    department x: primary p1 -> p2 (standby p2 -> p3)"]


def test_an_absent_node_s_services_are_those_its_components_run() -> None:
    region = ha_region(pbx3="absent")
    loaded = replace(load_spec(str(HA)), region=region)
    [pbx3] = departures(loaded, SecretsView(placeholder_tree(required_secrets(region))))
    assert pbx3.name == "pbx3" and pbx3.data == ("call recordings and voicemail",)
    assert {"asterisk", "ekc-member-states", "prometheus-node-exporter"} <= set(pbx3.services)


# --- what the live plan reads ----------------------------------------------------------------------------------


def test_parse_calls_reads_asterisks_count() -> None:
    assert parse_calls("0 active channels\n2 active calls\n5 calls processed\n") == 2
    assert parse_calls("1 active call\n") == 1
    assert parse_calls("Unable to connect to remote asterisk\n") is None


def test_live_calls_asks_only_the_leaving_asterisk_nodes() -> None:
    asked: list[str] = []

    def run(host: str, address: str, script: str) -> str:
        asked.append(host)
        if host == "pbx3":
            raise LiveError("unreachable")
        return "4 active calls\n"

    assert live_calls(ha_region(pbx1="drain", pbx3="absent"), run) == {"pbx1": 4, "pbx3": None}
    assert asked == ["pbx1", "pbx3"]


def _units_answer(*records: tuple[int, str, str]) -> str:
    """The observe script's answer for the departing host: unit records (index, active state, unit file state)."""
    lines = ["V\tnone"] + [f"S\t{i}\t{enabled}\t{active}\t-\t0\t-" for i, active, enabled in records]
    return "\n".join([*lines, "E\tend"]) + "\n"


def test_an_absent_nodes_plan_stops_what_still_runs_and_the_fast_path_leaves_it_alone() -> None:
    assert [s.name for s in departing_host(PBX3).services] == ["asterisk", "ekc-callback"]
    plan = departure_plan(PBX3, _units_answer((0, "active", "enabled"), (1, "inactive", "disabled")))
    assert plan.departing and [(c.service, c.new.running, c.new.enabled) for c in plan.services  # type: ignore[union-attr]
                               ] == [("asterisk", False, False)]
    assert plan.changed and refusals(Plan((plan,), "", "")) == ()
    assert stop_script(plan) == "set -e\nsystemctl disable --now asterisk\n"


def test_an_unreachable_absent_node_has_nothing_to_stop() -> None:
    def run(host: str, address: str, script: str) -> str:
        raise LiveError(f"{address}: no route")

    [plan] = plan_departures([PBX3], run)
    assert not plan.changed and plan.notes == ("not reachable (10.56.0.13: no route): nothing is stopped there",)
    assert stop_departures([plan], run) == ()


def test_stopping_an_absent_nodes_services_reports_a_failure_per_host() -> None:
    plan = departure_plan(PBX3, _units_answer((0, "active", "enabled"), (1, "active", "enabled")))

    def run(host: str, address: str, script: str) -> str:
        raise LiveError("connection closed")

    [result] = stop_departures([plan], run)
    assert not result.ok and result.error == "stopping its services: connection closed"


# --- the database leader ---------------------------------------------------------------------------------------


def _members(leader: str, **states: str) -> str:
    return json.dumps([{"Member": name, "Role": "Leader" if name == leader else "Replica", "State": state}
                       for name, state in states.items()])


def test_a_leaving_leader_switches_over_to_the_first_healthy_member_that_stays() -> None:
    region = ha_region(db1="drain")
    members = _members("db1", db1="running", db2="starting", db3="streaming")
    assert choose_switchover(region, members) == Switchover("db1", "db3")
    assert Switchover("db1", "db3").command(region) == (
        "patronictl -c /etc/patroni/18-main.yml switchover ekc-54 --leader db1 --candidate db3 --force")


def test_in_synchronous_mode_the_leader_goes_to_the_synchronous_standby() -> None:
    """Patroni in synchronous mode hands the leader only to its synchronous standby: db3 here, though db2
    comes first in the spec (the lab's drill once waited 60 s for a switchover to db2 that never came)."""
    members = json.loads(_members("db1", db1="running", db2="streaming", db3="streaming"))
    members[2]["Role"] = "Sync Standby"
    assert choose_switchover(ha_region(db1="drain"), json.dumps(members)) == Switchover("db1", "db3")


def test_no_switchover_when_the_leader_stays_and_a_refusal_when_nobody_can_take_over() -> None:
    assert choose_switchover(ha_region(db3="drain"), _members("db1", db1="running", db3="streaming")) is None
    with pytest.raises(LifecycleError, match="no member that stays active is healthy"):
        choose_switchover(ha_region(db1="drain"), _members("db1", db1="running", db2="stopped", db3="stopped"))


def test_hand_over_leader_switches_then_waits_for_the_new_leader() -> None:
    answers = iter([_members("db1", db1="running", db2="streaming", db3="streaming"), "",
                    _members("db2", db1="running", db2="running", db3="streaming")])
    ran: list[tuple[str, str]] = []

    def run(host: str, address: str, script: str) -> str:
        ran.append((host, script.split()[3] if "switchover" in script else "list"))
        return next(answers)

    done = hand_over_leader(ha_region(db1="drain"), run, wait_s=5)
    assert done == "database: the leader moved from db1 to db2 (switchover)"
    assert ran == [("db2", "list"), ("db2", "switchover"), ("db2", "list")]


def test_no_question_to_the_cluster_while_every_database_node_is_active() -> None:
    def run(host: str, address: str, script: str) -> str:
        raise AssertionError("asked")

    assert hand_over_leader(ha_region(), run) is None


# --- apply refuses to lose data without the flag -----------------------------------------------------------------


def test_data_loss_refusal_names_the_nodes_and_what_they_hold() -> None:
    assert data_loss_refusal([replace(PBX3, data=())]) is None
    message = data_loss_refusal([PBX3])
    assert message is not None and "pbx3 (call recordings and voicemail)" in message
    assert "nothing was changed on any host" in message and "--allow-data-loss" in message


@pytest.fixture
def absent_pbx3(tmp_path: Path) -> Path:
    """inventories/ha with pbx3 marked absent, with secrets of its own (as ``secrets init`` makes them)."""
    region = tmp_path / "ha"
    region.mkdir()
    (region / "region.yml").write_text(yaml.safe_dump(ha_data(pbx3="absent"), allow_unicode=True, sort_keys=False),
                                       encoding="utf-8")
    init_secrets(load_spec(region).region, region, VAULT.encode())
    (region / ".vault_pass").write_text(VAULT + "\n", encoding="utf-8")
    return region / "region.yml"


def test_apply_refuses_an_absent_node_with_data_without_the_flag(absent_pbx3: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def touched(*args: object, **kwargs: object) -> None:
        raise AssertionError("a host or an engine was reached")

    monkeypatch.setattr("ekc.engines.ssh.shared_connections", touched)
    monkeypatch.setattr(hosts, "_run_engine", touched)
    result = CliRunner().invoke(main, ["apply", str(absent_pbx3), "-y"])
    assert result.exit_code == 2, result.output
    assert "ekc: these nodes are marked absent and hold data that leaves the region with them: pbx3 (call " \
           "recordings and voicemail)" in result.output
    assert "Traceback" not in result.output


def test_apply_goes_past_the_refusal_with_the_flag(absent_pbx3: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def reached(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the hosts were reached")

    monkeypatch.setattr("ekc.engines.ssh.shared_connections", reached)
    result = CliRunner().invoke(main, ["apply", str(absent_pbx3), "-y", "--allow-data-loss"])
    assert "the hosts were reached" in result.output and "marked absent" not in result.output
