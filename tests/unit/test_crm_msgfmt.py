"""The CRM's msgfmt (``.po`` to GNU ``.mo``) and the Russian catalogues it compiles for Creme."""

from __future__ import annotations

import ast
import gettext
import io
import re
import shutil
import struct
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from ekc.render.components.crm_msgfmt import (
    PoEntry,
    PoSyntaxError,
    compile_po,
    main,
    parse_po,
)

REPO = Path(__file__).resolve().parents[2]
MODULE = REPO / "ekc" / "render" / "components" / "crm_msgfmt.py"
CATALOGUES = REPO / "ekc" / "crm_app" / "locale" / "ru" / "LC_MESSAGES"
# Floors, so a truncated catalogue fails: Creme 2.8.6's unique msgids of the contact center's apps.
MIN_ENTRIES = {"django.po": 2891, "djangojs.po": 101}
RUSSIAN_PLURALS = (
    "nplurals=3; plural=(n%10==1 && n%100!=11 ? 0 : n%10>=2 && n%10<=4 && (n%100<10 || n%100>=20) ? 1 : 2);"
)
HEADER = f"""msgid ""
msgstr ""
"Language: ru\\n"
"Content-Type: text/plain; charset=UTF-8\\n"
"Plural-Forms: {RUSSIAN_PLURALS}\\n"
"""
# Kept in English on purpose: names, symbols and example addresses, not words to translate.
PROPER_NAMES = frozenset({"URL", "CHF", "complete@Me.com", "replaceMe@byYourAddress.com"})
PERCENT = re.compile(r"%\([A-Za-z0-9_]+\)[sdif]|%[sdif]")
BRACES = re.compile(r"\{[A-Za-z0-9_.]*\}")
NOT_WORDS = re.compile(r"%\([A-Za-z0-9_]+\)[sdif]|%[sdif]|\{[^}]*\}|<[^>]*>|&[a-z]+;|\S+@\S+|https?://\S+")
ENGLISH_WORD = re.compile(r"[A-Za-z]{2,}")
CYRILLIC = re.compile(r"[А-Яа-яЁё]")


def translations(po_text: str) -> gettext.GNUTranslations:
    """The ``.mo`` compiled from ``po_text``, loaded by the standard library's reader."""
    return gettext.GNUTranslations(io.BytesIO(compile_po(po_text.encode("utf-8"))))


def placeholders(text: str) -> Counter[str]:
    """The %-style and {}-style placeholders of a message (``%%`` is a literal percent, not one)."""
    text = text.replace("%%", "")
    return Counter(PERCENT.findall(text) + BRACES.findall(text))


def test_placeholder_helper_counts_both_styles_and_ignores_a_literal_percent() -> None:
    assert placeholders("%(count)s of %s: {} {model} {descriptor.name} 100%% %%d") == Counter(
        {"%(count)s": 1, "%s": 1, "{}": 1, "{model}": 1, "{descriptor.name}": 1}
    )


def english_words(text: str) -> list[str]:
    """The Latin words of a message once placeholders, tags, entities, addresses and URLs are removed."""
    return ENGLISH_WORD.findall(NOT_WORDS.sub(" ", text))


def test_singular_message_is_translated() -> None:
    catalogue = translations(HEADER + 'msgid "Save"\nmsgstr "Сохранить"\n')
    assert catalogue.gettext("Save") == "Сохранить"
    assert catalogue.gettext("Cancel") == "Cancel"


def test_context_is_stored_before_an_eot_and_read_by_pgettext() -> None:
    po = HEADER + 'msgctxt "persons-civility"\nmsgid "Title"\nmsgstr "Обращение"\n\nmsgid "Title"\nmsgstr "Название"\n'
    catalogue = translations(po)
    assert catalogue.pgettext("persons-civility", "Title") == "Обращение"
    assert catalogue.gettext("Title") == "Название"


@pytest.mark.parametrize(
    ("count", "expected"),
    [(1, "1 контакт"), (2, "2 контакта"), (5, "5 контактов"), (11, "11 контактов"), (21, "21 контакт")],
)
def test_plural_forms_follow_russian_rules(count: int, expected: str) -> None:
    po = HEADER + (
        'msgid "%(n)s contact"\nmsgid_plural "%(n)s contacts"\n'
        'msgstr[0] "%(n)s контакт"\nmsgstr[1] "%(n)s контакта"\nmsgstr[2] "%(n)s контактов"\n'
    )
    catalogue = translations(po)
    assert catalogue.ngettext("%(n)s contact", "%(n)s contacts", count) % {"n": count} == expected


