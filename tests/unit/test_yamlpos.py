"""ekc.spec.yamlpos: YAML data with the line and column of every value and key."""

from __future__ import annotations

import datetime
import time
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ekc.spec import yamlpos
from ekc.spec.yamlpos import MAX_DEPTH, Position, PositionIndex, YamlError, load_yaml

SPEC = """\
region: north
telephony:
  operators:
    - name: ada
      extension: 101
    - name: bob
      extension: 102
  ivr:
    options:
      "1": {department: sales}
      2: support
"""


def load(text: str) -> tuple[Any, PositionIndex]:
    """Load ``text`` as ``t.yaml``."""
    return load_yaml(text, "t.yaml")


def error_of(text: str) -> str:
    """The ``YamlError`` that ``text`` raises, as printed."""
    with pytest.raises(YamlError) as caught:
        load(text)
    return str(caught.value)


def test_data_is_plain_python() -> None:
    data, _ = load(SPEC)
    assert data == {
        "region": "north",
        "telephony": {
            "operators": [{"name": "ada", "extension": 101}, {"name": "bob", "extension": 102}],
            "ivr": {"options": {"1": {"department": "sales"}, 2: "support"}},
        },
    }


@pytest.mark.parametrize(
    ("path", "value", "key"),
    [
        ((), Position(1, 1), None),
        (("region",), Position(1, 9), Position(1, 1)),
        (("telephony", "operators"), Position(4, 5), Position(3, 3)),
        (("telephony", "operators", 1), Position(6, 7), None),
        (("telephony", "operators", 1, "extension"), Position(7, 18), Position(7, 7)),
        (("telephony", "ivr", "options", "1", "department"), Position(10, 25), Position(10, 13)),
        (("telephony", "ivr", "options", 2), Position(11, 10), Position(11, 7)),
    ],
)
def test_value_and_key_positions(path: tuple[str | int, ...], value: Position, key: Position | None) -> None:
    _, positions = load(SPEC)
    assert (positions.value(path), positions.key(path)) == (value, key)


@pytest.mark.parametrize(
    "path",
    [("nope",), ("telephony", "operators", 2), ("telephony", "ivr", "options", 1), ("region", "x")],
)
def test_paths_not_in_the_document_have_no_position(path: tuple[str | int, ...]) -> None:
    _, positions = load(SPEC)
    assert (positions.value(path), positions.key(path)) == (None, None)


@pytest.mark.parametrize(
    ("loc", "position", "matched"),
    [
        (("telephony", "operators", 1, "extension"), Position(7, 18), ("telephony", "operators", 1, "extension")),
        (
            ("telephony", "ivr", "options", "1", "function-after[check(), Option]", "department", "x"),
            Position(10, 25),
            ("telephony", "ivr", "options", "1", "department"),
        ),
        (("telephony", "operators", 0, "str", "name"), Position(4, 13), ("telephony", "operators", 0, "name")),
        (("telephony", "missing"), Position(3, 3), ("telephony",)),
        (("nothing", "here"), Position(1, 1), ()),
    ],
)
def test_nearest_skips_what_is_not_in_the_data(
    loc: tuple[str | int, ...], position: Position, matched: tuple[str | int, ...]
) -> None:
    _, positions = load(SPEC)
    assert positions.nearest(loc) == (position, matched)


def test_keys_keep_the_type_yaml_gives_them() -> None:
    data, positions = load("1: a\n'1': b\noff: c\n~: d\n1.5: e\n2024-05-01: f\n")
    assert data == {1: "a", "1": "b", False: "c", None: "d", 1.5: "e", datetime.date(2024, 5, 1): "f"}
    assert positions.nearest(("None",)) == (Position(4, 4), ("None",))
    assert positions.nearest(("1.5",)) == (Position(5, 6), ("1.5",))
    assert positions.key(("1",)) == Position(2, 1)


def test_duplicate_key_is_an_error() -> None:
    assert error_of("a: 1\nb:\n  c: 1\n  d: 2\n  c: 3\n") == "t.yaml:5:3: duplicate key 'c' (first at line 3)"


def test_keys_that_yaml_reads_as_equal_are_duplicates() -> None:
    assert error_of("yes: 1\non: 2\n") == "t.yaml:2:1: duplicate key 'on' (first at line 1)"


