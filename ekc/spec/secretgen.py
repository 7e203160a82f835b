"""Generate, keep and check the credentials a region needs (the content of its vault-encrypted secrets.yml).

Which secrets a region needs is decided elsewhere and arrives as a list of :class:`SecretRequirement`. Here we
decide whether what is stored can be kept (present, right shape, strong, certificate still matching) and
generate whatever cannot. Existing good values are never touched: regenerating a working password would
break every phone and service that already uses it. Messages and report lines name secrets by path and
purpose only; no function here ever puts a secret value into a message. What makes a single password strong,
and how one is drawn, is :mod:`ekc.spec.passwords`.

Layout of secrets.yml: a nested mapping following each requirement's ``path``. ``password`` and
``django_secret_key`` are strings; ``ca`` and ``host_cert`` are ``{cert: <PEM>, key: <PEM>}``; ``ssh_key`` is
``{private: <OpenSSH>, public: <OpenSSH line>}``; ``gpg_key`` (the bundle's signing key) is
``{private: <armored>, public: <armored>, fingerprint: <hex>}``. The CA lives at ``ca``; host certificates are
issued by it. ``bcrypt`` is the bcrypt hash of the password stored at the requirement's ``of`` path (the
services that accept a hash get it; a render uses the stored hash, so it stays byte-identical).
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

from ekc.crypto import bundlekey, pki
from ekc.spec.hashes import BCRYPT_HASH, BCRYPT_ROUNDS, hash_matches, is_public_hash, make_hash
from ekc.spec.passwords import django_key_problem, generate_django_secret_key, generate_password, is_strong
from ekc.spec.secrettree import SecretPath, dotted, lookup, proper_prefixes, secret_values, store, unused

# Also the public names of the modules split from this one, where callers have always found them.
__all__ = [
    "BCRYPT_HASH", "BCRYPT_ROUNDS", "CA_PATH", "FIX_COMMAND", "SecretKind", "SecretPath", "SecretRequirement",
    "check_secrets", "fill_secrets", "generate_django_secret_key", "generate_password", "is_public_hash",
    "is_strong", "secret_values",
]  # fmt: skip

SecretKind = Literal["password", "django_secret_key", "ca", "host_cert", "ssh_key", "gpg_key", "bcrypt"]

CA_PATH: SecretPath = ("ca",)
FIX_COMMAND = "deploy.py secrets init <region>"

_SLOW_KINDS = frozenset({"bcrypt", "gpg_key"})


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
    found, value = lookup(tree, CA_PATH)
    pair = _pair(value, "cert", "key") if found else None
    if pair is None:
        return None
    ca = pki.KeyPair(cert_pem=pair[0], key_pem=pair[1])
    return ca if pki.ca_problem(ca) is None else None


def _text_problem(requirement: SecretRequirement, value: Any) -> _Problem | None:
    """Problem of a stored password or Django secret key."""
    if not isinstance(value, str):
        return _Problem("wrong type", "must be text (a quoted string)")
    reason = django_key_problem(value) if requirement.kind == "django_secret_key" else is_strong(value)
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


def _bcrypt_problem(requirement: SecretRequirement, value: Any, tree: Mapping[Any, Any]) -> _Problem | None:
    """Problem of a stored bcrypt hash: not a hash, or not the hash of the password it stands for."""
    if not isinstance(value, str) or not is_public_hash(value):
        return _Problem("wrong type", "must be a bcrypt hash ($2b$...)")
    found, password = lookup(tree, requirement.of)
    if not found or not isinstance(password, str):
        return _Problem("unusable", f"the password it hashes ({dotted(requirement.of)}) is missing")
    if not hash_matches(password, value):
        return _Problem("unusable", f"it is not the hash of {dotted(requirement.of)}")
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
        _, password = lookup(tree, requirement.of)
        return make_hash(str(password))
    if kind == "gpg_key":
        key = bundlekey.make_signing_key(requirement.purpose)
        return {"private": key.private_armored, "public": key.public_armored, "fingerprint": key.fingerprint}
    if kind == "password":
        return generate_password()
    if kind == "django_secret_key":
        return generate_django_secret_key()
    if kind == "ssh_key":
        ssh = pki.make_ssh_keypair(f"ekc:{dotted(requirement.path)}")
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
    another, a CA anywhere but ``ca``, a host certificate without a CA requirement or without a name. Each
    check is a set lookup, so a region with tens of thousands of secrets is checked in linear time.
    """
    counts = Counter(requirement.path for requirement in requirements)
    enclosing = proper_prefixes(counts)
    for requirement in requirements:
        path = requirement.path
        if not path or counts[path] > 1:
            raise ValueError(f"secret path {dotted(path)!r} is empty or required twice")
        if path in enclosing:
            raise ValueError(f"secret path {dotted(path)!r} is inside another required secret")
        if (requirement.kind == "ca") != (path == CA_PATH):
            raise ValueError(f"the region CA must be required at 'ca', and only there ({dotted(path)})")
        if requirement.kind == "host_cert" and not (requirement.hostname or requirement.fqdn):
            raise ValueError(f"host certificate {dotted(path)!r} has neither hostname nor fqdn")
        if requirement.kind == "bcrypt" and requirement.of not in counts:
            raise ValueError(f"bcrypt hash {dotted(path)!r} is of {dotted(requirement.of)!r}, not required")
    if any(r.kind == "host_cert" for r in requirements) and CA_PATH not in counts:
        raise ValueError("host certificates are required but the region CA ('ca') is not")
    # The CA first (host certificates need it), hashes last (their passwords must be settled first).
    return sorted(requirements, key=lambda requirement: (requirement.kind != "ca", requirement.kind == "bcrypt"))


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
    ca = _usable_ca(tree)
    hashes = [r for r in ordered if r.kind == "bcrypt"]  # last: their passwords are settled before them
    at_once = len(hashes) > 1 and {r.of for r in hashes}.isdisjoint(r.path for r in hashes)
    for requirement in ordered[: len(ordered) - len(hashes)] if at_once else ordered:
        problem = _problem_at(requirement, tree, ca)
        if problem is not None:
            report += _put(tree, requirement, problem, _generate(requirement, ca, tree))
            if requirement.path[0] == CA_PATH[0]:  # only a store under "ca" can change the CA
                ca = _usable_ca(tree)
    if at_once:
        for requirement, (problem, value) in zip(hashes, _settle_at_once(tree, hashes), strict=True):
            if problem is not None:
                report += _put(tree, requirement, problem, value)
    required = {r.path for r in ordered}
    report += [f"unused: {path}" for path in unused(tree, required, proper_prefixes(required))]
    return tree, report


