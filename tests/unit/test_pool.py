"""Departments on Asterisk nodes: deterministic, balanced, stable when nodes come and go, and a standby that holds."""

from __future__ import annotations

import hashlib
import math
import random
import string
from collections.abc import Sequence

import pytest

from ekc.render.pool import (
    EPSILON,
    Move,
    NodeState,
    Placement,
    PoolDepartment,
    PoolError,
    PoolNode,
    assign,
    capacity,
    describe,
    loads,
    moves,
    ranked,
    rendezvous_score,
)

SERVICES = ("health", "police", "fire", "social", "transport")


def region(seed: int, departments: int = 200, nodes: int = 20) -> tuple[list[PoolDepartment], list[PoolNode]]:
    """A region of ``departments`` with weights 1..50 from a seeded generator, on ``nodes`` active nodes."""
    rng = random.Random(seed)
    return ([PoolDepartment(f"dept{i:03d}", rng.randint(1, 50)) for i in range(departments)],
            active(*(f"pbx{i:02d}" for i in range(1, nodes + 1))))


def active(*names: str) -> list[PoolNode]:
    return [PoolNode(name, "active") for name in names]


def with_state(nodes: Sequence[PoolNode], name: str, state: NodeState) -> list[PoolNode]:
    return [PoolNode(node.name, state if node.name == name else node.state) for node in nodes]


def primaries_moved(before: dict[str, Placement], after: dict[str, Placement]) -> set[str]:
    return {department for department, placement in before.items() if after[department].primary != placement.primary}


def test_the_placement_does_not_depend_on_the_order_of_the_input() -> None:
    departments, nodes = region(7, departments=60, nodes=8)
    departments[3] = PoolDepartment("dept003", 12, pins=("pbx05", "pbx02", "pbx07"))
    nodes = with_state(with_state(nodes, "pbx04", "drain"), "pbx08", "absent")
    expected = assign(departments, nodes)
    rng = random.Random(1)
    for _ in range(10):
        shuffled, listed = list(departments), list(nodes)
        rng.shuffle(shuffled)
        rng.shuffle(listed)
        shuffled = [PoolDepartment(d.id, d.weight, tuple(reversed(d.pins))) for d in shuffled]
        result = assign(shuffled, listed)
        assert result == expected
        assert list(result) == sorted(result)


def test_the_score_is_sha256_of_department_and_node() -> None:
    digest = hashlib.sha256(b"health\0pbx1").digest()
    assert rendezvous_score("health", "pbx1") == int.from_bytes(digest[:8], "big")
    assert ranked("health", ["pbx2", "pbx1", "pbx3"]) == ranked("health", ["pbx3", "pbx2", "pbx1"])


def test_primary_and_standby_are_distinct_active_nodes() -> None:
    departments, nodes = region(3, departments=80, nodes=10)
    nodes = with_state(with_state(nodes, "pbx02", "drain"), "pbx09", "absent")
    usable = {node.name for node in nodes if node.state == "active"}
    result = assign(departments, nodes)
    assert set(result) == {department.id for department in departments}
    for placement in result.values():
        assert placement.primary in usable
        assert placement.standby in usable
        assert placement.primary != placement.standby
    assert set(loads(result, departments)) <= usable


def test_a_one_node_region_has_no_standby() -> None:
    result = assign([PoolDepartment(name, 5) for name in SERVICES], active("pbx1"))
    assert {placement.primary for placement in result.values()} == {"pbx1"}
    assert {placement.standby for placement in result.values()} == {None}
    two = assign([PoolDepartment("health", 5)], [PoolNode("pbx1", "active"), PoolNode("pbx2", "drain")])
    assert two == {"health": Placement("health", "pbx1", None)}


def test_pins_are_the_only_nodes_a_department_uses() -> None:
    departments, nodes = region(5, departments=40, nodes=6)
    departments += [
        PoolDepartment("health", 30, pins=("pbx01", "pbx02")),
        PoolDepartment("police", 30, pins=("pbx03", "pbx04", "pbx09")),  # pbx09 is not in the region
        PoolDepartment("fire", 30, pins=("pbx05", "pbx06")),
    ]
    nodes = with_state(nodes, "pbx06", "drain")
    result = assign(departments, nodes)
    assert {result["health"].primary, result["health"].standby} == {"pbx01", "pbx02"}
    assert {result["police"].primary, result["police"].standby} == {"pbx03", "pbx04"}
    assert result["fire"] == Placement("fire", "pbx05", None)


def test_a_department_whose_pins_are_all_inactive_is_refused_by_name() -> None:
    nodes = [PoolNode("pbx1", "active"), PoolNode("pbx2", "drain"), PoolNode("pbx3", "absent")]
    departments = [PoolDepartment("police", 4), PoolDepartment("health", 4, pins=("pbx3", "pbx2", "pbx9"))]
    with pytest.raises(PoolError) as error:
        assign(departments, nodes)
    assert isinstance(error.value, ValueError)
    assert str(error.value) == (
        "department health is pinned to pbx2 (drain), pbx3 (absent), pbx9 (not in the region): "
        "none of these nodes is active"
    )


