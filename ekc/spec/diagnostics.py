"""Turn YAML and schema problems into ``file:line:col: dotted.path: plain message`` lines.

pydantic names data paths with its own tags mixed in (union members, ``function-after[...]``) and words its
messages for programmers ("Input should be a valid dictionary or instance of NodeSpec"). Whoever edits the
spec needs where the mistake is written and what was expected instead; this module makes that translation
once, for every command that reads a spec.

Messages:

- a missing field: ``nodes[0].address: required field is missing``, at the mapping that lacks it;
- an unknown field: ``unknown field 'adress' (expected one of: name, address; did you mean 'address'?)``,
  at the key;
- a wrong choice: ``got 'sipp'; expected 'sip' or 'web'`` (literals, enums, union tags);
- a wrong kind of value: ``expected a list, got a mapping``, ``expected text, got the number 1.1 (put it in
  quotes to make it text)``;
- a rule (``ValueError`` in a validator): its own message, without pydantic's "Value error, ".

pydantic reports one error per member of a union that did not match. Errors of the member that came closest
(fewest errors) are kept, errors landing on the same spot are merged ("expected an integer or text"), and a
"wrong kind" error is dropped when another error shows the value was read further.
"""

from __future__ import annotations

import difflib
import json
import re
import types
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence, Sized
from dataclasses import dataclass, replace
from datetime import date, datetime, time
from typing import Annotated, Any, Final, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from ekc.spec.yamlpos import Path, PathItem, Position, PositionIndex, YamlError

ROOT_PATH: Final = "(root)"
YAML_PATH: Final = "(yaml)"

_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")
_EXPECTED: Final = {
    "string_type": "text",
    "string_unicode": "text",
    "bytes_type": "text",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "decimal_type": "a number",
    "decimal_parsing": "a number",
    "bool_type": "true/false",
    "bool_parsing": "true/false",
    "list_type": "a list",
    "tuple_type": "a list",
    "set_type": "a list",
    "frozen_set_type": "a list",
    "iterable_type": "a list",
    "dict_type": "a mapping",
    "mapping_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "dataclass_type": "a mapping",
    "dataclass_exact_type": "a mapping",
    "none_required": "an empty value",
}
_CHOICE_ERRORS: Final = frozenset({"literal_error", "enum"})
_MESSAGE_PREFIXES: Final = {"value_error": "Value error, ", "assertion_error": "Assertion failed, "}
# Which error wins when several land on the same spot: a rule's own words, then structure, then choices.
_RANK_RULE, _RANK_STRUCTURE, _RANK_CHOICE, _RANK_KIND = range(4)


@dataclass(frozen=True, order=True)
class SpecError:
    """One problem in a spec file, printed as ``file:line:col: dotted.path: message``."""

    file: str
    line: int
    col: int
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.path}: {self.message}"


class SpecErrors(Exception):
    """All the problems found in a spec, in file order; raised so a command can print them and exit 2."""

    def __init__(self, errors: Iterable[SpecError]) -> None:
        self.errors: list[SpecError] = sorted(errors)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(error) for error in self.errors)


def format_path(path: Sequence[PathItem]) -> str:
    """``telephony.operators[3].extension``; keys that are not names are quoted: ``options["1"]``."""
    parts: list[str] = []
    for item in path:
        if not isinstance(item, str):
            parts.append(f"[{item}]")
        elif _IDENTIFIER.match(item):
            parts.append(f".{item}" if parts else item)
        else:
            parts.append(f"[{json.dumps(item, ensure_ascii=False)}]")
    return "".join(parts) or ROOT_PATH


def from_yaml_error(error: YamlError, file: str) -> SpecError:
    """The one line for a file that could not be read as YAML."""
    return SpecError(file, error.position.line, error.position.col, YAML_PATH, error.message)


