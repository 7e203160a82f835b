"""ekc.spec.diagnostics: pydantic and YAML problems as ``file:line:col: dotted.path: plain message``."""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from ekc.spec.diagnostics import (
    SpecError,
    SpecErrors,
    describe_value,
    format_path,
    from_validation_error,
    from_yaml_error,
    issue,
)
from ekc.spec.yamlpos import YamlError, load_yaml


class Strict(BaseModel):
    """Every model here refuses unknown keys, as the region schema does."""

    model_config = ConfigDict(extra="forbid")


class Address(Strict):
    host: str
    port: int = 5060


class SipNode(Strict):
    kind: Literal["sip"]
    name: str
    address: Address
    codecs: list[str] = []


class WebNode(Strict):
    kind: Literal["web"]
    name: str
    url: str


class Department(enum.Enum):
    SALES = "sales"
    SUPPORT = "support"


class Option(Strict):
    department: Department
    priority: int = 0

    @field_validator("priority")
    @classmethod
    def priority_is_small(cls, value: int) -> int:
        assert value < 10, "priority must be below 10"
        return value


class Ivr(Strict):
    greeting: str
    options: dict[str, Option] = {}


class Region(Strict):
    api_version: Literal["ekc/v1"] = Field(alias="apiVersion")
    name: str
    enabled: bool = True
    nodes: list[Annotated[SipNode | WebNode, Field(discriminator="kind")]] = []
    ivr: Ivr | None = None
    timeout: int | str = 30

    @field_validator("name")
    @classmethod
    def name_is_lower_case(cls, value: str) -> str:
        if value != value.lower():
            raise ValueError("must be lower case")
        return value

    @model_validator(mode="after")
    def node_names_are_unique(self) -> Region:
        names = [node.name for node in self.nodes]
        if len(set(names)) != len(names):
            raise PydanticCustomError("duplicate_node", "node names must be unique")
        return self


class Alpha(Strict):
    kind: Literal["alpha"]
    size: int


class Beta(Strict):
    kind: Literal["beta"]
    label: str


class Loose(Strict):
    """A plain (not discriminated) union, which pydantic reports member by member."""

    items: list[Alpha | Beta] = []
    sub: Alpha | str = "none"
    ports: list[int] | str = "any"


VALID = """\
apiVersion: ekc/v1
name: north
nodes:
  - kind: sip
    name: pbx1
    address: {host: 10.0.0.1}
    codecs: [opus, g722]
  - kind: web
    name: portal
    url: https://example.org
ivr:
  greeting: hello
  options:
    "1": {department: sales}
    "2": {department: support, priority: 2}
timeout: 30
"""


def errors_for(text: str, model: type[BaseModel] = Region) -> list[str]:
    """The lines printed for ``text`` validated against ``model``; [] if it is valid."""
    data, positions = load_yaml(text, "r.yaml")
    try:
        model.model_validate(data)
    except ValidationError as error:
        return [str(line) for line in from_validation_error(error, "r.yaml", positions, data, model)]
    return []


def test_valid_spec_has_no_errors() -> None:
    assert errors_for(VALID) == []


def test_three_mistakes_give_three_lines_in_file_order() -> None:
    text = VALID.replace("timeout: 30", "timeout: [30]").replace("name: north", "name: North")
    text = text.replace("host: 10.0.0.1}", "host: 10.0.0.1, port: five}")
    assert errors_for(text) == [
        "r.yaml:2:7: name: must be lower case",
        'r.yaml:6:37: nodes[0].address.port: expected an integer, got text "five"',
        "r.yaml:16:10: timeout: expected an integer or text, got a list",
    ]


def test_misspelt_field_is_both_unknown_and_missing() -> None:
    assert errors_for(VALID.replace("host: 10.0.0.1", "hots: 10.0.0.1")) == [
        "r.yaml:6:14: nodes[0].address.host: required field is missing",
        "r.yaml:6:15: nodes[0].address.hots: unknown field 'hots' (expected one of: host, port; did you mean 'host'?)",
    ]


