"""Generate, keep and check the credentials a region needs (the content of its vault-encrypted secrets.yml).

Which secrets a region needs is decided elsewhere and arrives as a list of :class:`SecretRequirement`. Here we
decide whether what is stored can be kept (present, right shape, strong, certificate still matching) and
generate whatever cannot. Existing good values are never touched: regenerating a working password would
break every phone and service that already uses it. Messages and report lines name secrets by path and
purpose only; no function here ever puts a secret value into a message.

Layout of secrets.yml: a nested mapping following each requirement's ``path``. ``password`` and
``django_secret_key`` are strings; ``ca`` and ``host_cert`` are ``{cert: <PEM>, key: <PEM>}``; ``ssh_key`` is
``{private: <OpenSSH>, public: <OpenSSH line>}``; ``gpg_key`` (the bundle's signing key) is
``{private: <armored>, public: <armored>, fingerprint: <hex>}``. The CA lives at ``ca``; host certificates are
issued by it. ``bcrypt`` is the bcrypt hash of the password stored at the requirement's ``of`` path (the
services that accept a hash get it; a render uses the stored hash, so it stays byte-identical).
"""

from __future__ import annotations

import copy
import re
import secrets
import string
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, Literal

import bcrypt

from ekc.crypto import bundlekey, pki

SecretKind = Literal["password", "django_secret_key", "ca", "host_cert", "ssh_key", "gpg_key", "bcrypt"]
SecretPath = tuple[str, ...]

CA_PATH: SecretPath = ("ca",)
MIN_LENGTH = 20
DJANGO_KEY_LENGTH = 50
FIX_COMMAND = "deploy.py secrets init <region>"

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
_OPENSSH_PUBLIC = re.compile(r"^(ssh-|ecdsa-sha2-|sk-)[\w@.-]+ [A-Za-z0-9+/]+={0,2}( .*)?$")
_PEM_BODY_MIN = 40
_FINGERPRINT = re.compile(r"^[0-9A-F]{40}$")  # an OpenPGP key's fingerprint: public
# A bcrypt hash of a generated 32-character password: public (auditors may read it; it cannot be reversed).
BCRYPT_HASH = re.compile(r"^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$")
BCRYPT_ROUNDS = 10


@dataclass(frozen=True)
class SecretRequirement:
    """One secret the region needs: where it lives in secrets.yml, what kind it is, and what it is for."""

    path: tuple[str, ...]  # where it lives in secrets.yml, e.g. ("passwords", "sip", "2001")
    kind: SecretKind
    purpose: str  # plain words for error messages, e.g. "SIP password of operator 2001"
    # for host_cert: the subject data
    hostname: str = ""
    fqdn: str = ""
    addresses: tuple[str, ...] = ()
    names: tuple[str, ...] = ()  # service names the host also answers to (the CRM's)
    # for bcrypt: the path of the password it is the hash of
    of: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Problem:
    """Why a stored secret cannot be kept: a category (missing, wrong type, weak, unusable) and a reason."""

    category: str
    reason: str = ""


_MISSING = _Problem("missing")


def generate_password(length: int = 32) -> str:
    """A random password of letters and digits with at least one lower, one upper and one digit.

    Drawn uniformly and redrawn until it has all three kinds and passes :func:`is_strong`, so a generated
    password is never reported as weak later.
    """
    if length < MIN_LENGTH:
        raise ValueError(f"a generated password must be at least {MIN_LENGTH} characters, not {length}")
    while True:
        value = "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(length))
        kinds = (str.islower, str.isupper, str.isdigit)
        if all(any(test(char) for char in value) for test in kinds) and is_strong(value) is None:
            return value


def generate_django_secret_key() -> str:
    """A 50-character Django SECRET_KEY that passes Django's own checks and is safe unquoted in config files.

    It starts with a letter or digit (no YAML indicator such as ``&``, ``*``, ``!`` or ``@`` up front) and
    contains lower-case letters, digits and symbols.
    """
    while True:
        value = "".join(secrets.choice(DJANGO_KEY_ALPHABET) for _ in range(DJANGO_KEY_LENGTH))
        if value[0].isalnum() and _django_key_problem(value) is None:
            return value


def _kinds_of_character(value: str) -> int:
    """How many of lower, upper, digit and symbol (anything else) occur in ``value``."""
    tests = (str.islower, str.isupper, str.isdigit, lambda char: not char.isalnum())
    return sum(1 for test in tests if any(test(char) for char in value))


def _is_well_known(value: str) -> bool:
    """Whether ``value`` is a common password or vendor default dressed up with digits and symbols."""
    lower = value.lower()
    core = _DECORATION.sub("", lower).translate(_SUBSTITUTIONS)
    candidates = {"".join(char for char in text if char.isalpha()) for text in (lower, core)}
    return bool(candidates & _WEAK_WORDS) or lower.startswith("django-insecure-")


