"""A region's secrets: good values are kept, bad ones replaced, and reports name them but never show them."""

from __future__ import annotations

import copy
import string
from typing import Any

import pytest
import yaml

from ekc.crypto.pki import make_ca
from ekc.spec.secretgen import (
    SecretRequirement,
    check_secrets,
    fill_secrets,
    generate_django_secret_key,
    generate_password,
    is_strong,
    secret_values,
)

FIX = "deploy.py secrets init <region>"
GOOD_PASSWORD = "Kx9mQ2vLr8TnW4pZ7aBcD3eF"
CA = SecretRequirement(("ca",), "ca", "certificate authority of region Tver")
CRM_CERT = SecretRequirement(
    ("tls", "crm1"), "host_cert", "TLS certificate of crm1", "crm1", "crm1.ekc.tver.local", ("10.20.0.5",)
)
SIP_2001 = SecretRequirement(("passwords", "sip", "2001"), "password", "SIP password of operator 2001")
SIP_2002 = SecretRequirement(("passwords", "sip", "2002"), "password", "SIP password of operator 2002")
DJANGO = SecretRequirement(("django_secret_key",), "django_secret_key", "Creme CRM's Django SECRET_KEY")
DEPLOY_KEY = SecretRequirement(("ssh", "deploy"), "ssh_key", "SSH key ekc deploys with")
REQUIREMENTS = [SIP_2001, SIP_2002, DJANGO, DEPLOY_KEY, CRM_CERT, CA]


@pytest.fixture(scope="module")
def filled() -> dict[str, Any]:
    """A complete secrets tree, generated once for the module (certificates cost a few milliseconds each)."""
    tree, _ = fill_secrets({}, REQUIREMENTS)
    return tree


def _assert_no_value_in(report: list[str], tree: dict[str, Any]) -> None:
    values = secret_values(tree)
    assert values
    for line in report:
        assert not any(value in line for value in values), line


def test_generated_password_is_long_alphanumeric_with_all_three_kinds() -> None:
    for _ in range(50):
        value = generate_password()
        assert len(value) == 32
        assert set(value) <= set(string.ascii_letters + string.digits)
        assert any(c.islower() for c in value) and any(c.isupper() for c in value)
        assert any(c.isdigit() for c in value)
        assert is_strong(value) is None


def test_generated_password_shorter_than_the_strength_minimum_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 20"):
        generate_password(12)


def test_django_secret_key_is_50_chars_without_config_syntax_characters() -> None:
    for _ in range(50):
        value = generate_django_secret_key()
        assert len(value) == 50
        assert not set(value) & set("$%#'\"\\ ")
        assert value[0].isalnum()
        assert is_strong(value) is None


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("Short1a", "shorter than 20 characters"),
        ("alllowercaseandnothingelse", "fewer than 3 kinds of character (lower, upper, digit, symbol)"),
        ("P@ssw0rd2024!!!!!!!!!!", "a well-known weak value"),
        ("changeme", "a well-known weak value"),
        ("Asterisk-123456789012", "a well-known weak value"),
        ("Ab1Ab1Ab1Ab1Ab1Ab1Ab1", "fewer than 8 different characters"),
        ("Abcdefgh1Abcdefgh1Abcdefgh1", "a short pattern repeated"),
        ("Tverskaya-Oblast-Queue-2025", None),
        (GOOD_PASSWORD, None),
    ],
)
def test_is_strong_names_the_weakness(value: str, reason: str | None) -> None:
    assert is_strong(value) == reason


def test_fill_from_nothing_generates_every_secret_and_reports_names_only() -> None:
    tree, report = fill_secrets({}, REQUIREMENTS)
    assert report == [
        "generated ca (certificate authority of region Tver)",
        "generated passwords.sip.2001 (SIP password of operator 2001)",
        "generated passwords.sip.2002 (SIP password of operator 2002)",
        "generated django_secret_key (Creme CRM's Django SECRET_KEY)",
        "generated ssh.deploy (SSH key ekc deploys with)",
        "generated tls.crm1 (TLS certificate of crm1)",
    ]
    assert check_secrets(tree, REQUIREMENTS) == []
    _assert_no_value_in(report, tree)


