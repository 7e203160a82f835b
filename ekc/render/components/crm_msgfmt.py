"""A standard-library msgfmt: compiles the CRM's Russian catalogues (``.po``) into GNU ``.mo`` files.

Creme ships only English and French catalogues, so ekc carries its own Russian ones
(``ekc/crm_app/locale/ru/LC_MESSAGES/``). The render must not need GNU gettext on the build host, so this
module does what ``msgfmt`` does for those files: it reads msgctxt, msgid, msgid_plural and msgstr (also
``msgstr[N]``), multi-line strings and C escapes; drops obsolete (``#~``), fuzzy and untranslated entries as
``msgfmt`` does without ``--use-fuzzy`` (the header is kept even when marked fuzzy, less its
POT-Creation-Date); and writes the ``.mo``
layout that ``gettext.GNUTranslations`` and Django read: context as ``ctxt\\x04msgid``, plurals as
``msgid\\x00plural`` with their forms joined by ``\\x00``, keys sorted bytewise as ``msgfmt`` sorts them.

A malformed catalogue raises :class:`PoSyntaxError` naming the file and line. As a script
(``python3 crm_msgfmt.py in.po out.mo``) it exits 0 when the ``.mo`` is written and 2 on bad usage or a
malformed ``.po``, with one message on stderr and no traceback.
"""

from __future__ import annotations

import re
import struct
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

MO_MAGIC = 0x950412DE
CONTEXT_SEPARATOR = "\x04"
PLURAL_SEPARATOR = "\x00"
USAGE = "usage: crm_msgfmt.py IN.po OUT.mo  (exit 0 written, 2 bad usage or malformed .po)"

_SIMPLE_ESCAPES = {
    "n": "\n", "t": "\t", '"': '"', "\\": "\\", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v",
    "?": "?", "'": "'",
}  # fmt: skip
_ESCAPE = re.compile(r"\\(?:([0-7]{1,3})|x([0-9A-Fa-f]+)|(.))", re.DOTALL)
_KEYWORD = re.compile(r"^(msgctxt|msgid_plural|msgid|msgstr(?:\[(\d+)\])?)\s+(\".*)$")
_CHARSET = re.compile(rb"charset=([A-Za-z0-9._:-]+)")


class PoSyntaxError(ValueError):
    """A catalogue that ``msgfmt`` would refuse; the message starts with ``file:line:``."""

    def __init__(self, path: str, line: int, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}")
        self.path = path
        self.line = line


@dataclass(frozen=True)
class PoEntry:
    """One message of a catalogue; ``msgstr`` holds one form, or one per plural form."""

    msgid: str
    msgstr: tuple[str, ...]
    line: int
    msgctxt: str | None = None
    msgid_plural: str | None = None
    fuzzy: bool = False

    @property
    def is_header(self) -> bool:
        """The catalogue's metadata entry (empty msgid, no context)."""
        return self.msgid == "" and self.msgctxt is None

    def mo_key(self) -> str:
        """The original string as stored in the ``.mo``: context and plural folded in."""
        key = self.msgid if self.msgid_plural is None else self.msgid + PLURAL_SEPARATOR + self.msgid_plural
        return key if self.msgctxt is None else self.msgctxt + CONTEXT_SEPARATOR + key

    def mo_value(self) -> str:
        """The translation as stored in the ``.mo``: plural forms joined by NUL."""
        return PLURAL_SEPARATOR.join(self.msgstr)


@dataclass
class _Draft:
    """The entry being read: its string parts so far, the line it starts on, and the string continuing."""

    line: int = 0
    fuzzy: bool = False
    msgctxt: list[str] | None = None
    msgid: list[str] | None = None
    msgid_plural: list[str] | None = None
    msgstr: dict[int, list[str]] = field(default_factory=dict)
    current: list[str] | None = None

    def is_empty(self) -> bool:
        """Whether no keyword of an entry has been read yet (comments only)."""
        return self.msgctxt is None and self.msgid is None and not self.msgstr