def issue(file: str, positions: PositionIndex, path: Sequence[PathItem], message: str) -> SpecError:
    """An error found by a cross-field rule, at the value ``path`` names (or its nearest written parent)."""
    position, _ = positions.nearest(path)
    return SpecError(file, position.line, position.col, format_path(path), message)


def from_validation_error(
    error: ValidationError,
    file: str,
    positions: PositionIndex,
    data: Any,
    model: type[BaseModel] | None = None,
) -> list[SpecError]:
    """Every problem pydantic found in ``data`` (loaded from ``file``), located and reworded, in file order.

    ``model`` (the class that was validated) lets an unknown field list the fields allowed there.
    """
    findings = [_finding(details, positions, data, model) for details in error.errors(include_url=False)]
    findings = _drop_shadowed_kinds(_closest_branches(findings))
    errors = {
        SpecError(file, finding.position.line, finding.position.col, format_path(finding.path), message)
        for finding, message in _collapse(findings)
    }
    return sorted(errors)


def describe_value(value: Any) -> str:
    """What kind of YAML value ``value`` is, for "got …" in messages: ``a mapping``, ``text "abc"``."""
    if value is None:
        return "an empty value"
    for kinds, describe in _DESCRIPTIONS:
        if isinstance(value, kinds):
            return describe(value)
    return f"a value of type {type(value).__name__}"


def _describe_int(value: int) -> str:
    """``the number 5``; huge ints are not spelled out (``str()`` refuses more than 4300 digits)."""
    return f"the number {value}" if value.bit_length() <= 64 else "a very large number"


_DESCRIPTIONS: Final[tuple[tuple[type | tuple[type, ...], Callable[[Any], str]], ...]] = (
    (bool, lambda value: f"the boolean {str(value).lower()}"),
    (int, _describe_int),
    (float, lambda value: f"the number {value}"),
    (str, lambda value: f"text {json.dumps(_shorten(value), ensure_ascii=False)}"),
    (Mapping, lambda _: "a mapping"),
    ((list, tuple, set, frozenset), lambda _: "a list"),
    ((datetime, date, time), lambda value: f"the date {value.isoformat()}"),
    (bytes, lambda _: "binary data"),
)


@dataclass(frozen=True)
class _Finding:
    """One pydantic error, located in the file; ``expected`` set means the message is built when merging."""

    position: Position
    path: Path
    message: str
    rank: int
    expected: tuple[str, ...] = ()
    value: Any = None
    choice: bool = False  # "got X; expected A or B" rather than "expected a list, got X"
    branch: tuple[Path, str] | None = None  # where a union is, and which of its members this came from


def _finding(details: ErrorDetails, positions: PositionIndex, data: Any, model: type[BaseModel] | None) -> _Finding:
    """Locate one pydantic error and word it for a person."""
    loc = tuple(details["loc"])
    on_key = bool(loc) and loc[-1] == "[key]"
    if on_key or details["type"] == "invalid_key":
        return _key_finding(details, loc[:-1] if on_key else loc, positions)
    position, matched = positions.nearest(loc)
    flags = _align(loc, matched)
    branch = _branch(loc, flags, details["type"])
    structural = _structure_finding(details, loc, flags, positions=positions, data=data, model=model)
    if structural is not None:
        return replace(structural, branch=branch)
    return _value_finding(details, position, matched, branch)


def _structure_finding(
    details: ErrorDetails,
    loc: tuple[Any, ...],
    flags: list[bool],
    *,
    positions: PositionIndex,
    data: Any,
    model: type[BaseModel] | None,
) -> _Finding | None:
    """Missing and unknown fields and bad union tags, which are about the mapping rather than one value."""
    kind = details["type"]
    position, matched = positions.nearest(loc)
    if kind in ("missing", "union_tag_not_found"):
        field = loc[-1] if kind == "missing" and loc and not flags[-1] else _discriminator(details)
        path = matched if field is None else (*matched, field)
        return _Finding(position, path, "required field is missing", _RANK_STRUCTURE)
    if kind == "extra_forbidden" and loc:
        path = matched if flags[-1] else (*matched, loc[-1])
        message = _unknown_field(loc[-1], _allowed_fields(model, loc[:-1]), data, path)
        return _Finding(positions.key(path) or position, path, message, _RANK_STRUCTURE)
    if kind == "union_tag_invalid":
        return _tag_finding(details, positions, position, matched)
    return None


