"""Property tests: no mutation of a real spec ever produces a traceback, only SpecErrors or a valid Region."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ekc.spec.diagnostics import SpecError, SpecErrors
from ekc.spec.load import parse_region
from schemas.region import Region

REPO = Path(__file__).resolve().parents[2]
BASE_TEXT = (REPO / "inventories" / "small" / "region.yml").read_text(encoding="utf-8")
BASE = yaml.safe_load(BASE_TEXT)

ODD_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
    st.text(max_size=12), st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.none(), max_size=2),
    st.sampled_from(["", "10.99.0.300", "0.0.0.0", "always", "mon-fri", "25:00-26:00", "*", "2027-02-30", "ru"]),
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


PATHS = _paths(BASE)


def _mutate(data: Any, path: tuple[Any, ...], action: str, value: Any) -> Any:
    mutated = copy.deepcopy(data)
    parent = mutated
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    if action == "delete":
        del parent[last]
    elif action == "replace":
        parent[last] = value
    elif action == "rename" and isinstance(parent, dict):
        parent[f"{last}x"] = parent.pop(last)
    elif action == "duplicate" and isinstance(parent, list):
        parent.append(copy.deepcopy(parent[last]))
    return mutated


def _check(text: str) -> None:
    try:
        region = parse_region(text, "region.yml")
    except SpecErrors as exc:
        assert exc.errors, "SpecErrors without errors"
        assert all(isinstance(e, SpecError) and e.line >= 1 and e.col >= 1 for e in exc.errors)
        assert [e.line for e in exc.errors] == sorted(e.line for e in exc.errors)
    else:
        assert isinstance(region, Region)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    mutations=st.lists(
        st.tuples(st.sampled_from(PATHS), st.sampled_from(["delete", "replace", "rename", "duplicate"]), ODD_VALUES),
        min_size=1, max_size=4,
    )
)
def test_mutated_specs_never_raise_anything_but_spec_errors(mutations: list[tuple[Any, str, Any]]) -> None:
    data = BASE
    for path, action, value in mutations:
        try:
            data = _mutate(data, path, action, value)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed this path
    _check(yaml.safe_dump(data, allow_unicode=True))


@settings(max_examples=300, deadline=None)
@given(cuts=st.lists(st.tuples(st.integers(0, len(BASE_TEXT)), st.integers(0, 8), st.text(max_size=4)), max_size=3))
def test_mangled_text_never_raises_anything_but_spec_errors(cuts: list[tuple[int, int, str]]) -> None:
    text = BASE_TEXT
    for start, length, insert in cuts:
        text = text[:start] + insert + text[start + length :]
    _check(text)