def unquote(literal: str, path: str, line: int) -> str:
    """The value of one C string literal of a ``.po`` line (``"..."``), its escapes resolved."""
    text = literal.strip()
    if len(text) < 2 or not text.startswith('"') or not text.endswith('"') or _closing_quote_escaped(text):
        raise PoSyntaxError(path, line, f"expected a quoted string, got {text!r}")
    body = text[1:-1]
    if re.search(r'(?<!\\)(?:\\\\)*"', body):
        raise PoSyntaxError(path, line, "unescaped double quote inside a string")

    def resolve(match: re.Match[str]) -> str:
        octal, hexa, char = match.groups()
        if octal is not None:
            return chr(int(octal, 8))
        if hexa is not None:
            return chr(int(hexa, 16))
        if char in _SIMPLE_ESCAPES:
            return _SIMPLE_ESCAPES[char]
        raise PoSyntaxError(path, line, f"invalid escape sequence \\{char}")

    return _ESCAPE.sub(resolve, body)


def _closing_quote_escaped(text: str) -> bool:
    """Whether the last quote of ``text`` is escaped (an odd run of backslashes before it), not closing."""
    run = len(text[:-1]) - len(text[:-1].rstrip("\\"))
    return run % 2 == 1


def _finish(draft: _Draft, path: str) -> PoEntry | None:
    """The entry a completed draft describes, or an error for a draft ``msgfmt`` would refuse."""
    if draft.is_empty():
        return None
    if draft.msgid is None:
        raise PoSyntaxError(path, draft.line, "msgstr or msgctxt without a msgid")
    if not draft.msgstr:
        raise PoSyntaxError(path, draft.line, "msgid without a msgstr")
    indexes = sorted(draft.msgstr)
    if draft.msgid_plural is None and indexes != [-1]:
        raise PoSyntaxError(path, draft.line, "msgstr[N] without a msgid_plural")
    if draft.msgid_plural is not None and indexes != list(range(len(indexes))):
        raise PoSyntaxError(path, draft.line, "msgid_plural needs msgstr[0], msgstr[1], ... in order")
    return PoEntry(
        msgid="".join(draft.msgid),
        msgstr=tuple("".join(draft.msgstr[i]) for i in indexes),
        line=draft.line,
        msgctxt=None if draft.msgctxt is None else "".join(draft.msgctxt),
        msgid_plural=None if draft.msgid_plural is None else "".join(draft.msgid_plural),
        fuzzy=draft.fuzzy,
    )


def _keyword(draft: _Draft, match: re.Match[str], path: str, number: int) -> None:
    """Apply one keyword line (msgctxt, msgid, msgid_plural, msgstr, msgstr[N]) to the entry being read."""
    keyword, index, literal = match.groups()
    value = [unquote(literal, path, number)]
    if keyword == "msgctxt":
        if draft.msgctxt is not None or draft.msgid is not None:
            raise PoSyntaxError(path, number, "msgctxt must come first and only once")
        draft.msgctxt, draft.line = value, draft.line or number
    elif keyword == "msgid":
        if draft.msgid is not None:
            raise PoSyntaxError(path, number, "second msgid in one entry (missing msgstr?)")
        draft.msgid, draft.line = value, draft.line or number
    elif keyword == "msgid_plural":
        if draft.msgid is None or draft.msgid_plural is not None or draft.msgstr:
            raise PoSyntaxError(path, number, "msgid_plural must follow the msgid, once")
        draft.msgid_plural = value
    else:
        slot = -1 if index is None else int(index)
        if draft.msgid is None:
            raise PoSyntaxError(path, number, "msgstr without a msgid")
        if slot in draft.msgstr:
            raise PoSyntaxError(path, number, f"second {keyword} in one entry")
        draft.msgstr[slot] = value
    draft.current = value