def test_no_active_node_is_an_error_unless_there_is_nothing_to_place() -> None:
    nodes = [PoolNode("pbx1", "drain"), PoolNode("pbx2", "absent")]
    with pytest.raises(PoolError, match=r"^cannot place 2 department\(s\): no node is active "
                                        r"\(pbx1: drain, pbx2: absent\)$"):
        assign([PoolDepartment("health", 1), PoolDepartment("fire", 1)], nodes)
    with pytest.raises(PoolError, match="no node is active"):
        assign([PoolDepartment("health", 1)], [])
    assert assign([], nodes) == {}


def test_duplicates_and_weights_below_one_are_refused() -> None:
    with pytest.raises(PoolError, match=r"^node pbx1 is listed twice$"):
        assign([PoolDepartment("health", 1)], active("pbx1", "pbx1"))
    with pytest.raises(PoolError, match=r"^department health is listed twice$"):
        assign([PoolDepartment("health", 1), PoolDepartment("health", 2)], active("pbx1"))
    with pytest.raises(PoolError, match=r"^department fire has weight 0: it must be at least 1$"):
        assign([PoolDepartment("fire", 0)], active("pbx1"))


def test_capacity_is_exact() -> None:
    assert EPSILON == 0.25
    assert capacity(10, 4) == 4  # 3.125 rounded up
    assert capacity(8, 5) == 2  # exactly 2.0, not 3 through a rounding error
    assert capacity(5102, 20) == 319


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nodes_stay_balanced_by_weight(seed: int) -> None:
    departments, nodes = region(seed)
    result = assign(departments, nodes)
    carried = loads(result, departments)
    average = sum(department.weight for department in departments) / len(nodes)
    assert max(carried.values()) <= math.ceil((1 + EPSILON) * average) + max(d.weight for d in departments)
    assert len(carried) == len(nodes)  # every node serves someone