def test_fill_keeps_a_complete_good_tree_unchanged(filled: dict[str, Any]) -> None:
    tree, report = fill_secrets(filled, REQUIREMENTS)
    assert tree == filled
    assert report == []


def test_fill_replaces_a_weak_password_and_keeps_the_rest(filled: dict[str, Any]) -> None:
    existing = copy.deepcopy(filled)
    existing["passwords"]["sip"]["2001"] = "1234"
    tree, report = fill_secrets(existing, REQUIREMENTS)
    assert report == [
        "replaced passwords.sip.2001 (SIP password of operator 2001): weak: shorter than 20 characters"
    ]
    assert tree["passwords"]["sip"]["2001"] != "1234"
    assert is_strong(tree["passwords"]["sip"]["2001"]) is None
    assert {k: v for k, v in tree.items() if k != "passwords"} == {
        k: v for k, v in filled.items() if k != "passwords"
    }
    assert tree["passwords"]["sip"]["2002"] == filled["passwords"]["sip"]["2002"]
    assert existing["passwords"]["sip"]["2001"] == "1234", "the input must not be modified"
    _assert_no_value_in(report, tree)


def test_fill_reissues_a_host_cert_whose_addresses_changed(filled: dict[str, Any]) -> None:
    moved = SecretRequirement(
        ("tls", "crm1"), "host_cert", "TLS certificate of crm1", "crm1", "crm1.ekc.tver.local", ("10.20.0.9",)
    )
    requirements = [r for r in REQUIREMENTS if r is not CRM_CERT] + [moved]
    tree, report = fill_secrets(filled, requirements)
    assert report == [
        "replaced tls.crm1 (TLS certificate of crm1): unusable: "
        "its names or addresses (subjectAltName) differ from the host's"
    ]
    assert tree["ca"] == filled["ca"]
    assert tree["tls"]["crm1"]["key"] != filled["tls"]["crm1"]["key"]


def test_fill_replaces_a_broken_ca_and_reissues_its_host_certs(filled: dict[str, Any]) -> None:
    existing = copy.deepcopy(filled)
    existing["ca"]["key"] = make_ca("someone else").key_pem
    tree, report = fill_secrets(existing, REQUIREMENTS)
    assert report == [
        "replaced ca (certificate authority of region Tver): unusable: "
        "its private key is missing, unreadable, or not the certificate's key",
        "replaced tls.crm1 (TLS certificate of crm1): unusable: it was not issued by the region CA",
    ]
    assert check_secrets(tree, REQUIREMENTS) == []
    _assert_no_value_in(report, tree)


def test_fill_keeps_and_reports_secrets_no_requirement_uses(filled: dict[str, Any]) -> None:
    existing = copy.deepcopy(filled)
    existing["passwords"]["sip"]["2999"] = GOOD_PASSWORD
    existing["old_vpn"] = {"psk": GOOD_PASSWORD}
    tree, report = fill_secrets(existing, REQUIREMENTS)
    assert report == ["unused: passwords.sip.2999", "unused: old_vpn"]
    assert tree == existing


def test_fill_replaces_a_value_in_place_of_a_mapping_and_says_so() -> None:
    tree, report = fill_secrets({"passwords": {"sip": "oops"}}, [SIP_2001])
    assert report == [
        "replaced passwords.sip: it was not a mapping",
        "generated passwords.sip.2001 (SIP password of operator 2001)",
    ]
    assert is_strong(tree["passwords"]["sip"]["2001"]) is None


def test_unquoted_numeric_yaml_keys_still_name_their_secret() -> None:
    existing = yaml.safe_load(f"passwords:\n  sip:\n    2001: {GOOD_PASSWORD}\n")
    tree, report = fill_secrets(existing, [SIP_2001])
    assert (tree, report) == (existing, [])
    assert check_secrets(existing, [SIP_2001]) == []