def _value_finding(
    details: ErrorDetails, position: Position, matched: Path, branch: tuple[Path, str] | None
) -> _Finding:
    """A value that is of the wrong kind, not one of the choices, or broke a rule."""
    kind = details["type"]
    ctx = details.get("ctx") or {}
    if kind in _CHOICE_ERRORS and "expected" in ctx:
        expected = (str(ctx["expected"]),)
        return _Finding(position, matched, "", _RANK_CHOICE, expected, details["input"], True, branch)
    if kind in _EXPECTED:
        expected = (_EXPECTED[kind],)
        return _Finding(position, matched, "", _RANK_KIND, expected, details["input"], branch=branch)
    bound = _bound_message(kind, ctx, details.get("input"))
    if bound is not None:
        return _Finding(position, matched, bound, _RANK_CHOICE, branch=branch)
    prefix = _MESSAGE_PREFIXES.get(kind)
    message = details["msg"].removeprefix(prefix) if prefix else details["msg"]
    if kind == "assertion_error":  # drop the asserted expression that may follow the message
        message = message.splitlines()[0] if message else message
    message = "; ".join(line.strip() for line in message.splitlines() if line.strip())  # one line per error
    return _Finding(position, matched, message, _RANK_RULE if prefix else _RANK_CHOICE, branch=branch)


_BOUNDS: Final = {
    "less_than_equal": ("le", "at most {}"),
    "less_than": ("lt", "less than {}"),
    "greater_than_equal": ("ge", "at least {}"),
    "greater_than": ("gt", "more than {}"),
    "too_short": ("min_length", "at least {} item(s)"),
    "too_long": ("max_length", "at most {} item(s)"),
    "string_too_short": ("min_length", "at least {} character(s)"),
    "string_too_long": ("max_length", "at most {} character(s)"),
    "string_pattern_mismatch": ("pattern", "text matching {}"),
}


def _bound_message(kind: str, ctx: Mapping[str, Any], value: Any) -> str | None:
    """``got 180; expected at most 100`` for range, length and pattern errors."""
    if kind not in _BOUNDS:
        return None
    key, wording = _BOUNDS[kind]
    if key not in ctx:
        return None
    limit = f"/{ctx[key]}/" if key == "pattern" else ctx[key]
    got = f"{len(value)} item(s)" if kind in ("too_short", "too_long") and isinstance(value, Sized) else None
    return f"got {got or describe_value(value)}; expected {wording.format(limit)}"


def _key_finding(details: ErrorDetails, loc: tuple[Any, ...], positions: PositionIndex) -> _Finding:
    """A mapping key of the wrong kind (``1:`` where a name is needed), positioned at the key."""
    position, matched = positions.nearest(loc)
    kind = details["type"]
    wanted = "text" if kind == "invalid_key" else _EXPECTED.get(kind)
    if wanted is None:
        message = details["msg"]
    else:
        message = f"expected {wanted} as key, got {describe_value(details['input'])}"
        message += _quote_hint((wanted,), details["input"])
    return _Finding(positions.key(matched) or position, matched, message, _RANK_KIND)


def _tag_finding(details: ErrorDetails, positions: PositionIndex, position: Position, matched: Path) -> _Finding:
    """A discriminator naming no member of the union: point at the discriminator's value."""
    ctx = details.get("ctx") or {}
    field = _discriminator(details)
    if field is None or "expected_tags" not in ctx:
        return _Finding(position, matched, details["msg"], _RANK_CHOICE)
    path = (*matched, field)
    expected = (" or ".join(str(ctx["expected_tags"]).rsplit(", ", 1)),)
    return _Finding(positions.value(path) or position, path, "", _RANK_CHOICE, expected, ctx.get("tag"), True)