def test_a_department_heavier_than_any_node_goes_to_its_best_node() -> None:
    departments = [PoolDepartment("health", 100), PoolDepartment("fire", 1), PoolDepartment("police", 1)]
    nodes = active("pbx1", "pbx2", "pbx3")
    assert capacity(102, 3) < 100
    assert assign(departments, nodes)["health"].primary == ranked("health", ["pbx1", "pbx2", "pbx3"])[0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_adding_a_node_moves_few_departments(seed: int) -> None:
    departments, nodes = region(seed)
    before = assign(departments, nodes)
    after = assign(departments, [*nodes, PoolNode("pbx21", "active")])
    moved = primaries_moved(before, after)
    # The ideal is the departments that now rank pbx21 first, about 200/21; bounded loads add about as many again
    # (measured: 20, 22 and 14 for these seeds, at most 26 over seeds 0-39).
    assert len(moved) <= 3 * len(departments) // 21
    assert any(after[department].primary == "pbx21" for department in moved)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_removing_a_node_moves_its_departments_and_few_others(seed: int) -> None:
    departments, nodes = region(seed)
    before = assign(departments, nodes)
    for gone in nodes:
        remaining = [node for node in nodes if node.name != gone.name]
        after = assign(departments, remaining)
        own = {department for department, placement in before.items() if placement.primary == gone.name}
        moved = primaries_moved(before, after)
        assert own <= moved
        # Others move where the node's departments, or the capacity (a nineteenth higher on one node less), change
        # which departments a crowded node keeps (measured: at most 20 of 200 over seeds 0-39 and every node).
        assert len(moved - own) <= len(departments) // 8


def test_a_drained_or_absent_node_counts_as_removed() -> None:
    departments, nodes = region(4, departments=100, nodes=10)
    removed = assign(departments, [node for node in nodes if node.name != "pbx03"])
    assert assign(departments, with_state(nodes, "pbx03", "drain")) == removed
    assert assign(departments, with_state(nodes, "pbx03", "absent")) == removed


def drained_departments(departments: Sequence[PoolDepartment], nodes: Sequence[PoolNode]) -> list[tuple[str, str]]:
    """(department, node) for every department of every node drained in turn, and the node it then goes to."""
    before = assign(departments, nodes)
    landed: list[tuple[str, str]] = []
    for node in nodes:
        after = assign(departments, with_state(nodes, node.name, "drain"))
        landed += [(d, after[d].primary) for d, placement in before.items() if placement.primary == node.name]
    return landed


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_drained_nodes_departments_go_to_their_standby(seed: int) -> None:
    departments, nodes = region(seed)
    before = assign(departments, nodes)
    landed = drained_departments(departments, nodes)
    on_standby = sum(before[department].standby == node for department, node in landed)
    assert on_standby >= 0.9 * len(landed)  # measured: 96%, 98.5% and 96.5% of 200 for these seeds


def test_a_department_misses_its_standby_only_when_the_standby_has_no_room() -> None:
    departments, nodes = region(0)
    weight = {department.id: department.weight for department in departments}
    order = {d.id: (-d.weight, d.id) for d in departments}
    before = assign(departments, nodes)
    limit = capacity(sum(weight.values()), len(nodes) - 1)
    missed = 0
    for drained in nodes:
        others = [node.name for node in nodes if node != drained]
        after = assign(departments, with_state(nodes, drained.name, "drain"))
        carried = loads(after, departments)
        for department, placement in before.items():
            if placement.primary != drained.name or after[department].primary == placement.standby:
                continue
            standby = placement.standby
            assert standby is not None
            ranking = ranked(department, others)
            better = ranking.index(after[department].primary) < ranking.index(standby)
            full = carried[standby] + weight[department] > limit
            # in its first round a node that turns away a department ranking it first takes no lighter one
            crowded = ranking[0] == standby and any(
                ranked(other, others)[0] == standby and after[other].primary != standby
                for other in before if order[other] < order[department])
            assert better or full or crowded, department
            missed += 1
    assert 0 < missed <= 0.1 * len(departments)


def test_five_departments_on_three_nodes_always_go_to_their_standby() -> None:
    rng = random.Random(5)
    regions = [SERVICES] + [tuple("".join(rng.choices(string.ascii_lowercase, k=6)) for _ in range(5))
                            for _ in range(50)]
    nodes = active("pbx1", "pbx2", "pbx3")
    for names in regions:
        departments = [PoolDepartment(name, 8) for name in names]
        before = assign(departments, nodes)
        landed = drained_departments(departments, nodes)
        assert len(landed) == 5
        assert [before[department].standby for department, _ in landed] == [node for _, node in landed], names


def test_one_score_per_department_and_allowed_node() -> None:
    """The work is linear in the departments: each (department, allowed node) pair is scored once, no more."""
    counted: list[tuple[str, str]] = []

    def counting(department: str, node: str) -> int:
        counted.append((department, node))
        return rendezvous_score(department, node)

    for size in (100, 200, 400):
        counted.clear()
        departments, nodes = region(0, departments=size)
        departments[0] = PoolDepartment(departments[0].id, 5, pins=("pbx01", "pbx02"))
        assert assign(departments, nodes, score=counting) == assign(departments, nodes)
        assert len(counted) == len(set(counted)) == (size - 1) * len(nodes) + 2


def test_moves_and_their_description() -> None:
    before = {
        "fire": Placement("fire", "pbx1", "pbx2"),
        "health": Placement("health", "pbx1", "pbx2"),
        "police": Placement("police", "pbx2", "pbx3"),
        "social": Placement("social", "pbx3", "pbx1"),
        "water": Placement("water", "pbx2", None),
    }
    after = {
        "fire": Placement("fire", "pbx1", "pbx2"),
        "health": Placement("health", "pbx3", "pbx1"),
        "police": Placement("police", "pbx2", "pbx1"),
        "social": Placement("social", "pbx1", "pbx2"),
        "transport": Placement("transport", "pbx3", None),
    }
    found = moves(before, after)
    assert found == [
        Move("health", "pbx1", "pbx3", "pbx2", "pbx1"),
        Move("police", "pbx2", "pbx2", "pbx3", "pbx1"),
        Move("social", "pbx3", "pbx1", "pbx1", "pbx2"),
        Move("transport", None, "pbx3", None, None),
        Move("water", "pbx2", None, None, None),
    ]
    assert describe(found) == [
        "department health: primary pbx1 -> pbx3 (standby pbx2 -> pbx1)",
        "department police: primary pbx2 (standby pbx3 -> pbx1)",
        "department social: primary pbx3 -> pbx1 (standby pbx1 -> pbx2)",
        "department transport: added, primary pbx3 (standby none)",
        "department water: removed, was primary pbx2 (standby none)",
    ]
    assert moves(after, after) == []


def test_draining_a_node_in_a_small_region_reads_as_expected() -> None:
    departments = [PoolDepartment(name, 8) for name in SERVICES]
    nodes = active("pbx1", "pbx2", "pbx3")
    before = assign(departments, nodes)
    assert before == {
        "fire": Placement("fire", "pbx3", "pbx2"),
        "health": Placement("health", "pbx1", "pbx3"),
        "police": Placement("police", "pbx1", "pbx3"),
        "social": Placement("social", "pbx2", "pbx3"),
        "transport": Placement("transport", "pbx3", "pbx1"),
    }
    after = assign(departments, with_state(nodes, "pbx1", "drain"))
    # health and police go to their standby; two nodes hold at most 3 of 5 (capacity 25 for 40 operators), so
    # transport, last of the four that now rank pbx3 first, makes room by going to pbx2.
    assert describe(moves(before, after)) == [
        "department health: primary pbx1 -> pbx3 (standby pbx3 -> pbx2)",
        "department police: primary pbx1 -> pbx3 (standby pbx3 -> pbx2)",
        "department transport: primary pbx3 -> pbx2 (standby pbx1 -> pbx3)",
    ]