def test_missing_field_points_at_the_mapping_that_lacks_it() -> None:
    text = "apiVersion: ekc/v1\nname: north\nnodes:\n  - kind: web\n    name: portal\n"
    assert errors_for(text) == ["r.yaml:4:5: nodes[0].url: required field is missing"]


def test_missing_top_level_field_points_at_the_root() -> None:
    assert errors_for("name: north\n") == ["r.yaml:1:1: apiVersion: required field is missing"]


def test_unknown_field_lists_aliases_and_skips_names_already_written() -> None:
    text = "apiVersion: ekc/v1\nname: north\napiVersoin: x\nnmae: y\n"
    assert errors_for(text) == [
        "r.yaml:3:1: apiVersoin: unknown field 'apiVersoin' "
        "(expected one of: apiVersion, name, enabled, nodes, ivr, timeout)",
        "r.yaml:4:1: nmae: unknown field 'nmae' (expected one of: apiVersion, name, enabled, nodes, ivr, timeout)",
    ]


def test_unknown_field_inside_a_dict_of_models() -> None:
    text = "apiVersion: ekc/v1\nname: n\nivr:\n  greeting: hi\n  options:\n    mon-fri: {department: sales, prio: 1}\n"
    assert errors_for(text) == [
        "r.yaml:6:34: ivr.options.mon-fri.prio: unknown field 'prio' "
        "(expected one of: department, priority; did you mean 'priority'?)"
    ]


def test_unknown_field_without_a_model_names_only_the_field() -> None:
    text = "apiVersion: ekc/v1\nname: n\ncolour: red\n"
    data, positions = load_yaml(text, "r.yaml")
    with pytest.raises(ValidationError) as caught:
        Region.model_validate(data)
    assert [str(line) for line in from_validation_error(caught.value, "r.yaml", positions, data)] == [
        "r.yaml:3:1: colour: unknown field 'colour'"
    ]


def test_choices_say_what_was_given_and_what_is_allowed() -> None:
    text = 'apiVersion: ekc/v2\nname: n\nivr:\n  greeting: hi\n  options:\n    "1": {department: billing}\n'
    assert errors_for(text) == [
        "r.yaml:1:13: apiVersion: got 'ekc/v2'; expected 'ekc/v1'",
        """r.yaml:6:23: ivr.options["1"].department: got 'billing'; expected 'sales' or 'support'""",
    ]


def test_unknown_discriminator_points_at_its_value() -> None:
    text = "apiVersion: ekc/v1\nname: n\nnodes:\n  - {kind: sipp, name: a}\n  - {name: b}\n"
    assert errors_for(text) == [
        "r.yaml:4:12: nodes[0].kind: got 'sipp'; expected 'sip' or 'web'",
        "r.yaml:5:5: nodes[1].kind: required field is missing",
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("enabled: maybe", 'r.yaml:3:10: enabled: expected true/false, got text "maybe"'),
        ("nodes: {a: 1}", "r.yaml:3:8: nodes: expected a list, got a mapping"),
        ("ivr: hello", 'r.yaml:3:6: ivr: expected a mapping, got text "hello"'),
        ("ivr: {}", "r.yaml:3:6: ivr.greeting: required field is missing"),
        ("timeout: {}", "r.yaml:3:10: timeout: expected an integer or text, got a mapping"),
    ],
)
def test_wrong_kind_of_value(line: str, message: str) -> None:
    assert errors_for(f"apiVersion: ekc/v1\nname: n\n{line}\n") == [message]


def test_null_where_a_mapping_is_needed() -> None:
    assert errors_for("apiVersion: ekc/v1\nname: n\nnodes:\n  -\n") == [
        "r.yaml:4:4: nodes[0]: expected a mapping, got an empty value"
    ]


def test_non_text_where_text_is_needed_suggests_quotes() -> None:
    text = "apiVersion: ekc/v1\nname: n\nnodes:\n  - {kind: web, name: no, url: 2024-01-01}\n"
    assert errors_for(text) == [
        "r.yaml:4:23: nodes[0].name: expected text, got the boolean false (put it in quotes to make it text)",
        "r.yaml:4:32: nodes[0].url: expected text, got the date 2024-01-01 (put it in quotes to make it text)",
    ]