def test_syntax_error_names_line_and_column() -> None:
    assert error_of("a: 1\nb: c: d\n") == "t.yaml:2:5: mapping values are not allowed in this context"


def test_unclosed_quote_names_where_it_started() -> None:
    assert error_of("a: 1\nb: 'open\n") == (
        "t.yaml:3:1: found unexpected end of stream (while scanning a quoted scalar at line 2)"
    )


def test_tab_indentation_is_explained() -> None:
    assert error_of("a:\n\tb: 1\n") == (
        "t.yaml:2:1: found character that cannot start any token (a tab: YAML indentation must use spaces)"
    )


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_empty_file_is_an_error(text: str) -> None:
    assert error_of(text) == "t.yaml:1:1: the file is empty (no YAML document in it)"


@pytest.mark.parametrize(
    ("text", "expected", "position"),
    [("42\n", 42, Position(1, 1)), ("just text\n", "just text", Position(1, 1)), ("---\n", None, Position(2, 1))],
)
def test_a_lone_scalar_is_returned_as_data(text: str, expected: Any, position: Position) -> None:
    data, positions = load(text)
    assert (data, positions.value(())) == (expected, position)


def test_second_document_is_an_error() -> None:
    assert error_of("a: 1\n---\nb: 2\n") == "t.yaml:2:1: a second document ('---') in the file; expected one"


def test_control_character_is_located() -> None:
    assert error_of("é: 1\nb: x\x07y\n") == (
        "t.yaml:2:5: unacceptable character #x0007: control characters are not allowed"
    )


def test_alias_shares_the_anchored_value_and_its_positions() -> None:
    data, positions = load("base: &b\n  port: 5060\n  tls: {on: false}\nnode: *b\n")
    assert data["node"] is data["base"]
    assert positions.value(("node",)) == Position(4, 7)
    assert positions.key(("node",)) == Position(4, 1)
    assert positions.value(("node", "port")) == Position(2, 9)
    assert positions.key(("node", "tls", True)) == Position(3, 9)


def test_merge_key_keeps_own_keys_over_merged_and_earlier_over_later() -> None:
    text = "a: &a {x: 1, y: 1}\nb: &b {x: 2, z: {q: 2}}\nc:\n  <<: [*a, *b]\n  y: 3\n"
    data, positions = load(text)
    assert data["c"] == {"x": 1, "z": {"q": 2}, "y": 3}
    assert positions.value(("c", "x")) == Position(1, 11)
    assert positions.key(("c", "y")) == Position(5, 3)
    assert positions.value(("c", "z", "q")) == Position(2, 21)
    assert yaml.safe_load(text)["c"] == data["c"]


def test_inline_merge_mapping_is_indexed() -> None:
    data, positions = load("c:\n  <<: {x: {y: 1}}\n  z: 2\n")
    assert data == {"c": {"x": {"y": 1}, "z": 2}}
    assert positions.value(("c", "x", "y")) == Position(2, 15)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: {<<: 5}\n", "t.yaml:1:5: the value of a merge key '<<' must be a mapping or a list of mappings"),
        ("a: &a {x: 1}\nb: {<<: *a, <<: *a}\n", "t.yaml:2:13: duplicate key '<<' (first at line 2)"),
        ("a: *nowhere\n", "t.yaml:1:4: alias '*nowhere' is used before any '&nowhere' defines it"),
        ("a: &loop [1, *loop]\n", "t.yaml:1:14: alias '*loop' is inside the mapping or list it refers to"),
        ("? [a, b]\n: 1\n", "t.yaml:1:3: a mapping key must be a single value, not a list or mapping"),
        ("a: &k [1]\n*k : 2\n", "t.yaml:2:1: a mapping key must be a single value, not a list or mapping"),
        ("a: !!set {x}\n", "t.yaml:1:4: unsupported tag !!set (only plain YAML data is allowed)"),
        ("a: !Ref other\n", "t.yaml:1:4: unsupported tag !Ref (only plain YAML data is allowed)"),
        ("a: !!bool maybe\n", "t.yaml:1:4: 'maybe' is not valid as a boolean"),
        (
            "a: 2024-13-01\n",
            "t.yaml:1:4: '2024-13-01' looks like a date but is not one (month must be in 1..12); "
            "put it in quotes if it is text",
        ),
    ],
)
def test_unacceptable_documents(text: str, message: str) -> None:
    assert error_of(text) == message


