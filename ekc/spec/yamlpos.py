"""Load one YAML document as plain data and remember where every value and every key was written.

pydantic reports a problem by data path (``("nodes", 0, "address")``) and PyYAML forgets line numbers once it
has built Python objects, so neither alone can say ``spec.yaml:12:5``. This module reads the parser's event
stream itself and records the 1-based position of each value and each mapping key under its data path. Reading
events (not ``yaml.compose``) keeps the work iterative: libyaml's composer recurses in C and crashes the
interpreter on deeply nested input, and it is also slower than the event loop here.

What is accepted, and why:

- plain data only: mappings, lists and the YAML 1.1 scalars SafeLoader resolves (null, bool, int, float, text,
  timestamp, binary). Other tags (``!!set``, ``!!omap``, ``!Ref``) are rejected: a spec never needs them.
- keys are kept as YAML resolves them (``1:`` is the int 1, ``on:`` is True) so the schema can complain
  about them; keys must be single values, and a key written twice in one mapping is an error (PyYAML keeps
  the last).
- anchors and aliases work; an alias shares the anchored object, as in PyYAML. The alias itself is positioned
  where ``*name`` is written; anything inside it is positioned in the anchored text, where a fix would go.
- merge keys work as in YAML 1.1 (``<<: *base`` or ``<<: [*a, *b]``): keys written in the mapping win over
  merged ones and earlier merged mappings win over later ones. A second ``<<`` in one mapping is a duplicate
  key.
- limits against hostile input: at most ``MAX_DEPTH`` levels of nesting and ``MAX_VALUES`` values once aliases
  are expanded (an alias "bomb" would otherwise hang validation).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple, TypeAlias

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import ScalarNode
from yaml.resolver import Resolver

PathItem: TypeAlias = str | int
Path: TypeAlias = tuple[PathItem, ...]
# Internal paths hold keys as loaded (any scalar: None, float, date…), list indices and merge slots.
_Where: TypeAlias = tuple[Any, ...]

MAX_DEPTH: Final = 100
MAX_VALUES: Final = 1_000_000

_TAG: Final = "tag:yaml.org,2002:"
_MAP_TAG: Final = _TAG + "map"
_SEQ_TAG: Final = _TAG + "seq"
_MERGE_TAG: Final = _TAG + "merge"
_STR_TAG: Final = _TAG + "str"
# "=" resolves to !!value and a lone "<<" value to !!merge; SafeLoader fails on both, we read them as text.
_TEXT_TAGS: Final = frozenset({_STR_TAG, _TAG + "value", _MERGE_TAG})
_SCALAR_KINDS: Final = {
    _TAG + "null": "null",
    _TAG + "bool": "a boolean",
    _TAG + "int": "an integer",
    _TAG + "float": "a number",
    _TAG + "timestamp": "a date",
    _TAG + "binary": "base64 binary data",
}
_LINE_BREAK: Final = re.compile("\r\n|[\r\n\x85\u2028\u2029]")
_CONSTRUCTOR: Final = SafeConstructor()
_RESOLVER: Final = Resolver()
_LOADER: Final[Callable[[str], Any]] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_NO_KEY: Final = object()
_MERGE_SLOT: Final = object()  # path element under which a merge key's value is indexed


class Position(NamedTuple):
    """1-based line and column of the first character of a node."""

    line: int
    col: int


class YamlError(Exception):
    """The text is not one well-formed YAML document of plain data; ``message`` says why in plain words."""

    def __init__(self, position: Position, message: str, filename: str = "") -> None:
        self.position = position
        self.message = message
        self.filename = filename
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.filename}:" if self.filename else ""
        return f"{where}{self.position.line}:{self.position.col}: {self.message}"


class PositionIndex:
    """Where each value and key of a loaded document was written, looked up by data path.

    A path is a tuple of mapping keys (as loaded) and list indices, e.g. ``("nodes", 3, "address")``.
    """

    def __init__(self) -> None:
        self._values: dict[_Where, Position] = {}
        self._keys: dict[_Where, Position] = {}
        # An alias or merged entry is indexed once where it was written; its children are found there.
        self._links: dict[_Where, _Where] = {}
        # Keys that are neither text nor int, by their text: pydantic reports ``None:`` as "None".
        self._odd_keys: dict[_Where, dict[str, Any]] = {}

    def value(self, path: Sequence[PathItem]) -> Position | None:
        """Position of the value at ``path``, or None if the document has no such path."""
        where = self._find(path)
        return None if where is None else self._values[where]

    def key(self, path: Sequence[PathItem]) -> Position | None:
        """Position of the key of the mapping entry at ``path``; None for list items, the root or no path."""
        where = self._find(path)
        return None if where is None else self._keys.get(where)

    def nearest(self, path: Sequence[PathItem]) -> tuple[Position, Path]:
        """Position of the deepest value along ``path``, and the part of ``path`` that led there.

        Elements that do not exist at their level are skipped and the walk goes on with the next one:
        pydantic puts union tags and validator names (``"str"``, ``"function-after[...]"``) into ``loc``.
        """
        where: _Where = ()
        matched: list[PathItem] = []
        for item in path:
            child = self._child(where, item)
            if child is not None:
                where = child
                matched.append(item)
        return self._values.get(where, Position(1, 1)), tuple(matched)

    def _find(self, path: Sequence[PathItem]) -> _Where | None:
        """The indexed path for ``path`` if every element exists."""
        where: _Where | None = ()
        for item in path:
            if where is None:
                return None
            where = self._child(where, item)
        return where if where in self._values else None

    def _child(self, where: _Where, item: Any) -> _Where | None:
        """The indexed path of ``item`` under ``where``, following aliases and merges."""
        base = self._links.get(where, where)
        candidate = (*base, item)
        if candidate in self._values:
            return candidate
        odd = self._odd_keys.get(base)
        if odd is not None and isinstance(item, str) and item in odd:
            return (*base, odd[item])
        return None


def load_yaml(text: str, filename: str) -> tuple[Any, PositionIndex]:
    """Read ``text`` as one YAML document: its plain data and where each part of it was written.

    Raises ``YamlError`` (never anything else) when the text is not acceptable; see the module docstring.
    ``filename`` only labels the error.
    """
    reader = _Reader(text)
    try:
        data = reader.read()
    except YamlError as exc:
        raise YamlError(exc.position, exc.message, filename) from None
    return data, reader.index


@dataclass(slots=True)
class _Open:
    """A mapping or list whose end has not been read yet."""

    data: dict[Any, Any] | list[Any]
    where: _Where
    anchor: str | None
    counted: int  # values read before this one's children
    key: Any = _NO_KEY  # a mapping's key waiting for its value
    merge_at: Position | None = None  # where its ``<<`` key is
    merge: tuple[_Where, Any] | None = None  # where the ``<<`` value is indexed, and the value


@dataclass(frozen=True, slots=True)
class _Anchor:
    """What ``&name`` stands for, where it was indexed, and how many values it expands to."""

    value: Any
    where: _Where
    size: int


class _Reader:
    """Builds the data and the index from the event stream, one event at a time."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.index = PositionIndex()
        self.values = self.index._values
        self.keys = self.index._keys
        self.links = self.index._links
        self.stack: list[_Open] = []
        self.anchors: dict[str, _Anchor | None] = {}  # None: the anchored collection is still open
        self.count = 0
        self.documents = 0
        self.root: Any = None
        self.plain_tags: dict[str, str] = {}
        self.handlers: dict[type[yaml.Event], Callable[[Any], None]] = {
            yaml.ScalarEvent: self.on_scalar,
            yaml.AliasEvent: self.on_alias,
            yaml.MappingStartEvent: self.on_mapping_start,
            yaml.SequenceStartEvent: self.on_sequence_start,
            yaml.MappingEndEvent: self.on_end,
            yaml.SequenceEndEvent: self.on_end,
            yaml.DocumentStartEvent: self.on_document_start,
        }

    def read(self) -> Any:
        """Consume the whole stream and return the document's data."""
        parser = self._parser()
        try:
            event = self._next(parser)
            while not isinstance(event, yaml.StreamEndEvent):
                handler = self.handlers.get(type(event))
                if handler is not None:
                    handler(event)
                event = self._next(parser)
        finally:
            parser.dispose()
        if not self.documents:
            raise YamlError(Position(1, 1), "the file is empty (no YAML document in it)")
        return self.root

    def _parser(self) -> Any:
        """A libyaml parser (pure-Python SafeLoader when PyYAML was built without it)."""
        try:
            return _LOADER(self.text)
        except (yaml.YAMLError, UnicodeError) as exc:
            raise _parser_error(exc, self.text) from None

    def _next(self, parser: Any) -> yaml.Event:
        """The next event, with the parser's complaints turned into ``YamlError``."""
        try:
            event: yaml.Event = parser.get_event()
        except (yaml.YAMLError, UnicodeError) as exc:
            raise _parser_error(exc, self.text) from None
        return event

    def on_document_start(self, event: yaml.DocumentStartEvent) -> None:
        """Allow exactly one document: the spec is one mapping, not a stream."""
        if self.documents:
            raise YamlError(_position(event.start_mark), "a second document ('---') in the file; expected one")
        self.documents += 1

    def on_scalar(self, event: yaml.ScalarEvent) -> None:
        """A single value, used as a mapping key or as a value."""
        position = _position(event.start_mark)
        tag = self._scalar_tag(event)
        value = _construct(event, tag, position)
        self._count(1, position)
        if self._expects_key():
            self._take_key(_MERGE_SLOT if tag == _MERGE_TAG else value, position, event.value)
        else:
            self._place(value, position)
        if event.anchor is not None:
            self.anchors[event.anchor] = _Anchor(value, (), 1)

    def on_alias(self, event: yaml.AliasEvent) -> None:
        """``*name``: the anchored object again, sharing it and its index entries."""
        position = _position(event.start_mark)
        name = event.anchor or ""
        if name not in self.anchors:
            raise YamlError(position, f"alias '*{name}' is used before any '&{name}' defines it")
        anchor = self.anchors[name]
        if anchor is None:
            raise YamlError(position, f"alias '*{name}' is inside the mapping or list it refers to")
        self._count(anchor.size, position)
        collection = isinstance(anchor.value, dict | list)
        if self._expects_key():
            if collection:
                raise YamlError(position, "a mapping key must be a single value, not a list or mapping")
            self._take_key(anchor.value, position, f"*{name}")
            return
        where = self._place(anchor.value, position)
        if collection:
            self.links[where] = anchor.where

    def on_mapping_start(self, event: yaml.MappingStartEvent) -> None:
        """Open a mapping."""
        self._open(event, {}, _MAP_TAG)

    def on_sequence_start(self, event: yaml.SequenceStartEvent) -> None:
        """Open a list."""
        self._open(event, [], _SEQ_TAG)

    def _open(self, event: yaml.CollectionStartEvent, data: dict[Any, Any] | list[Any], plain_tag: str) -> None:
        """Place a new mapping or list and read its children into it until its end event."""
        position = _position(event.start_mark)
        if event.tag not in (None, "!", plain_tag):
            raise YamlError(position, f"unsupported tag {_short_tag(event.tag)} (only plain YAML data is allowed)")
        if self._expects_key():
            raise YamlError(position, "a mapping key must be a single value, not a list or mapping")
        if len(self.stack) >= MAX_DEPTH:
            raise YamlError(position, f"nested more than {MAX_DEPTH} levels deep")
        self._count(1, position)
        where = self._place(data, position)
        if event.anchor is not None:
            self.anchors[event.anchor] = None
        self.stack.append(_Open(data, where, event.anchor, self.count))

    def on_end(self, _event: yaml.CollectionEndEvent) -> None:
        """Close the innermost mapping or list: apply its merge key and complete its anchor."""
        top = self.stack.pop()
        if top.merge is not None and isinstance(top.data, dict):
            self._merge(top, top.data, top.merge)
        if top.anchor is not None:
            self.anchors[top.anchor] = _Anchor(top.data, top.where, self.count - top.counted + 1)

    def _expects_key(self) -> bool:
        """Whether the next node is a mapping key."""
        return bool(self.stack) and self.stack[-1].key is _NO_KEY and isinstance(self.stack[-1].data, dict)

    def _scalar_tag(self, event: yaml.ScalarEvent) -> str:
        """The scalar's explicit tag, or the one YAML 1.1 implicit resolution gives it (as SafeLoader does).

        Resolutions are remembered for this document only: keys and values like ``true`` repeat, and a
        module-wide cache would keep values of a secrets file alive.
        """
        if event.tag not in (None, "!"):
            return str(event.tag)
        if not event.implicit[0]:  # quoted or block scalar: always text
            return _STR_TAG
        tag = self.plain_tags.get(event.value)
        if tag is None:
            tag = self.plain_tags[event.value] = _resolve_plain(event.value)
        return tag

    def _take_key(self, key: Any, position: Position, written: str) -> None:
        """Remember the key waiting for its value; a key already in the mapping is an error."""
        top = self.stack[-1]
        if key is _MERGE_SLOT:
            if top.merge_at is not None:
                raise YamlError(position, f"duplicate key '<<' (first at line {top.merge_at.line})")
            top.merge_at = position
        else:
            where = (*top.where, key)
            if key in top.data:
                first = self.keys[where].line
                raise YamlError(position, f"duplicate key {_quoted(written)} (first at line {first})")
            self.keys[where] = position
            self._note_odd_key(top.where, key)
        top.key = key

    def _place(self, value: Any, position: Position) -> _Where:
        """Put a value where the document is at (root, list item, or mapping value) and index it."""
        if not self.stack:
            where: _Where = ()
            self.root = value
        else:
            top = self.stack[-1]
            if isinstance(top.data, list):
                where = (*top.where, len(top.data))
                top.data.append(value)
            elif top.key is _MERGE_SLOT:
                where = (*top.where, _MERGE_SLOT)
                top.merge = (where, value)
            else:
                where = (*top.where, top.key)
                top.data[top.key] = value
            top.key = _NO_KEY
        self.values[where] = position
        return where

    def _merge(self, top: _Open, mapping: dict[Any, Any], merge: tuple[_Where, Any]) -> None:
        """Add the keys of the ``<<`` mappings that the mapping does not set itself, ahead of its own keys."""
        merged: dict[Any, Any] = {}
        for source_where, source in self._merge_sources(top, *merge):
            base = self.links.get(source_where, source_where)
            for key, value in source.items():
                if key not in merged and key not in mapping:
                    merged[key] = value
                    self._copy_entry((*top.where, key), (*base, key), isinstance(value, dict | list))
                    self._note_odd_key(top.where, key)
        if merged:
            own = dict(mapping)
            mapping.clear()
            mapping.update(merged)
            mapping.update(own)

    def _merge_sources(self, top: _Open, where: _Where, value: Any) -> list[tuple[_Where, dict[Any, Any]]]:
        """The mappings a ``<<`` value names, each with where it is indexed, in order of precedence."""
        if isinstance(value, dict):
            return [(where, value)]
        if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
            base = self.links.get(where, where)
            return [((*base, index), item) for index, item in enumerate(value)]
        raise YamlError(
            top.merge_at or Position(1, 1),
            "the value of a merge key '<<' must be a mapping or a list of mappings",
        )

    def _copy_entry(self, target: _Where, source: _Where, collection: bool) -> None:
        """Index a merged entry with the positions of the entry it was merged from."""
        self.values[target] = self.values[source]
        key_position = self.keys.get(source)
        if key_position is not None:
            self.keys[target] = key_position
        if collection:
            self.links[target] = self.links.get(source, source)

    def _note_odd_key(self, parent: _Where, key: Any) -> None:
        """Let keys that are neither text nor int be found by their text too."""
        if not isinstance(key, str | int):
            self.index._odd_keys.setdefault(parent, {})[str(key)] = key

    def _count(self, values: int, position: Position) -> None:
        """Stop documents whose aliases expand beyond what any spec needs."""
        self.count += values
        if self.count > MAX_VALUES:
            raise YamlError(position, f"the document expands to more than {MAX_VALUES} values (aliases of aliases?)")