def test_plural_with_context() -> None:
    po = HEADER + 'msgctxt "c"\nmsgid "day"\nmsgid_plural "days"\nmsgstr[0] "день"\nmsgstr[1] "дня"\nmsgstr[2] "дней"\n'
    assert translations(po).npgettext("c", "day", "days", 5) == "дней"


def test_c_escapes_are_resolved() -> None:
    po = HEADER + r'msgid "a\tb \"q\" \\ end\n"' + "\n" + r'msgstr "а\tб «к» \"q\" \\ конец\n"' + "\n"
    assert translations(po).gettext('a\tb "q" \\ end\n') == 'а\tб «к» "q" \\ конец\n'


def test_multi_line_strings_are_joined() -> None:
    po = HEADER + 'msgid ""\n"First line\\n"\n"second line"\nmsgstr ""\n"Первая строка\\n"\n"вторая строка"\n'
    assert translations(po).gettext("First line\nsecond line") == "Первая строка\nвторая строка"


def test_entries_need_no_blank_line_between_them() -> None:
    po = HEADER + 'msgid "Yes"\nmsgstr "Да"\nmsgctxt "answer"\nmsgid "No"\nmsgstr "Нет"\nmsgid "Or"\nmsgstr "Или"\n'
    catalogue = translations(po)
    assert (catalogue.gettext("Yes"), catalogue.pgettext("answer", "No"), catalogue.gettext("Or")) == (
        "Да",
        "Нет",
        "Или",
    )


def test_fuzzy_obsolete_and_untranslated_entries_are_left_out() -> None:
    po = HEADER + (
        '\n#, fuzzy\nmsgid "Maybe"\nmsgstr "Возможно"\n'
        '\n#~ msgid "Old"\n#~ msgstr "Старое"\n'
        '\nmsgid "Empty"\nmsgstr ""\n'
        '\n#, python-format\nmsgid "Kept %s"\nmsgstr "Оставлено %s"\n'
    )
    catalogue = translations(po)
    assert catalogue.gettext("Maybe") == "Maybe"
    assert catalogue.gettext("Old") == "Old"
    assert catalogue.gettext("Empty") == "Empty"
    assert catalogue.gettext("Kept %s") == "Оставлено %s"


def test_header_is_written_even_when_fuzzy() -> None:
    catalogue = translations("#, fuzzy\n" + HEADER + 'msgid "Yes"\nmsgstr "Да"\n')
    assert catalogue.info()["language"] == "ru"
    assert catalogue.ngettext("x", "xs", 5) == "xs"  # untranslated plural falls back, with the header's rule


def test_keys_are_sorted_bytewise_like_gnu_msgfmt() -> None:
    po = HEADER + 'msgid "b"\nmsgstr "б"\n\nmsgctxt "z"\nmsgid "a"\nmsgstr "а"\n\nmsgid "B"\nmsgstr "Б"\n'
    image = compile_po(po.encode("utf-8"))
    count, originals = struct.unpack_from("<2I", image, 8)
    keys = []
    for index in range(count):
        length, offset = struct.unpack_from("<2I", image, originals + 8 * index)
        keys.append(image[offset : offset + length])
    assert keys == [b"", b"B", b"b", b"z\x04a"]


@pytest.mark.parametrize(
    ("po", "line", "message"),
    [
        ('msgid "a"\nmsgstr "б\n', 2, "expected a quoted string"),
        ('msgid "a"\n\nmsgid "b"\nmsgstr "в"\n', 3, "second msgid in one entry"),
        ('msgid "a"\nmsgstr "б"\n"more"\n\nmsgid "c"\n', 5, "msgid without a msgstr"),
        ('msgid "a"\nmsgstr "\\q"\n', 2, "invalid escape sequence"),
        ('# comment\n"orphan"\n', 2, "string continuation without a keyword"),
        ('msgid "a"\nmsgstr[0] "б"\n', 1, "msgstr[N] without a msgid_plural"),
        ('msgid "a"\nmsgid_plural "as"\nmsgstr[0] "б"\nmsgstr[2] "в"\n', 1, "msgstr[0], msgstr[1]"),
        ('msgid "a"\nmsgstr "б"\n\nmsgid "a"\nmsgstr "в"\n', 4, "duplicate message (first defined at line 1)"),
        ('msgid "a"\nmsgstr "б" "в"\n', 2, "unescaped double quote"),
        ('msgid "a"\nmsgstr "б"\nbogus\n', 3, "unexpected line"),
    ],
)
def test_malformed_po_names_file_and_line(po: str, line: int, message: str) -> None:
    with pytest.raises(PoSyntaxError) as raised:
        compile_po(po.encode("utf-8"), "broken.po")
    assert str(raised.value).startswith(f"broken.po:{line}: ")
    assert message in str(raised.value)
    assert raised.value.line == line
    assert isinstance(raised.value, ValueError)