def test_deep_nesting_is_refused_quickly() -> None:
    started = time.perf_counter()
    message = error_of("[" * 100_000 + "]" * 100_000)
    assert message == f"t.yaml:1:{MAX_DEPTH + 1}: nested more than {MAX_DEPTH} levels deep"
    assert time.perf_counter() - started < 1.0


def test_alias_bomb_is_refused() -> None:
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 10)}]" for n in range(1, 8)]
    assert "the document expands to more than 1000000 values" in error_of("\n".join(lines))


def test_scalars_resolve_as_safe_loader_does() -> None:
    text = (
        "- [0o17, 017, 0x1F, 1_000, -5, +7, 1:30]\n"
        "- [1.5, .inf, -.Inf, 6.02e+23, 1_0.5]\n"
        "- [~, null, '', yes, No, off, TRUE]\n"
        "- [2024-05-01, 2024-05-01 10:00:00, 2024-05-01T10:00:00+02:00]\n"
        "- [!!str 12, !!int '12', !!float 1, !!binary aGk=]\n"
        "- ['quoted', \"dq\\n\", plain text, '<<']\n"
        "- |\n  block\n"
    )
    data, _ = load(text)
    assert data == yaml.safe_load(text)


def test_lone_equals_sign_and_merge_marker_values_are_text() -> None:
    # SafeLoader fails on both ("could not determine a constructor"); as values they can only mean text.
    data, _ = load("a: =\nb: <<\n")
    assert data == {"a": "=", "b": "<<"}


def test_pure_python_parser_gives_the_same_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    with_libyaml = load(SPEC)
    monkeypatch.setattr(yamlpos, "_LOADER", yaml.SafeLoader)
    data, positions = load(SPEC)
    assert data == with_libyaml[0]
    assert positions.value(("telephony", "operators", 1, "extension")) == Position(7, 18)
    assert error_of("a: 1\nb: c: d\n").startswith("t.yaml:2:5: mapping values are not allowed")
    assert error_of("é: 1\nb: x\x07y\n").startswith("t.yaml:2:5: unacceptable character #x0007")


def test_ten_thousand_items_load_about_as_fast_as_compose() -> None:
    text = "items:\n" + "".join(f"- name: n{i}\n  port: {i}\n  enabled: true\n" for i in range(10_000))
    loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    started = time.perf_counter()
    yaml.compose(text, Loader=loader)
    composed = time.perf_counter() - started
    started = time.perf_counter()
    data, positions = load(text)
    loaded = time.perf_counter() - started
    assert positions.value(("items", 9999, "port")) == Position(30_000, 9)
    assert len(data["items"]) == 10_000
    assert loaded - composed < 1.0


yaml_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
)
yaml_keys = st.text(max_size=8) | st.integers(min_value=-1000, max_value=1000)
yaml_documents = st.recursive(
    yaml_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(yaml_keys, children, max_size=4),
    max_leaves=20,
)


def all_paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into ``data``, the root included."""
    paths = [prefix]
    children = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else []
    for key, value in children:
        paths += all_paths(value, (*prefix, key))
    return paths


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(yaml_documents, st.booleans())
def test_dumped_data_loads_back_with_a_position_for_every_path(data: Any, flow: bool) -> None:
    text = yaml.safe_dump(data, default_flow_style=flow, allow_unicode=True)
    loaded, positions = load(text)
    assert loaded == yaml.safe_load(text)
    for path in all_paths(loaded):
        position = positions.value(path)
        assert position is not None and position.line >= 1 and position.col >= 1


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list(" \t\n:-?[]{},&*!|>'\"%@`#<=~.0123456789abyéx\x00\ufeff")), max_size=60))
def test_any_text_either_loads_or_raises_yaml_error(text: str) -> None:
    try:
        load(text)
    except YamlError as error:
        assert error.position.line >= 1 and error.position.col >= 1
