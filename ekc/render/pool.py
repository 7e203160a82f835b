"""Which Asterisk node serves each department of a region: a primary node, and a standby that takes over.

Placement is rendezvous (highest-random-weight) hashing: every department ranks the nodes it may use by a sha256
of the pair, and goes to the best of them that is active and has room. The ranking depends on nothing but the
department's id and the node names, so the placement is the same in whatever order the spec lists things, and a
change of one node only touches the departments that ranked it where it matters: a new node takes the departments
that now rank it first (about D/(N+1)), a node that is drained or removed gives up only its own departments.

Load is bounded ("rendezvous hashing with bounded loads"): a node takes at most
``ceil((1 + EPSILON) * total_weight / active_nodes)`` operators, so that no node carries far more than its share
because the hash happened to favour it (with ten departments a node, 1.7 times the average is not rare). The bound
trades balance for moves: adding or removing a node changes every node's capacity, and a node at its bound then
keeps or turns away one department more, which moves that department to its next node. A smaller EPSILON
balances better and moves more; with 0.25, adding a 21st node to 200 departments moves about twice the ideal
D/(N+1) primaries. Balance never makes placement fail: a department too heavy for any node goes to its best node,
and one that finds every allowed node full goes to the least loaded of them.

Departments are placed heaviest first (then by id), in rounds: in round r each department not yet placed tries the
r-th node of its ranking. A department thus keeps its best node unless the departments that also rank that node
first fill it, and a department turned away elsewhere never pushes them out. In round 0 a node that has turned away
one of these takes no lighter one either, so the cut at a crowded node is one point in the weight order: a small
change of capacity moves the cut by one department instead of reshuffling the small departments that filled the
last gap. Later rounds fill the remaining room with whatever fits.

The standby is where the department goes if its primary is drained or lost: the first node of its ranking, after
the primary is taken out, that would have room for it, judged at the capacity of one node less. Taking out the
primary promotes the next node of the ranking, the plain rendezvous standby; the room test skips that node only
when it is too crowded to take the department, a promise the plain rule would break for about 15% of a drained
node's departments on 20 nodes (and more in small regions). Room is estimated from this placement: on the new best
node, the departments ahead in the order that rank it first; on a node further down, its load after the round
before the one the department would reach it in; on either, what else the same primary would send there. So the
standby is an estimate: the tests find it right for about 96% of a drained node's departments, and for all of them
in a small region of 5 departments on 3 nodes. Standby load does not count toward capacity: it is only carried
after a failure, and the ranking spreads a failed node's departments over all the other nodes rather than onto one
neighbour. Counting it would halve the usable capacity and tie each primary to other departments' standbys, so
that every change would move more.

Costs, for D departments and N nodes: one score per (department, allowed node) pair and one sort of them per
department, O(D * N log N); at most N rounds over the departments still unplaced, O(D * N); one pass in the same
order for the standbys, O(D * N); O(D log D) to order the departments; N copies of the N loads between rounds.
Nothing is quadratic in D.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

from schemas.types import NodeState

Score = Callable[[str, str], int]

EPSILON = 0.25  # how far over its fair share (by weight) a node may be filled before departments go elsewhere


class PoolError(ValueError):
    """The departments cannot be placed: no active node at all, or none among a department's pins."""


@dataclass(frozen=True)
class PoolDepartment:
    """A department to place: ``weight`` is its load (operators, at least 1); ``pins`` the only nodes it may use.

    An empty ``pins`` means any node of the region. The spec's ``departments[].nodes`` becomes ``pins``.
    """

    id: str
    weight: int
    pins: tuple[str, ...] = ()


@dataclass(frozen=True)
class PoolNode:
    """An Asterisk node of the region. Only ``active`` nodes take departments; ``drain`` and ``absent`` get none."""

    name: str
    state: NodeState


@dataclass(frozen=True)
class Placement:
    """Where a department runs (``primary``) and where it goes if that node is drained or lost (``standby``).

    ``standby`` is None when the department has a single allowed active node: there is nowhere to fail over to.
    """

    department: str
    primary: str
    standby: str | None


@dataclass(frozen=True)
class Move:
    """A department whose primary or standby differs between two placements; None for the side it is absent from."""

    department: str
    old_primary: str | None
    new_primary: str | None
    old_standby: str | None
    new_standby: str | None