def test_check_reports_missing_weak_and_wrong_type_with_paths(filled: dict[str, Any]) -> None:
    existing = copy.deepcopy(filled)
    del existing["passwords"]["sip"]["2001"]
    existing["passwords"]["sip"]["2002"] = "changeme"
    existing["django_secret_key"] = 12345
    assert check_secrets(existing, REQUIREMENTS) == [
        (("passwords", "sip", "2001"), f"missing: SIP password of operator 2001 (run: {FIX})"),
        (
            ("passwords", "sip", "2002"),
            f"weak: SIP password of operator 2002: a well-known weak value (run: {FIX} to replace it)",
        ),
        (
            ("django_secret_key",),
            "wrong type: Creme CRM's Django SECRET_KEY: must be text (a quoted string) "
            f"(run: {FIX} to replace it)",
        ),
    ]


def test_check_does_not_trust_host_certs_when_the_ca_is_missing(filled: dict[str, Any]) -> None:
    existing = {k: v for k, v in filled.items() if k != "ca"}
    assert [path for path, _ in check_secrets(existing, REQUIREMENTS)] == [("ca",), ("tls", "crm1")]


def test_django_key_shorter_than_djangos_minimum_is_weak() -> None:
    problems = check_secrets({"django_secret_key": GOOD_PASSWORD + "-extra-chars"}, [DJANGO])
    assert problems == [
        (
            ("django_secret_key",),
            "weak: Creme CRM's Django SECRET_KEY: shorter than 50 characters (Django's minimum for "
            f"SECRET_KEY) (run: {FIX} to replace it)",
        )
    ]