def _discriminator(details: ErrorDetails) -> str | None:
    """The discriminator field a union-tag error names (pydantic gives it quoted: ``"'kind'"``)."""
    name = (details.get("ctx") or {}).get("discriminator")
    return str(name).strip("'") if isinstance(name, str) and name else None


def _align(loc: tuple[Any, ...], matched: Path) -> list[bool]:
    """For each element of ``loc``, whether it exists in the data (``matched`` is those, in order)."""
    flags: list[bool] = []
    next_match = 0
    for item in loc:
        found = next_match < len(matched) and matched[next_match] == item
        flags.append(found)
        next_match += found
    return flags


def _branch(loc: tuple[Any, ...], matched_flags: list[bool], kind: str) -> tuple[Path, str] | None:
    """Where the outermost union in ``loc`` is and which member it names, if ``loc`` has such a tag.

    A tag is an element missing from the data; the last element of a ``missing`` error is the absent field.
    """
    prefix: list[Any] = []
    last = len(loc) - 1
    for index, (item, found) in enumerate(zip(loc, matched_flags, strict=True)):
        if found:
            prefix.append(item)
        elif isinstance(item, str) and not (index == last and kind == "missing"):
            return tuple(prefix), item
    return None


def _closest_branches(findings: list[_Finding]) -> list[_Finding]:
    """Keep, for each union that failed, only the errors of the member(s) that came closest.

    A member that rejected the value's kind outright ("expected text, got a list") is the farthest; among
    the others, the one with the fewest errors is the closest. Ties keep every tied member.
    """
    members: dict[Path, dict[str, list[_Finding]]] = defaultdict(lambda: defaultdict(list))
    for finding in findings:
        if finding.branch is not None:
            members[finding.branch[0]][finding.branch[1]].append(finding)
    scores = {
        (where, tag): (all(_is_kind(item) and item.path == where for item in group), len(group))
        for where, tags in members.items()
        for tag, group in tags.items()
    }
    best = {where: min(scores[(where, tag)] for tag in tags) for where, tags in members.items()}
    return [
        finding for finding in findings if finding.branch is None or scores[finding.branch] == best[finding.branch[0]]
    ]


def _drop_shadowed_kinds(findings: list[_Finding]) -> list[_Finding]:
    """Drop "expected X, got Y" at a path when another error lies inside it: some member read it as it is."""
    deeper = {finding.path[:depth] for finding in findings for depth in range(len(finding.path))}
    return [finding for finding in findings if not (_is_kind(finding) and finding.path in deeper)]


def _is_kind(finding: _Finding) -> bool:
    """Whether the finding says the value is of the wrong kind (a list where text was expected…)."""
    return bool(finding.expected) and not finding.choice


def _collapse(findings: list[_Finding]) -> list[tuple[_Finding, str]]:
    """One message per spot: merge what several union members expected, else keep the most telling one."""
    spots: dict[tuple[Position, Path], list[_Finding]] = defaultdict(list)
    for finding in findings:
        spots[(finding.position, finding.path)].append(finding)
    collapsed: list[tuple[_Finding, str]] = []
    for group in spots.values():
        if all(finding.expected for finding in group):
            expected = tuple(dict.fromkeys(item for finding in group for item in finding.expected))
            merged = replace(group[0], expected=expected, choice=all(finding.choice for finding in group))
            collapsed.append((merged, _expectation(merged)))
        else:
            best = min(group, key=lambda finding: finding.rank)
            collapsed.append((best, _expectation(best) if best.expected else best.message))
    return collapsed