def parse_po(text: str, path: str = "<string>") -> list[PoEntry]:
    """Every live entry of a ``.po`` text, in file order; obsolete ``#~`` entries are not returned."""
    entries: list[PoEntry] = []
    draft = _Draft()

    def flush() -> None:
        nonlocal draft
        entry = _finish(draft, path)
        if entry is not None:
            entries.append(entry)
        draft = _Draft()

    for number, raw in enumerate(text.split("\n"), start=1):  # not splitlines: U+2028 may sit in a string
        line = raw.strip()
        if not line or line.startswith("#~"):
            continue
        if line.startswith("#"):
            if draft.msgstr:
                flush()
            if line.startswith("#,") and "fuzzy" in (flag.strip() for flag in line[2:].split(",")):
                draft.fuzzy = True
            draft.current = None
            continue
        if line.startswith('"'):
            if draft.current is None:
                raise PoSyntaxError(path, number, "string continuation without a keyword before it")
            draft.current.append(unquote(line, path, number))
            continue
        match = _KEYWORD.match(line)
        if match is None:
            raise PoSyntaxError(path, number, f"unexpected line {line[:40]!r}")
        if match.group(1) in ("msgctxt", "msgid") and draft.msgstr:
            flush()  # a new entry starts without a blank line or comment before it
        _keyword(draft, match, path, number)
    flush()
    return entries


def compiled_entries(entries: Iterable[PoEntry], path: str = "<string>") -> dict[str, str]:
    """The ``.mo`` key/value pairs: fuzzy and untranslated entries dropped, duplicates refused."""
    table: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for entry in entries:
        key = entry.mo_key()
        if key in first_line:
            raise PoSyntaxError(path, entry.line, f"duplicate message (first defined at line {first_line[key]})")
        first_line[key] = entry.line
        if entry.fuzzy and not entry.is_header:
            continue
        if not any(entry.msgstr):
            continue
        table[key] = header_for_mo(entry.mo_value()) if entry.is_header else entry.mo_value()
    return table


def header_for_mo(header: str) -> str:
    """The header as ``msgfmt`` (0.22 on) stores it: without POT-Creation-Date, so builds are reproducible."""
    return "".join(line for line in header.splitlines(keepends=True) if not line.startswith("POT-Creation-Date:"))


def catalogue_charset(data: bytes) -> str:
    """The charset the header's Content-Type names (UTF-8 when it names none)."""
    match = _CHARSET.search(data[:4096])
    charset = match.group(1).decode("ascii") if match else "UTF-8"
    return "UTF-8" if charset.upper() == "CHARSET" else charset


def mo_bytes(table: dict[str, str], charset: str = "UTF-8") -> bytes:
    """A GNU ``.mo`` image (little-endian, revision 0, no hash table) of the key/value pairs."""
    pairs = sorted((key.encode(charset), value.encode(charset)) for key, value in table.items())
    count = len(pairs)
    originals_at = 7 * 4
    translations_at = originals_at + count * 8
    strings_at = translations_at + count * 8
    index: list[int] = []
    blob = bytearray()
    for column in (0, 1):
        for pair in pairs:
            index.append(len(pair[column]))
            index.append(strings_at + len(blob))
            blob += pair[column] + b"\x00"
    header = struct.pack("<7I", MO_MAGIC, 0, count, originals_at, translations_at, 0, strings_at)
    return header + struct.pack(f"<{len(index)}I", *index) + bytes(blob)


def compile_po(data: bytes, path: str = "<string>") -> bytes:
    """The ``.mo`` image of a ``.po`` file's bytes."""
    charset = catalogue_charset(data)
    try:
        text = data.decode(charset)
    except (LookupError, UnicodeDecodeError) as error:
        raise PoSyntaxError(path, 1, f"cannot decode as {charset}: {error}") from error
    return mo_bytes(compiled_entries(parse_po(text, path), path), charset)


def compile_file(source: Path, target: Path) -> None:
    """Compile the ``.po`` at ``source`` into the ``.mo`` at ``target``."""
    target.write_bytes(compile_po(source.read_bytes(), str(source)))


def main(argv: Sequence[str] | None = None) -> int:
    """The script's entry point; returns the exit code (0 written, 2 bad usage or malformed catalogue)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print(USAGE, file=sys.stderr)
        return 2
    try:
        compile_file(Path(args[0]), Path(args[1]))
    except PoSyntaxError as error:
        print(f"crm_msgfmt: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"crm_msgfmt: {error.filename or args[0]}: {error.strerror}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