def test_script_writes_the_mo(tmp_path: Path) -> None:
    source, target = tmp_path / "in.po", tmp_path / "out.mo"
    source.write_text(HEADER + 'msgid "Yes"\nmsgstr "Да"\n', encoding="utf-8")
    run = subprocess.run([sys.executable, str(MODULE), str(source), str(target)], capture_output=True, text=True)
    assert (run.returncode, run.stderr) == (0, "")
    assert gettext.GNUTranslations(io.BytesIO(target.read_bytes())).gettext("Yes") == "Да"


def test_script_exits_2_with_the_line_and_no_traceback(tmp_path: Path) -> None:
    source = tmp_path / "bad.po"
    source.write_text(HEADER + 'msgid "Yes"\nmsgstr "Да\n', encoding="utf-8")
    run = subprocess.run(
        [sys.executable, str(MODULE), str(source), str(tmp_path / "out.mo")], capture_output=True, text=True
    )
    assert run.returncode == 2
    assert f"{source}:7: expected a quoted string" in run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "out.mo").exists()


def test_script_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["only-one.po"]) == 2
    assert "usage:" in capsys.readouterr().err


def catalogue_entries(name: str) -> list[PoEntry]:
    """The entries (header excluded) of one of the shipped Russian catalogues."""
    path = CATALOGUES / name
    return [entry for entry in parse_po(path.read_text(encoding="utf-8"), str(path)) if not entry.is_header]


@pytest.fixture(scope="module", params=sorted(MIN_ENTRIES))
def catalogue(request: pytest.FixtureRequest) -> tuple[str, list[PoEntry]]:
    name: str = request.param
    return name, catalogue_entries(name)


def test_catalogue_is_complete(catalogue: tuple[str, list[PoEntry]]) -> None:
    name, entries = catalogue
    assert len(entries) >= MIN_ENTRIES[name]
    assert not [entry.line for entry in entries if entry.fuzzy]


def test_catalogue_header_is_russian_with_three_plural_forms(catalogue: tuple[str, list[PoEntry]]) -> None:
    name, _ = catalogue
    info = translations((CATALOGUES / name).read_text(encoding="utf-8")).info()
    assert info["language"] == "ru"
    assert info["content-type"] == "text/plain; charset=UTF-8"
    assert info["plural-forms"] == RUSSIAN_PLURALS


def test_every_msgstr_is_filled(catalogue: tuple[str, list[PoEntry]]) -> None:
    _, entries = catalogue
    assert not [(entry.line, entry.msgid) for entry in entries if not all(form.strip() for form in entry.msgstr)]


def test_plurals_have_three_forms_and_singulars_one(catalogue: tuple[str, list[PoEntry]]) -> None:
    _, entries = catalogue
    wrong = [entry.line for entry in entries if len(entry.msgstr) != (1 if entry.msgid_plural is None else 3)]
    assert not wrong


def test_placeholders_match_the_msgid(catalogue: tuple[str, list[PoEntry]]) -> None:
    _, entries = catalogue
    wrong = []
    for entry in entries:
        expected = placeholders(entry.msgid if entry.msgid_plural is None else entry.msgid_plural)
        wrong += [(entry.line, form) for form in entry.msgstr if placeholders(form) != expected]
    assert not wrong


def test_leading_and_trailing_whitespace_is_kept(catalogue: tuple[str, list[PoEntry]]) -> None:
    _, entries = catalogue

    def edges(text: str) -> tuple[str, str]:
        return text[: len(text) - len(text.lstrip())], text[len(text.rstrip()) :]

    wrong = [
        entry.line
        for entry in entries
        for form in entry.msgstr
        if edges(form) != edges(entry.msgid if entry.msgid_plural is None else entry.msgid_plural)
    ]
    assert not wrong