def _construct(event: yaml.ScalarEvent, tag: str, position: Position) -> Any:
    """The Python value of a scalar, as SafeLoader would build it for ``tag``."""
    if tag in _TEXT_TAGS:
        return event.value
    kind = _SCALAR_KINDS.get(tag)
    if kind is None:
        raise YamlError(position, f"unsupported tag {_short_tag(tag)} (only plain YAML data is allowed)")
    node = ScalarNode(tag, event.value, None, None, event.style)
    try:
        return SafeConstructor.yaml_constructors[tag](_CONSTRUCTOR, node)
    except (yaml.YAMLError, ValueError, TypeError, LookupError, ArithmeticError) as exc:
        shown = _quoted(event.value)
        reason = f" ({exc})" if isinstance(exc, ValueError) else ""
        if event.tag in (None, "!"):
            message = f"{shown} looks like {kind} but is not one{reason}; put it in quotes if it is text"
        else:
            message = f"{shown} is not valid as {kind}{reason}"
        raise YamlError(position, message) from None


def _resolve_plain(value: str) -> str:
    """The tag SafeLoader gives an unquoted scalar (``12`` → int, ``yes`` → bool, ``~`` → null)."""
    tag: str = _RESOLVER.resolve(ScalarNode, value, (True, False))  # type: ignore[no-untyped-call]
    return tag