def test_rule_messages_lose_pydantic_prefixes() -> None:
    text = (
        "apiVersion: ekc/v1\nname: n\nivr:\n  greeting: hi\n  options:\n"
        '    "1": {department: sales, priority: 12}\n'
        "nodes:\n  - {kind: web, name: a, url: x}\n  - {kind: web, name: a, url: y}\n"
    )
    assert errors_for(text) == [
        """r.yaml:6:40: ivr.options["1"].priority: priority must be below 10""",
    ]
    assert errors_for(text.replace("priority: 12", "priority: 1")) == ["r.yaml:1:1: (root): node names must be unique"]


def test_keys_of_the_wrong_kind_point_at_the_key() -> None:
    text = "apiVersion: ekc/v1\nname: n\nivr:\n  greeting: hi\n  options:\n    1: {department: sales}\n"
    assert errors_for(text) == [
        "r.yaml:6:5: ivr.options[1]: expected text as key, got the number 1 (put it in quotes to make it text)"
    ]
    assert errors_for("apiVersion: ekc/v1\nname: n\n~: 1\n") == [
        "r.yaml:3:1: None: expected text as key, got an empty value"
    ]


def test_plain_union_reports_the_member_that_came_closest() -> None:
    text = "items:\n  - {kind: beta, label: 5}\nsub: {kind: alpha, size: 1, colour: red}\n"
    assert errors_for(text, Loose) == [
        "r.yaml:2:25: items[0].label: expected text, got the number 5 (put it in quotes to make it text)",
        "r.yaml:3:29: sub.colour: unknown field 'colour' (expected one of: kind, size)",
    ]


def test_plain_union_prefers_the_member_that_accepted_the_kind_of_value() -> None:
    assert errors_for("ports: [1, a, b]\n", Loose) == [
        'r.yaml:1:12: ports[1]: expected an integer, got text "a"',
        'r.yaml:1:15: ports[2]: expected an integer, got text "b"',
    ]
    assert errors_for("ports: {a: 1}\n", Loose) == ["r.yaml:1:8: ports: expected a list or text, got a mapping"]


def test_plain_union_merges_the_choices_of_tied_members() -> None:
    assert errors_for("items:\n  - {kind: gamma}\n", Loose) == [
        "r.yaml:2:5: items[0].label: required field is missing",
        "r.yaml:2:5: items[0].size: required field is missing",
        "r.yaml:2:12: items[0].kind: got 'gamma'; expected 'alpha' or 'beta'",
    ]


def test_errors_inside_an_alias_point_at_the_anchored_text() -> None:
    text = (
        "apiVersion: ekc/v1\nname: n\nnodes:\n  - &web {kind: web, name: a, url: 1}\n"
        "  - <<: *web\n    name: b\n    urll: x\n"
    )
    assert errors_for(text) == [
        "r.yaml:4:36: nodes[0].url: expected text, got the number 1 (put it in quotes to make it text)",
        "r.yaml:4:36: nodes[1].url: expected text, got the number 1 (put it in quotes to make it text)",
        "r.yaml:7:5: nodes[1].urll: unknown field 'urll' (expected one of: kind, name, url)",
    ]


def test_yaml_error_becomes_one_line() -> None:
    with pytest.raises(YamlError) as caught:
        load_yaml("a: 1\na: 2\n", "r.yaml")
    assert str(from_yaml_error(caught.value, "r.yaml")) == "r.yaml:2:1: (yaml): duplicate key 'a' (first at line 1)"


def test_issue_points_at_the_value_or_its_nearest_parent() -> None:
    _, positions = load_yaml(VALID, "r.yaml")
    assert str(issue("r.yaml", positions, ("nodes", 1, "url"), "must be https")) == (
        "r.yaml:10:10: nodes[1].url: must be https"
    )
    assert str(issue("r.yaml", positions, ("ivr", "options", "3", "department"), "no such option")) == (
        """r.yaml:14:5: ivr.options["3"].department: no such option"""
    )