def _expectation(finding: _Finding) -> str:
    """``got 'x'; expected 'a' or 'b'`` for choices, ``expected a list, got a mapping`` for kinds."""
    wanted = _join_or(finding.expected)
    if finding.choice:
        given = _short_repr(finding.value) if isinstance(finding.value, str) else describe_value(finding.value)
        return f"got {given}; expected {wanted}"
    hint = _quote_hint(finding.expected, finding.value)
    return f"expected {wanted}, got {describe_value(finding.value)}{hint}"


def _quote_hint(expected: tuple[str, ...], value: Any) -> str:
    """YAML reads ``no``, ``1.10`` and ``2024-01-01`` as non-text; say how to make them text."""
    if "text" in expected and isinstance(value, bool | int | float | date):
        return " (put it in quotes to make it text)"
    return ""


def _unknown_field(name: Any, allowed: list[str] | None, data: Any, matched: Path) -> str:
    """``unknown field 'x'``, with the allowed names and the closest one not already written."""
    message = f"unknown field {_short_repr(str(name))}"
    if not allowed:
        return message
    present = _data_at(data, matched[:-1])
    unused = [field for field in allowed if not (isinstance(present, Mapping) and field in present)]
    hints = [f"expected one of: {', '.join(allowed)}"]
    close = difflib.get_close_matches(str(name), unused, n=1)
    if close:
        hints.append(f"did you mean {close[0]!r}?")
    return f"{message} ({'; '.join(hints)})"


def _allowed_fields(model: type[BaseModel] | None, loc: Sequence[Any]) -> list[str] | None:
    """Field names (aliases where declared) of the model that ``loc`` leads to; None if it cannot be told."""
    current: Any = model
    for item in loc:
        current = _step(current, item)
        if current is None:
            return None
    current = _strip(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [info.alias or name for name, info in current.model_fields.items()]
    return None


def _step(annotation: Any, item: Any) -> Any:
    """The type found under ``item`` (field, index, key or union tag) of ``annotation``; None if unknown."""
    annotation = _strip(annotation)
    if get_origin(annotation) in (Union, types.UnionType):
        return _union_member(get_args(annotation), item)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        for name, info in annotation.model_fields.items():
            if item in (name, info.alias):
                return info.annotation
        return None
    return _item_type(annotation, item)


def _item_type(annotation: Any, item: Any) -> Any:
    """The type of the items of a list, tuple, set or dict annotation; None for anything else."""
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin in (dict, Mapping) and len(args) == 2:
        return args[1]
    if not isinstance(item, int) or not args:
        return None
    if origin is tuple and args[-1] is not Ellipsis:
        return args[item] if 0 <= item < len(args) else None
    return args[0] if origin in (list, tuple, set, frozenset, Sequence) else None


def _union_member(members: Sequence[Any], tag: Any) -> Any:
    """The member of a union that pydantic's tag names: by class name or by a ``Literal`` discriminator."""
    for member in members:
        stripped = _strip(member)
        if getattr(stripped, "__name__", None) == tag:
            return stripped
        if isinstance(stripped, type) and issubclass(stripped, BaseModel):
            for info in stripped.model_fields.values():
                literal = _strip(info.annotation)
                if get_origin(literal) is Literal and tag in get_args(literal):
                    return stripped
    return None


def _strip(annotation: Any) -> Any:
    """``annotation`` without ``Annotated[...]`` and without ``| None``."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [member for member in get_args(annotation) if member is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _data_at(data: Any, path: Path) -> Any:
    """The value at ``path`` in ``data``, or None if there is none."""
    for item in path:
        in_list = isinstance(data, list) and isinstance(item, int) and 0 <= item < len(data)
        if not in_list and not (isinstance(data, Mapping) and item in data):
            return None
        data = data[item]
    return data


def _join_or(items: Sequence[str]) -> str:
    """``a``, ``a or b``, ``a, b or c``."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


def _shorten(text: str, limit: int = 40) -> str:
    """``text`` cut to ``limit`` characters, marking the cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _short_repr(text: str) -> str:
    """``'text'`` as Python quotes it, cut short when long."""
    return repr(_shorten(text))