def _parser_error(exc: yaml.YAMLError | UnicodeError, text: str) -> YamlError:
    """Plain-words ``YamlError`` for what the scanner, parser or reader rejected."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        position = _position(mark)
        message = exc.problem or exc.context or "not valid YAML"
        context_mark = exc.context_mark
        if exc.context and context_mark is not None and mark is not None and context_mark.line != mark.line:
            message += f" ({exc.context} at line {context_mark.line + 1})"
        if _char_at(text, position) == "\t":
            message += " (a tab: YAML indentation must use spaces)"
        return YamlError(position, message)
    if isinstance(exc, yaml.reader.ReaderError):
        offset = int(exc.position)
        if exc.encoding != "unicode":  # libyaml counts UTF-8 bytes, the Python reader characters
            offset = len(text.encode("utf-8", "replace")[:offset].decode("utf-8", "ignore"))
        offset = max(0, min(offset, len(text)))
        line = text.count("\n", 0, offset) + 1
        col = offset - (text.rfind("\n", 0, offset) + 1) + 1
        return YamlError(Position(line, col), str(exc).splitlines()[0])
    if isinstance(exc, UnicodeError):
        return YamlError(Position(1, 1), f"the text is not valid Unicode ({exc})")
    return YamlError(Position(1, 1), (str(exc).splitlines() or ["not valid YAML"])[0])


def _position(mark: Any) -> Position:
    """1-based position of a 0-based PyYAML or libyaml mark."""
    if mark is None:
        return Position(1, 1)
    return Position(mark.line + 1, mark.column + 1)


def _char_at(text: str, position: Position) -> str:
    """The character at ``position`` (YAML line breaks), or '' if there is none."""
    lines = _LINE_BREAK.split(text)
    if position.line > len(lines):
        return ""
    line = lines[position.line - 1]
    return line[position.col - 1] if position.col <= len(line) else ""


def _quoted(text: str, limit: int = 40) -> str:
    """``text`` quoted for a message, cut short when long."""
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def _short_tag(tag: str | None) -> str:
    """``!!set`` rather than ``tag:yaml.org,2002:set``."""
    tag = tag or "!"
    return "!!" + tag.removeprefix(_TAG) if tag.startswith(_TAG) else tag