def _put(tree: dict[str, Any], requirement: SecretRequirement, problem: _Problem, value: Any) -> list[str]:
    """Store the new value of ``requirement``; the report lines that say what was done and why."""
    lines = [f"replaced {path}: it was not a mapping" for path in store(tree, requirement.path, value)]
    where = f"{dotted(requirement.path)} ({requirement.purpose})"
    if problem is _MISSING:
        return [*lines, f"generated {where}"]
    return [*lines, f"replaced {where}: {problem.category}: {problem.reason}"]


def _settle_at_once(tree: dict[str, Any], hashes: list[SecretRequirement]) -> list[tuple[_Problem | None, Any]]:
    """Each hash's problem and, if it has one, its new value, worked out together in worker threads.

    A hash depends on the tree only through its own path and its password's, which storing the other hashes
    does not change when none is another's password; bcrypt releases the GIL while it works.
    """

    def settle(requirement: SecretRequirement) -> tuple[_Problem | None, Any]:
        problem = _problem_at(requirement, tree, None)
        return problem, None if problem is None else _generate(requirement, None, tree)

    with ThreadPoolExecutor(max_workers=len(hashes)) as pool:
        return list(pool.map(settle, hashes))


def _problem_at(requirement: SecretRequirement, tree: Mapping[Any, Any], ca: pki.KeyPair | None) -> _Problem | None:
    found, value = lookup(tree, requirement.path)
    return _problem(requirement, value, ca, tree) if found else _MISSING


def _problems(tree: Mapping[Any, Any], ordered: list[SecretRequirement]) -> list[_Problem | None]:
    """The problem of each requirement in ``tree`` (read-only), in order.

    The checks that wait on something other than Python, bcrypt's deliberate ~60 ms of hashing and gpg's
    processes, run in worker threads (both release the GIL) while the others go on.
    """
    ca = _usable_ca(tree)
    slow = [index for index, requirement in enumerate(ordered) if requirement.kind in _SLOW_KINDS]
    if not slow:
        return [_problem_at(requirement, tree, ca) for requirement in ordered]
    with ThreadPoolExecutor(max_workers=len(slow)) as pool:
        pending = {index: pool.submit(_problem_at, ordered[index], tree, ca) for index in slow}
        found = [None if index in pending else _problem_at(r, tree, ca) for index, r in enumerate(ordered)]
        return [pending[index].result() if index in pending else problem for index, problem in enumerate(found)]


def check_secrets(
    existing: Mapping[str, Any], requirements: list[SecretRequirement], *, fix_command: str = FIX_COMMAND
) -> list[tuple[SecretPath, str]]:
    """``(path, message)`` for each required secret that is missing, of the wrong type, weak, or unusable.

    Read-only: nothing is generated. Host certificates are checked against the stored CA only if that CA
    is itself usable. The caller adds the file and line; ``fix_command`` is what the message tells to run.
    """
    problems: list[tuple[SecretPath, str]] = []
    ordered = _ordered(requirements)
    for requirement, problem in zip(ordered, _problems(existing, ordered), strict=True):
        if problem is _MISSING:
            problems.append((requirement.path, f"missing: {requirement.purpose} (run: {fix_command})"))
        elif problem is not None:
            message = f"{problem.category}: {requirement.purpose}: {problem.reason}"
            problems.append((requirement.path, f"{message} (run: {fix_command} to replace it)"))
    return problems


