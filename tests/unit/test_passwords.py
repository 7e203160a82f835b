"""Password strength: the fast paths for ASCII text give exactly the answers of the plain definitions."""

from __future__ import annotations

import re
import string
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from ekc.spec import passwords
from ekc.spec.passwords import PASSWORD_ALPHABET, _random_text, django_key_problem, is_strong

# Characters that exercise every rule: cases, digits, the substitutions, decoration, non-ASCII letters and
# digits, a title-case letter, a superscript digit, the Kelvin sign (whose lower case is ASCII "k").
CHARS = string.ascii_letters + string.digits + "!@#$%-_ 0347" + "äÄ١ǅ²\u212a"
WORDS = st.sampled_from(["password", "P@ssw0rd", "Asterisk", "changeme", "qwerty", "django-insecure-", "root"])
DECORATION = st.text(alphabet=CHARS, max_size=8)
VALUES = st.one_of(
    st.text(alphabet=CHARS, max_size=60),
    st.builds(lambda a, w, b: a + w + b, DECORATION, WORDS, DECORATION),
    st.builds(lambda part, times: part * times, st.text(alphabet=CHARS, min_size=1, max_size=6), st.integers(1, 12)),
)
_REFERENCE_DECORATION = re.compile(r"^[\W\d_]+|[\W\d_]+$")


def _reference_kinds(value: str) -> int:
    tests = (str.islower, str.isupper, str.isdigit, lambda char: not char.isalnum())
    return sum(1 for test in tests if any(test(char) for char in value))


def _reference_well_known(value: str) -> bool:
    lower = value.lower()
    core = _REFERENCE_DECORATION.sub("", lower).translate(passwords._SUBSTITUTIONS)
    candidates = {"".join(char for char in text if char.isalpha()) for text in (lower, core)}
    return bool(candidates & passwords._WEAK_WORDS) or lower.startswith("django-insecure-")


def _reference_repeats(value: str) -> bool:
    return any(
        len(value) % size == 0 and value == value[:size] * (len(value) // size)
        for size in range(1, len(value) // 2 + 1)
    )


@settings(max_examples=3000, deadline=None)
@given(VALUES)
def test_each_rule_agrees_with_its_plain_definition(value: str) -> None:
    assert passwords._kinds_of_character(value) == _reference_kinds(value)
    assert passwords._is_well_known(value) == _reference_well_known(value)
    assert passwords._repeats_a_pattern(value) == _reference_repeats(value)


def test_a_repeated_pattern_is_found_and_a_near_repetition_is_not() -> None:
    assert passwords._repeats_a_pattern("Ab1" * 8)
    assert not passwords._repeats_a_pattern("Ab1" * 8 + "A")
    assert not passwords._repeats_a_pattern("x")


def test_the_django_rule_adds_only_the_length() -> None:
    value = "Tverskaya-Oblast-Queue-2025"
    assert django_key_problem(value) == "shorter than 50 characters (Django's minimum for SECRET_KEY)"
    assert django_key_problem(value * 2) == is_strong(value * 2)


def test_random_text_uses_every_character_of_the_alphabet_about_equally() -> None:
    counts = Counter(_random_text(PASSWORD_ALPHABET, 62_000))
    assert set(counts) == set(PASSWORD_ALPHABET)
    # 1,000 expected per character; 5 standard deviations (~158) either way would already be a defect
    assert all(800 < count < 1200 for count in counts.values()), counts.most_common(3)