def looks_untranslated(entry: PoEntry, form: str) -> bool:
    """Whether a msgstr is still English: the multi-word msgid copied, or English words and no Cyrillic."""
    if entry.msgid in PROPER_NAMES or not english_words(entry.msgid):
        return False
    copied = form in (entry.msgid, entry.msgid_plural) and len(entry.msgid.split()) > 1
    return copied or not CYRILLIC.search(form)


def test_no_entry_is_left_in_english(catalogue: tuple[str, list[PoEntry]]) -> None:
    _, entries = catalogue
    untranslated = [
        (entry.line, entry.msgid) for entry in entries for form in entry.msgstr if looks_untranslated(entry, form)
    ]
    assert not untranslated


def test_untranslated_detector_catches_copies_and_spares_names() -> None:
    assert looks_untranslated(PoEntry("Save the contact", ("Save the contact",), 1), "Save the contact")
    assert looks_untranslated(PoEntry("Contacts", ("Contacts",), 1), "Contacts")
    assert not looks_untranslated(PoEntry("URL", ("URL",), 1), "URL")
    assert not looks_untranslated(
        PoEntry("{first_name} {last_name}", ("{first_name} {last_name}",), 1), "{first_name} {last_name}"
    )
    assert not looks_untranslated(PoEntry("Save the contact", ("Сохранить контакт",), 1), "Сохранить контакт")


def test_catalogue_compiles_and_round_trips(catalogue: tuple[str, list[PoEntry]]) -> None:
    name, entries = catalogue
    compiled = translations((CATALOGUES / name).read_text(encoding="utf-8"))
    for entry in entries:
        if entry.msgid_plural is None:
            got = [
                compiled.gettext(entry.msgid)
                if entry.msgctxt is None
                else compiled.pgettext(entry.msgctxt, entry.msgid)
            ]
        else:
            plural = entry.msgid_plural
            got = [
                compiled.ngettext(entry.msgid, plural, n)
                if entry.msgctxt is None
                else compiled.npgettext(entry.msgctxt, entry.msgid, plural, n)
                for n in (1, 2, 5)
            ]
        assert got == list(entry.msgstr), f"{name}:{entry.line}"


@pytest.mark.skipif(shutil.which("msgfmt") is None, reason="GNU gettext's msgfmt is not installed to compare with")
def test_catalogue_compiles_byte_for_byte_like_gnu_msgfmt(catalogue: tuple[str, list[PoEntry]], tmp_path: Path) -> None:
    name, _ = catalogue
    reference = tmp_path / "reference.mo"
    subprocess.run(["msgfmt", "--check", "--no-hash", "-o", str(reference), str(CATALOGUES / name)], check=True)
    assert compile_po((CATALOGUES / name).read_bytes()) == reference.read_bytes()


APP = REPO / "ekc" / "crm_app" / "ekc_appeals"
APP_PO = APP / "locale" / "ru" / "LC_MESSAGES" / "django.po"
TRANSLATED = (re.compile(r'\b_\(\s*((?:"(?:[^"\\]|\\.)*"\s*)+)\)'), re.compile(r'\{% translate "([^"]*)" %\}'))


def _app_msgids() -> set[str]:
    """Every message the appeals app marks for translation (its Python and its templates)."""
    found: set[str] = set()
    for path in APP.rglob("*"):
        if path.suffix not in (".py", ".html") or "migrations" in path.parts:
            continue
        text = path.read_text(encoding="utf-8")
        for literal in TRANSLATED[0].findall(text):  # adjacent literals are one message
            found.add("".join(ast.literal_eval(part) for part in re.findall(r'"(?:[^"\\]|\\.)*"', literal)))
        found.update(TRANSLATED[1].findall(text))
    return found


def test_every_shipped_catalogue_compiles() -> None:
    """What the migrate unit compiles on the node: a duplicate or a syntax error would stop the CRM's setup."""
    for path in [*CATALOGUES.glob("*.po"), APP_PO]:
        compile_po(path.read_bytes(), str(path))


def test_the_appeals_app_is_translated_whole() -> None:
    msgids = {entry.msgid for entry in parse_po(APP_PO.read_text(encoding="utf-8"), str(APP_PO))}
    missing = sorted(_app_msgids() - msgids)
    assert not missing