def rendezvous_score(department: str, node: str) -> int:
    """The pair's rendezvous score: sha256, not ``hash()`` (salted per process), so every run agrees on it."""
    digest = hashlib.sha256(f"{department}\0{node}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def ranked(department: str, candidates: Iterable[str], score: Score = rendezvous_score) -> list[str]:
    """The department's rendezvous order over ``candidates``: highest score first, ties broken by node name."""
    return [name for _, name in sorted((-score(department, name), name) for name in candidates)]


def capacity(total_weight: int, active_nodes: int) -> int:
    """The most load a node takes before departments go to their next node: ``ceil((1+EPSILON) * average)``.

    Computed on fractions, so that the bound is exact and no floating point rounding can move it.
    """
    return math.ceil((1 + Fraction(EPSILON)) * total_weight / active_nodes)


def assign(
    departments: Sequence[PoolDepartment], nodes: Sequence[PoolNode], *, score: Score = rendezvous_score
) -> dict[str, Placement]:
    """Each department's primary and standby node, keyed by department id (in id order).

    Raises PoolError when departments are present and no node is active, when a department's pins name no
    active node, or when a department or a node is listed twice (which would make the result order-dependent).
    ``score`` is the rendezvous score, replaceable so that a test can count how often it is computed.
    """
    states = _states(nodes)
    _check_departments(departments)
    if not departments:
        return {}
    active = sorted(name for name, state in states.items() if state == "active")
    if not active:
        listed = ", ".join(f"{name}: {state}" for name, state in sorted(states.items())) or "the region lists none"
        raise PoolError(f"cannot place {len(departments)} department(s): no node is active ({listed})")
    order = sorted(departments, key=lambda department: (-department.weight, department.id))
    rankings = {department.id: ranked(department.id, _allowed(department, active, states), score)
                for department in order}
    total = sum(department.weight for department in order)
    primary, after_round = _place(order, rankings, active, capacity(total, len(active)))
    standby: dict[str, str | None] = dict.fromkeys(primary)
    if len(active) > 1:
        standby = _standbys(order, rankings, primary, after_round, capacity(total, len(active) - 1))
    return {department: Placement(department, primary[department], standby[department])
            for department in sorted(primary)}


def loads(placements: Mapping[str, Placement], departments: Iterable[PoolDepartment]) -> dict[str, int]:
    """The primary load (sum of weights) that ``placements`` puts on each node serving a department."""
    weight = {department.id: department.weight for department in departments}
    carried: dict[str, int] = {}
    for placement in placements.values():
        carried[placement.primary] = carried.get(placement.primary, 0) + weight[placement.department]
    return dict(sorted(carried.items()))


def moves(before: Mapping[str, Placement], after: Mapping[str, Placement]) -> list[Move]:
    """Every department whose primary or standby changes from ``before`` to ``after``, sorted by department id.

    A department only in ``after`` is new (its old nodes None); one only in ``before`` is removed (new nodes None).
    """
    found: list[Move] = []
    for department in sorted(before.keys() | after.keys()):
        old, new = before.get(department), after.get(department)
        move = Move(department, old.primary if old else None, new.primary if new else None,
                    old.standby if old else None, new.standby if new else None)
        if (move.old_primary, move.old_standby) != (move.new_primary, move.new_standby):
            found.append(move)
    return found


def describe(changes: Iterable[Move]) -> list[str]:
    """One plain-English line per move, for a plan or a change report.

    ``department health: primary pbx1 -> pbx3 (standby pbx2 -> pbx1)``; a node that does not change is named
    once (``primary pbx1 (standby pbx2 -> pbx3)``), a missing standby is ``none``.
    """
    lines: list[str] = []
    for move in changes:
        if move.old_primary is None:
            lines.append(f"department {move.department}: added, primary {move.new_primary} "
                         f"(standby {_name(move.new_standby)})")
        elif move.new_primary is None:
            lines.append(f"department {move.department}: removed, was primary {move.old_primary} "
                         f"(standby {_name(move.old_standby)})")
        else:
            lines.append(f"department {move.department}: primary {_change(move.old_primary, move.new_primary)} "
                         f"(standby {_change(move.old_standby, move.new_standby)})")
    return lines


def _change(old: str | None, new: str | None) -> str:
    return _name(new) if old == new else f"{_name(old)} -> {_name(new)}"


def _name(node: str | None) -> str:
    return "none" if node is None else node


def _place(
    order: Sequence[PoolDepartment], rankings: Mapping[str, Sequence[str]], active: Sequence[str], limit: int
) -> tuple[dict[str, str], list[dict[str, int]]]:
    """Each department's primary, and every node's load after each round (which the standbys are judged by).

    Round r offers each department still unplaced the r-th node of its ranking, heaviest department first; in
    round 0 a node that turned one away takes no lighter one (see the module's docstring). A department heavier
    than ``limit`` takes its best node in round 0: no node can hold it within bounds, so the ranking decides, which
    keeps it where it is. What no round places goes to its least loaded allowed node (first in its ranking among
    equals), which keeps a node's excess to at most that one department.
    """
    load = dict.fromkeys(active, 0)
    primary: dict[str, str] = {}
    after_round: list[dict[str, int]] = []
    waiting = list(order)
    for round_ in range(len(active)):
        if not waiting:
            break
        closed: set[str] = set()  # round 0: nodes that turned away a department that ranks them first
        left: list[PoolDepartment] = []
        for department in waiting:
            ranking = rankings[department.id]
            if round_ >= len(ranking):
                left.append(department)
                continue
            node = ranking[round_]
            heavy = round_ == 0 and department.weight > limit
            if heavy or (node not in closed and load[node] + department.weight <= limit):
                load[node] += department.weight
                primary[department.id] = node
            else:
                if round_ == 0:
                    closed.add(node)
                left.append(department)
        waiting = left
        after_round.append(dict(load))
    for department in waiting:
        node = _least_loaded(rankings[department.id], load)
        load[node] += department.weight
        primary[department.id] = node
    after_round.append(dict(load))
    return primary, after_round


def _standbys(
    order: Sequence[PoolDepartment],
    rankings: Mapping[str, Sequence[str]],
    primary: Mapping[str, str],
    after_round: Sequence[Mapping[str, int]],
    limit: int,
) -> dict[str, str | None]:
    """Each department's standby: the node it would go to if its primary were gone, as well as this placement tells.

    Without its primary, a department walks the rest of its ranking with the capacity of one node less
    (``limit``). Its new best node it reaches in round 0, behind that node's own first-choice departments that
    come earlier in the order (simulated here at ``limit``) and the earlier departments of the same primary
    heading for it; a node further down it reaches in a later round, behind that node's load after the round
    before plus all those departments of the same primary. The first node with room is the standby; if none has
    room, the least loaded, as in the placement.
    """
    pairs: dict[tuple[str, str], int] = {}  # load by (best node, second node): what a best node sends to the second
    for department in order:
        ranking = rankings[department.id]
        if len(ranking) > 1:
            pairs[ranking[0], ranking[1]] = pairs.get((ranking[0], ranking[1]), 0) + department.weight
    native: dict[str, int] = {}  # round 0 at ``limit``: first-choice load taken so far
    closed: set[str] = set()
    earlier: dict[tuple[str, str], int] = {}  # like ``pairs``, for the departments passed so far
    standby: dict[str, str | None] = {}
    final = after_round[-1]
    for department in order:
        ranking, weight, own = rankings[department.id], department.weight, primary[department.id]
        rest = [node for node in ranking if node != own]
        choice = rest[0] if rest else None
        if rest and weight <= limit:
            choice = _least_loaded(rest, final)
            for at, node in enumerate(rest):
                if at == 0:
                    ahead = limit + 1 if node in closed else native.get(node, 0) + earlier.get((own, node), 0)
                else:
                    ahead = after_round[min(at - 1, len(after_round) - 1)][node] + pairs.get((own, node), 0)
                if ahead + weight <= limit:
                    choice = node
                    break
        standby[department.id] = choice
        best = ranking[0]
        if len(ranking) > 1:
            earlier[best, ranking[1]] = earlier.get((best, ranking[1]), 0) + weight
        if weight > limit or (best not in closed and native.get(best, 0) + weight <= limit):
            native[best] = native.get(best, 0) + weight
        else:
            closed.add(best)
    return standby


def _least_loaded(ranking: Sequence[str], load: Mapping[str, int]) -> str:
    """The node of ``ranking`` with the least load, the better ranked among equals."""
    return ranking[min(range(len(ranking)), key=lambda at: (load[ranking[at]], at))]


def _allowed(department: PoolDepartment, active: Sequence[str], states: Mapping[str, NodeState]) -> list[str]:
    """The active nodes the department may use: all of them, or those of its pins that are active."""
    if not department.pins:
        return list(active)
    allowed = sorted({pin for pin in department.pins if states.get(pin) == "active"})
    if not allowed:
        pins = ", ".join(f"{pin} ({states.get(pin, 'not in the region')})" for pin in sorted(set(department.pins)))
        raise PoolError(f"department {department.id} is pinned to {pins}: none of these nodes is active")
    return allowed


def _states(nodes: Iterable[PoolNode]) -> dict[str, NodeState]:
    states: dict[str, NodeState] = {}
    for node in nodes:
        if node.name in states:
            raise PoolError(f"node {node.name} is listed twice")
        states[node.name] = node.state
    return states


def _check_departments(departments: Iterable[PoolDepartment]) -> None:
    seen: set[str] = set()
    for department in departments:
        if department.id in seen:
            raise PoolError(f"department {department.id} is listed twice")
        if department.weight < 1:
            raise PoolError(f"department {department.id} has weight {department.weight}: it must be at least 1")
        seen.add(department.id)
