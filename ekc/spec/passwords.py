"""What counts as a strong password or Django secret key, and how ekc draws new ones.

Split from :mod:`ekc.spec.secretgen`, which decides what to keep and what to generate; this module only knows
about single values. Reasons name the weakness, never the value.
"""

from __future__ import annotations

import re
import secrets
import string

MIN_LENGTH = 20
DJANGO_KEY_LENGTH = 50

# Letters and digits only: no quoting rule of Asterisk, ini, YAML, URLs, SQL or shell can trip over them.
PASSWORD_ALPHABET = string.ascii_letters + string.digits
# Django's own secret-key alphabet without $ % # (interpolation and comment characters in env, ini and
# shell files). Django's alphabet has no quotes or backslash to begin with.
DJANGO_KEY_SYMBOLS = "!@^&*(-_=+)"
DJANGO_KEY_ALPHABET = string.ascii_lowercase + string.digits + DJANGO_KEY_SYMBOLS

# Compared after lower-casing, trimming digits and symbols around the word, undoing common substitutions
# inside it and dropping what is not a letter, so that "P@ssw0rd2024!!!!!!!!!!" counts as "password".
_WEAK_WORDS = frozenset(
    {
        "password", "passwort", "parol", "changeme", "secret", "default", "admin", "administrator", "root",
        "qwerty", "qwertyuiop", "asdfgh", "letmein", "welcome", "test", "example", "asterisk", "postgres",
        "postgresql", "creme", "cremecrm", "django", "prometheus", "grafana", "freepbx", "sip", "ekc", "abc",
        "abcdef", "iloveyou", "monkey", "dragon", "master", "access", "trustno",
    }
)  # fmt: skip
# Digits and symbols before and after a word ("Asterisk-2024!!") add little; look at the word between them.
_DECORATION = re.compile(r"^[\W\d_]+|[\W\d_]+$")
_SUBSTITUTIONS = str.maketrans({"0": "o", "@": "a", "3": "e", "$": "s", "4": "a", "5": "s", "7": "t"})
# The same tests on ASCII text, as bytes: bytes.translate is many times faster than str.translate, and on
# ASCII str.islower/isupper/isdigit/isalpha and the regex classes mean exactly these characters.
_ASCII = bytes(range(128))
_NOT_LETTERS = _ASCII.translate(None, string.ascii_letters.encode())
_ASCII_KINDS = tuple(kind.encode() for kind in (string.ascii_lowercase, string.ascii_uppercase, string.digits))
_ALNUM = (string.ascii_letters + string.digits).encode()
_DECORATION_BYTES = re.compile(rb"^[\W\d_]+|[\W\d_]+$")
_SUBSTITUTIONS_BYTES = bytes.maketrans(b"0@3$457", b"oaesast")


def _random_text(alphabet: str, length: int) -> str:
    """``length`` characters drawn uniformly from ``alphabet`` with the system's CSPRNG.

    Random bytes at or above the largest multiple of ``len(alphabet)`` are thrown away (rejection
    sampling), so every character is equally likely; one ``token_bytes`` call serves a whole value.
    """
    size = len(alphabet)
    limit = 256 - 256 % size
    chars: list[str] = []
    while len(chars) < length:
        chars += [alphabet[byte % size] for byte in secrets.token_bytes(2 * length) if byte < limit]
    return "".join(chars[:length])


def generate_password(length: int = 32) -> str:
    """A random password of letters and digits with at least one lower, one upper and one digit.

    Drawn uniformly and redrawn until it has all three kinds and passes :func:`is_strong`, so a generated
    password is never reported as weak later.
    """
    if length < MIN_LENGTH:
        raise ValueError(f"a generated password must be at least {MIN_LENGTH} characters, not {length}")
    while True:
        value = _random_text(PASSWORD_ALPHABET, length)
        raw = value.encode("ascii")
        if all(raw.translate(None, kind) != raw for kind in _ASCII_KINDS) and is_strong(value) is None:
            return value


def generate_django_secret_key() -> str:
    """A 50-character Django SECRET_KEY that passes Django's own checks and is safe unquoted in config files.

    It starts with a letter or digit (no YAML indicator such as ``&``, ``*``, ``!`` or ``@`` up front) and
    contains lower-case letters, digits and symbols.
    """
    while True:
        value = _random_text(DJANGO_KEY_ALPHABET, DJANGO_KEY_LENGTH)
        if value[0].isalnum() and django_key_problem(value) is None:
            return value


def _kinds_of_character(value: str) -> int:
    """How many of lower, upper, digit and symbol (anything else) occur in ``value``."""
    if value.isascii():  # the common case; the same answer as the tests below
        raw = value.encode("ascii")
        kinds = sum(1 for kind in _ASCII_KINDS if raw.translate(None, kind) != raw)
        return kinds + (raw.translate(None, _ALNUM) != b"")
    tests = (str.islower, str.isupper, str.isdigit, lambda char: not char.isalnum())
    return sum(1 for test in tests if any(test(char) for char in value))


def _is_well_known(value: str) -> bool:
    """Whether ``value`` is a common password or vendor default dressed up with digits and symbols."""
    lower = value.lower()
    if lower.isascii():  # the common case, on bytes; the same answer as the general case below
        raw = lower.encode("ascii")
        core_raw = _DECORATION_BYTES.sub(b"", raw).translate(_SUBSTITUTIONS_BYTES)
        candidates = {text.translate(None, _NOT_LETTERS).decode("ascii") for text in (raw, core_raw)}
    else:
        core = _DECORATION.sub("", lower).translate(_SUBSTITUTIONS)
        candidates = {"".join(char for char in text if char.isalpha()) for text in (lower, core)}
    return bool(candidates & _WEAK_WORDS) or lower.startswith("django-insecure-")


def _repeats_a_pattern(value: str) -> bool:
    """Whether ``value`` is one shorter string repeated (``Ab1Ab1Ab1...``).

    A string is a repetition exactly when it occurs in itself doubled at an offset other than 0 and its
    length, i.e. inside ``(value + value)[1:-1]``.
    """
    return len(value) > 1 and value in (value + value)[1:-1]


def is_strong(value: str) -> str | None:
    """None if ``value`` is strong enough to guard a service, else the plain reason why not.

    Meant for human-chosen values as much as generated ones: length, variety, well-known values, patterns.
    The reason never quotes the value.
    """
    if _is_well_known(value):
        return "a well-known weak value"
    if len(value) < MIN_LENGTH:
        return f"shorter than {MIN_LENGTH} characters"
    if _kinds_of_character(value) < 3:
        return "fewer than 3 kinds of character (lower, upper, digit, symbol)"
    if len(set(value)) < 8:
        return "fewer than 8 different characters"
    if _repeats_a_pattern(value):
        return "a short pattern repeated"
    return None


def django_key_problem(value: str) -> str | None:
    """:func:`is_strong` plus Django's own rule (security.W009): at least 50 characters."""
    if len(value) < DJANGO_KEY_LENGTH:
        return f"shorter than {DJANGO_KEY_LENGTH} characters (Django's minimum for SECRET_KEY)"
    return is_strong(value)