def _repeats_a_pattern(value: str) -> bool:
    """Whether ``value`` is one shorter string repeated (``Ab1Ab1Ab1...``)."""
    return any(
        len(value) % size == 0 and value == value[:size] * (len(value) // size)
        for size in range(1, len(value) // 2 + 1)
    )


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


def _django_key_problem(value: str) -> str | None:
    """:func:`is_strong` plus Django's own rule (security.W009): at least 50 characters."""
    if len(value) < DJANGO_KEY_LENGTH:
        return f"shorter than {DJANGO_KEY_LENGTH} characters (Django's minimum for SECRET_KEY)"
    return is_strong(value)


def _dotted(path: SecretPath) -> str:
    """A path as written in messages: ``passwords.sip.2001``."""
    return ".".join(path)


def _key_for(mapping: Mapping[Any, Any], name: str) -> Any:
    """The key of ``mapping`` that stands for ``name``, or None.

    YAML reads an unquoted ``2001:`` as the integer 2001; such a key still means ``"2001"``.
    """
    if name in mapping:
        return name
    for key in mapping:
        if isinstance(key, int) and not isinstance(key, bool) and str(key) == name:
            return key
    return None


def _lookup(tree: Mapping[Any, Any], path: SecretPath) -> tuple[bool, Any]:
    """``(True, value)`` if ``path`` leads to a value through mappings, else ``(False, None)``."""
    node: Any = tree
    for name in path:
        if not isinstance(node, Mapping):
            return False, None
        key = _key_for(node, name)
        if key is None:
            return False, None
        node = node[key]
    return True, node


def _store(tree: MutableMapping[Any, Any], path: SecretPath, value: Any) -> list[str]:
    """Put ``value`` at ``path``, creating mappings on the way; returns the paths of non-mappings replaced."""
    replaced: list[str] = []
    node = tree
    for depth, name in enumerate(path[:-1], start=1):
        key = _key_for(node, name)
        if key is None:
            key = name
            node[key] = {}
        elif not isinstance(node[key], MutableMapping):
            replaced.append(_dotted(path[:depth]))
            node[key] = {}
        node = node[key]
    last = _key_for(node, path[-1])
    node[path[-1] if last is None else last] = value
    return replaced


def _pair(value: Any, first: str, second: str) -> tuple[str, str] | None:
    """``(value[first], value[second])`` if ``value`` is a mapping holding both as text, else None."""
    if not isinstance(value, Mapping):
        return None
    one, two = value.get(first), value.get(second)
    if isinstance(one, str) and isinstance(two, str):
        return one, two
    return None


def _usable_ca(tree: Mapping[Any, Any]) -> pki.KeyPair | None:
    """The CA stored at ``ca`` if it can still issue host certificates, else None."""
    found, value = _lookup(tree, CA_PATH)
    pair = _pair(value, "cert", "key") if found else None
    if pair is None:
        return None
    ca = pki.KeyPair(cert_pem=pair[0], key_pem=pair[1])
    return ca if pki.ca_problem(ca) is None else None


def _text_problem(requirement: SecretRequirement, value: Any) -> _Problem | None:
    """Problem of a stored password or Django secret key."""
    if not isinstance(value, str):
        return _Problem("wrong type", "must be text (a quoted string)")
    reason = _django_key_problem(value) if requirement.kind == "django_secret_key" else is_strong(value)
    return None if reason is None else _Problem("weak", reason)


def _cert_problem(requirement: SecretRequirement, value: Any, ca: pki.KeyPair | None) -> _Problem | None:
    """Problem of a stored CA or host certificate (``ca`` is the usable region CA, for host certificates)."""
    pair = _pair(value, "cert", "key")
    if pair is None:
        return _Problem("wrong type", "must be a mapping with 'cert' and 'key' (PEM text)")
    if requirement.kind == "ca":
        reason = pki.ca_problem(pki.KeyPair(cert_pem=pair[0], key_pem=pair[1]))
    elif ca is None:
        reason = "the region CA (ca) is missing or unusable, so this certificate cannot be trusted"
    elif not pki.key_matches_cert(pair[0], pair[1]):
        reason = "its private key is missing, unreadable, or not the certificate's key"
    else:
        reason = pki.cert_problem(
            pair[0],
            hostname=requirement.hostname,
            fqdn=requirement.fqdn,
            addresses=list(requirement.addresses),
            ca_cert_pem=ca.cert_pem,
            names=requirement.names,
        )
    return None if reason is None else _Problem("unusable", reason)


def is_public_hash(value: str) -> bool:
    """Whether ``value`` is a bcrypt hash (shown to auditors, never counted as a secret)."""
    return bool(BCRYPT_HASH.match(value.strip()))


def _bcrypt_problem(requirement: SecretRequirement, value: Any, tree: Mapping[Any, Any]) -> _Problem | None:
    """Problem of a stored bcrypt hash: not a hash, or not the hash of the password it stands for."""
    if not isinstance(value, str) or not is_public_hash(value):
        return _Problem("wrong type", "must be a bcrypt hash ($2b$...)")
    found, password = _lookup(tree, requirement.of)
    if not found or not isinstance(password, str):
        return _Problem("unusable", f"the password it hashes ({_dotted(requirement.of)}) is missing")
    if not bcrypt.checkpw(password.encode(), value.encode()):
        return _Problem("unusable", f"it is not the hash of {_dotted(requirement.of)}")
    return None


def _problem(
    requirement: SecretRequirement, value: Any, ca: pki.KeyPair | None, tree: Mapping[Any, Any]
) -> _Problem | None:
    """Why the stored ``value`` cannot be kept for ``requirement``, or None if it can."""
    if requirement.kind == "bcrypt":
        return _bcrypt_problem(requirement, value, tree)
    if requirement.kind in ("password", "django_secret_key"):
        return _text_problem(requirement, value)
    if requirement.kind in ("ca", "host_cert"):
        return _cert_problem(requirement, value, ca)
    if requirement.kind == "gpg_key":
        return _gpg_problem(value)
    pair = _pair(value, "private", "public")
    if pair is None:
        return _Problem("wrong type", "must be a mapping with 'private' and 'public' (OpenSSH text)")
    reason = pki.ssh_key_problem(pki.SshKeyPair(private_openssh=pair[0], public_openssh=pair[1]))
    return None if reason is None else _Problem("unusable", reason)


def _gpg_problem(value: Any) -> _Problem | None:
    """Problem of a stored bundle signing key."""
    pair = _pair(value, "private", "public")
    fingerprint = value.get("fingerprint") if isinstance(value, Mapping) else None
    if pair is None or not isinstance(fingerprint, str):
        return _Problem("wrong type", "must be a mapping with 'private', 'public' and 'fingerprint'")
    reason = bundlekey.key_problem(bundlekey.GpgKey(pair[0], pair[1], fingerprint))
    return None if reason is None else _Problem("unusable", reason)


def _generate(requirement: SecretRequirement, ca: pki.KeyPair | None, tree: Mapping[Any, Any]) -> Any:
    """A new value for ``requirement``, in the stored layout."""
    kind = requirement.kind
    if kind == "bcrypt":
        _, password = _lookup(tree, requirement.of)
        return bcrypt.hashpw(str(password).encode(), bcrypt.gensalt(BCRYPT_ROUNDS)).decode("ascii")
    if kind == "gpg_key":
        key = bundlekey.make_signing_key(requirement.purpose)
        return {"private": key.private_armored, "public": key.public_armored, "fingerprint": key.fingerprint}
    if kind == "password":
        return generate_password()
    if kind == "django_secret_key":
        return generate_django_secret_key()
    if kind == "ssh_key":
        ssh = pki.make_ssh_keypair(f"ekc:{_dotted(requirement.path)}")
        return {"private": ssh.private_openssh, "public": ssh.public_openssh}
    if kind == "ca":
        pair = pki.make_ca(requirement.purpose)
    elif ca is None:
        raise ValueError(f"cannot issue {requirement.purpose}: there is no usable region CA")
    else:
        addresses = list(requirement.addresses)
        pair = pki.issue_host_cert(ca, requirement.hostname, requirement.fqdn, addresses, names=requirement.names)
    return {"cert": pair.cert_pem, "key": pair.key_pem}


def _ordered(requirements: list[SecretRequirement]) -> list[SecretRequirement]:
    """The requirements, CA first (host certificates need it), after checking they make sense together.

    Raises ValueError for a list no secrets file could satisfy: an empty or duplicated path, a path inside
    another, a CA anywhere but ``ca``, a host certificate without a CA requirement or without a name.
    """
    paths = [requirement.path for requirement in requirements]
    for requirement in requirements:
        path = requirement.path
        if not path or paths.count(path) > 1:
            raise ValueError(f"secret path {_dotted(path)!r} is empty or required twice")
        if any(other[: len(path)] == path for other in paths if other != path):
            raise ValueError(f"secret path {_dotted(path)!r} is inside another required secret")
        if (requirement.kind == "ca") != (path == CA_PATH):
            raise ValueError(f"the region CA must be required at 'ca', and only there ({_dotted(path)})")
        if requirement.kind == "host_cert" and not (requirement.hostname or requirement.fqdn):
            raise ValueError(f"host certificate {_dotted(path)!r} has neither hostname nor fqdn")
        if requirement.kind == "bcrypt" and requirement.of not in paths:
            raise ValueError(f"bcrypt hash {_dotted(path)!r} is of {_dotted(requirement.of)!r}, not required")
    if any(r.kind == "host_cert" for r in requirements) and CA_PATH not in paths:
        raise ValueError("host certificates are required but the region CA ('ca') is not")
    # The CA first (host certificates need it), hashes last (their passwords must be settled first).
    return sorted(requirements, key=lambda requirement: (requirement.kind != "ca", requirement.kind == "bcrypt"))


def _unused(tree: Mapping[Any, Any], required: set[SecretPath], prefix: SecretPath = ()) -> Iterator[str]:
    """Dotted paths of stored entries that no requirement uses (whole subtrees are named once)."""
    for key, value in tree.items():
        path = (*prefix, str(key))
        if path in required:
            continue
        inside = any(other[: len(path)] == path for other in required)
        if inside and isinstance(value, Mapping):
            yield from _unused(value, required, path)
        else:
            yield _dotted(path)


def fill_secrets(
    existing: Mapping[str, Any], requirements: list[SecretRequirement]
) -> tuple[dict[str, Any], list[str]]:
    """Return ``existing`` completed: every missing or unusable secret generated, every good one kept as is.

    Also returns report lines naming (never quoting) what was generated or replaced and why, and the stored
    entries no requirement uses, which are kept ("unused: passwords.sip.2999") for a human to delete. When
    the CA is replaced, every host certificate is reissued, since the old ones no longer verify. ``existing``
    is not modified.
    """
    tree: dict[str, Any] = copy.deepcopy(dict(existing))
    report: list[str] = []
    ordered = _ordered(requirements)
    for requirement in ordered:
        ca = _usable_ca(tree)
        found, value = _lookup(tree, requirement.path)
        problem = _problem(requirement, value, ca, tree) if found else _MISSING
        if problem is None:
            continue
        replaced = _store(tree, requirement.path, _generate(requirement, ca, tree))
        report += [f"replaced {path}: it was not a mapping" for path in replaced]
        where = f"{_dotted(requirement.path)} ({requirement.purpose})"
        if problem is _MISSING:
            report.append(f"generated {where}")
        else:
            report.append(f"replaced {where}: {problem.category}: {problem.reason}")
    report += [f"unused: {path}" for path in _unused(tree, {r.path for r in ordered})]
    return tree, report


def check_secrets(
    existing: Mapping[str, Any], requirements: list[SecretRequirement], *, fix_command: str = FIX_COMMAND
) -> list[tuple[SecretPath, str]]:
    """``(path, message)`` for each required secret that is missing, of the wrong type, weak, or unusable.

    Read-only: nothing is generated. Host certificates are checked against the stored CA only if that CA
    is itself usable. The caller adds the file and line; ``fix_command`` is what the message tells to run.
    """
    problems: list[tuple[SecretPath, str]] = []
    ca = _usable_ca(existing)
    for requirement in _ordered(requirements):
        found, value = _lookup(existing, requirement.path)
        problem = _problem(requirement, value, ca, existing) if found else _MISSING
        if problem is _MISSING:
            problems.append((requirement.path, f"missing: {requirement.purpose} (run: {fix_command})"))
        elif problem is not None:
            message = f"{problem.category}: {requirement.purpose}: {problem.reason}"
            problems.append((requirement.path, f"{message} (run: {fix_command} to replace it)"))
    return problems


def _leaf_secrets(value: str) -> list[str]:
    """The secret strings in one stored leaf: none for public material, else the value and PEM body lines."""
    text = value.strip()
    public = ("-----BEGIN CERTIFICATE-----", "-----BEGIN PGP PUBLIC KEY BLOCK-----")
    if (not text or text.startswith(public) or _OPENSSH_PUBLIC.match(text) or _FINGERPRINT.match(text)
            or BCRYPT_HASH.match(text)):
        return []
    found = [value]
    if text.startswith("-----BEGIN"):
        found += [
            line.strip()
            for line in text.splitlines()
            if len(line.strip()) >= _PEM_BODY_MIN and not line.startswith("-----")
        ]
    return found


def secret_values(secrets_tree: Mapping[Any, Any]) -> list[str]:
    """Every secret string in a secrets tree, longest first, for redaction and its self-check.

    Passwords, Django keys and private keys are secret; certificates and public keys are not, and are left
    out. A PEM private key also contributes each base64 body line of 40 characters or more, so a partial
    leak is caught too. Numbers count (a YAML-unquoted password is read as one); booleans do not.
    """
    found: set[str] = set()
    stack: list[Any] = [secrets_tree]
    while stack:
        node = stack.pop()
        if isinstance(node, Mapping):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, str):
            found.update(_leaf_secrets(node))
        elif isinstance(node, int | float) and not isinstance(node, bool):
            found.add(str(node))
    return sorted(found, key=lambda value: (-len(value), value))