@pytest.mark.parametrize(
    ("path", "shown"),
    [
        ((), "(root)"),
        (("telephony", "operators", 3, "extension"), "telephony.operators[3].extension"),
        (("ivr", "options", "1"), 'ivr.options["1"]'),
        (("hours", "mon-fri", "open_at"), "hours.mon-fri.open_at"),
        (("labels", "a.b", "c d"), 'labels["a.b"]["c d"]'),
        ((0, "name"), "[0].name"),
    ],
)
def test_format_path(path: tuple[str | int, ...], shown: str) -> None:
    assert format_path(path) == shown


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, "an empty value"),
        (True, "the boolean true"),
        (7, "the number 7"),
        (2**200, "a very large number"),
        (1.5, "the number 1.5"),
        ("x" * 50, f'text "{"x" * 39}…"'),
        ({}, "a mapping"),
        ([], "a list"),
        (b"hi", "binary data"),
    ],
)
def test_describe_value(value: Any, shown: str) -> None:
    assert describe_value(value) == shown


def test_spec_errors_sort_by_file_then_position() -> None:
    late = SpecError("b.yaml", 1, 1, "x", "late file")
    second = SpecError("a.yaml", 10, 2, "y", "second")
    first = SpecError("a.yaml", 2, 30, "z", "first")
    errors = SpecErrors([late, second, first])
    assert errors.errors == [first, second, late]
    assert str(errors) == "a.yaml:2:30: z: first\na.yaml:10:2: y: second\nb.yaml:1:1: x: late file"


def mutate(text: str, draw: st.DrawFn) -> str:
    """``text`` with a few characters inserted, deleted or lines repeated, as a careless edit would."""
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.integers(0, len(text)))
        action = draw(st.sampled_from(["insert", "delete", "repeat-line"]))
        if action == "insert":
            text = (
                text[:where]
                + draw(st.text(alphabet=" \t\n:-[]{},&*!#|>'\"?~<.0123456789ayzé", max_size=6))
                + text[where:]
            )
        elif action == "delete":
            text = text[:where] + text[where + draw(st.integers(1, 12)) :]
        else:
            lines = text.splitlines(keepends=True) or [""]
            index = where % len(lines)
            text = "".join([*lines[: index + 1], *lines[index:]])
    return text


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6) | st.dates(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6) | st.integers(), children, max_size=3)
    ),
    max_leaves=8,
)


def replace_somewhere(data: Any, draw: st.DrawFn) -> Any:
    """``data`` with one value, somewhere inside it, swapped for an arbitrary one."""
    if isinstance(data, dict) and data and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(data, key=str)))
        return {**data, key: replace_somewhere(data[key], draw)}
    if isinstance(data, list) and data and draw(st.booleans()):
        index = draw(st.integers(0, len(data) - 1))
        return [*data[:index], replace_somewhere(data[index], draw), *data[index + 1 :]]
    return draw(yaml_values)


@st.composite
def spec_texts(draw: st.DrawFn) -> str:
    """A random text, a careless edit of a valid spec, or a valid spec with one value replaced."""
    kind = draw(st.sampled_from(["random", "edit", "replace"]))
    if kind == "random":
        return draw(st.text(max_size=80))
    if kind == "edit":
        return mutate(VALID, draw)
    return yaml.safe_dump(replace_somewhere(yaml.safe_load(VALID), draw), allow_unicode=True)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec_texts(), st.sampled_from([Region, Loose]))
def test_any_text_gives_a_yaml_error_or_spec_errors(text: str, model: type[BaseModel]) -> None:
    try:
        data, positions = load_yaml(text, "r.yaml")
    except YamlError as error:
        line = from_yaml_error(error, "r.yaml")
        assert line.line >= 1 and line.col >= 1 and str(line).startswith("r.yaml:")
        return
    try:
        model.model_validate(data)
    except ValidationError as error:
        errors = from_validation_error(error, "r.yaml", positions, data, model)
        assert errors and errors == sorted(errors)
        assert all(e.line >= 1 and e.col >= 1 and "[key]" not in e.path for e in errors)
        assert str(SpecErrors(errors))