@pytest.mark.parametrize(
    ("requirements", "message"),
    [
        ([CRM_CERT], "the region CA \\('ca'\\) is not"),
        ([SIP_2001, SIP_2001], "required twice"),
        ([SIP_2001, SecretRequirement(("passwords", "sip"), "password", "x")], "inside another"),
        ([SecretRequirement(("tls", "ca"), "ca", "x")], "must be required at 'ca'"),
    ],
)
def test_requirements_no_file_could_satisfy_are_a_programming_error(
    requirements: list[SecretRequirement], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        fill_secrets({}, requirements)


def test_secret_values_has_secrets_and_private_key_lines_but_no_public_material(
    filled: dict[str, Any],
) -> None:
    values = secret_values(filled)
    assert filled["passwords"]["sip"]["2001"] in values
    assert filled["django_secret_key"] in values
    for private in (filled["ca"]["key"], filled["tls"]["crm1"]["key"], filled["ssh"]["deploy"]["private"]):
        assert private in values
        body = [line for line in private.splitlines() if not line.startswith("-----")]
        assert body[0] in values and len(body[0]) >= 40
    for public in (filled["ca"]["cert"], filled["tls"]["crm1"]["cert"], filled["ssh"]["deploy"]["public"]):
        assert not any(public in value or value in public for value in values)
    assert values == sorted(values, key=lambda value: (-len(value), value))


def test_secret_values_counts_numbers_but_not_booleans_or_empty_strings() -> None:
    assert secret_values({"pin": 48213957, "enabled": True, "blank": "", "nested": [{"x": "Zz9" * 8}]}) == [
        "Zz9" * 8,
        "48213957",
    ]


@pytest.mark.parametrize(
    ("stored", "found"),
    [
        ({2001: GOOD_PASSWORD}, True),  # unquoted in YAML: an int key still names the secret
        ({"2001": GOOD_PASSWORD}, True),
        ({2001.0: GOOD_PASSWORD}, False),  # a float equal to the number is another name
        ({"02001": GOOD_PASSWORD}, False),
    ],
)
def test_only_the_name_or_its_integer_stands_for_a_secret(stored: dict[Any, str], found: bool) -> None:
    problems = check_secrets({"passwords": {"sip": stored}}, [SIP_2001])
    assert problems == ([] if found else [(SIP_2001.path, f"missing: SIP password of operator 2001 (run: {FIX})")])


def test_a_boolean_key_never_stands_for_a_number() -> None:
    one = SecretRequirement(("pins", "1"), "password", "pin 1")
    assert [path for path, _ in check_secrets({"pins": {True: GOOD_PASSWORD}}, [one])] == [("pins", "1")]


def test_the_secret_that_encloses_another_is_the_one_named() -> None:
    inner = SecretRequirement(("passwords", "sip", "2001"), "password", "x")
    outer = SecretRequirement(("passwords", "sip"), "password", "y")
    for requirements in ([inner, outer], [outer, inner]):
        with pytest.raises(ValueError, match=r"^secret path 'passwords.sip' is inside another required secret$"):
            fill_secrets({}, requirements)


def test_check_keeps_the_order_of_requirements_while_hashes_are_checked_aside(filled: dict[str, Any]) -> None:
    hashed = SecretRequirement(("hashes", "sip"), "bcrypt", "bcrypt hash of passwords.sip.2001",
                               of=SIP_2001.path)
    tree, _ = fill_secrets(filled, [*REQUIREMENTS, hashed])
    broken = copy.deepcopy(tree)
    broken["hashes"]["sip"] = tree["hashes"]["sip"][:-4] + "AAAA"
    broken["passwords"]["sip"]["2002"] = "changeme"
    assert [path for path, _ in check_secrets(broken, [hashed, *REQUIREMENTS])] == [
        ("passwords", "sip", "2002"), ("hashes", "sip")
    ]
    assert check_secrets(tree, [hashed, *REQUIREMENTS]) == []


def test_many_secrets_are_generated_kept_and_listed_as_unused_in_one_pass() -> None:
    many = [SecretRequirement(("passwords", "sip", str(2000 + n)), "password", f"SIP {n}") for n in range(5000)]
    tree, report = fill_secrets({}, many)
    assert len(report) == 5000 and len(tree["passwords"]["sip"]) == 5000
    kept, report = fill_secrets(tree, many[:4000])
    assert kept == tree
    assert report == [f"unused: passwords.sip.{2000 + n}" for n in range(4000, 5000)]


def _hash_of(name: str, of: tuple[str, ...]) -> SecretRequirement:
    return SecretRequirement(("hashes", name), "bcrypt", f"bcrypt hash of {'.'.join(of)}", of=of)


def test_hashes_are_settled_together_and_reported_in_order(filled: dict[str, Any]) -> None:
    first, second = _hash_of("a", SIP_2001.path), _hash_of("b", SIP_2002.path)
    tree, report = fill_secrets(filled, [*REQUIREMENTS, second, first])
    assert report == [
        "generated hashes.b (bcrypt hash of passwords.sip.2002)",
        "generated hashes.a (bcrypt hash of passwords.sip.2001)",
    ]
    weak = copy.deepcopy(tree)
    weak["passwords"]["sip"]["2001"] = "1234"
    again, report = fill_secrets(weak, [*REQUIREMENTS, second, first])
    assert report == [
        "replaced passwords.sip.2001 (SIP password of operator 2001): weak: shorter than 20 characters",
        "replaced hashes.a (bcrypt hash of passwords.sip.2001): unusable: it is not the hash of passwords.sip.2001",
    ]
    assert again["hashes"]["b"] == tree["hashes"]["b"]
    assert check_secrets(again, [*REQUIREMENTS, second, first]) == []


def test_a_hash_of_a_hash_is_settled_after_it() -> None:
    password = SecretRequirement(("pw",), "password", "a password")
    inner, outer = _hash_of("inner", password.path), _hash_of("outer", ("hashes", "inner"))
    tree, report = fill_secrets({}, [password, outer, inner])
    assert [line.split(" (")[0] for line in report] == ["generated pw", "generated hashes.outer",
                                                          "generated hashes.inner"]
    # outer was made from inner's value before inner existed ("None"), so it is replaced on the next run
    assert fill_secrets(tree, [password, outer, inner])[1] == [
        "replaced hashes.outer (bcrypt hash of hashes.inner): unusable: it is not the hash of hashes.inner"
    ]
