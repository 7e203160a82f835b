"""The secrets file as a tree: finding, storing and listing entries by path, and telling secret strings from
public ones (for redaction and its self-check).

Split from :mod:`ekc.spec.secretgen`, which decides what each required entry must be. A path is a tuple of
names (``("passwords", "sip", "2001")``); YAML may have read a name as an integer key, which still counts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import Any

from ekc.spec.hashes import BCRYPT_HASH

SecretPath = tuple[str, ...]

_OPENSSH_PUBLIC = re.compile(r"^(ssh-|ecdsa-sha2-|sk-)[\w@.-]+ [A-Za-z0-9+/]+={0,2}( .*)?$")
_PEM_BODY_MIN = 40
_FINGERPRINT = re.compile(r"^[0-9A-F]{40}$")  # an OpenPGP key's fingerprint: public


def dotted(path: SecretPath) -> str:
    """A path as written in messages: ``passwords.sip.2001``."""
    return ".".join(path)


def _key_for(mapping: Mapping[Any, Any], name: str) -> Any:
    """The key of ``mapping`` that stands for ``name``, or None.

    YAML reads an unquoted ``2001:`` as the integer 2001; such a key still means ``"2001"``. Only a name
    that is an integer written canonically can stand for one, so other names cost one dict lookup.
    """
    if name in mapping:
        return name
    try:
        number = int(name)
    except ValueError:
        return None
    if str(number) != name or number not in mapping:
        return None
    # A key equal to the number: an int, or a bool or float YAML also reads (which do not count).
    for key in mapping:
        if isinstance(key, int) and not isinstance(key, bool) and str(key) == name:
            return key
    return None


def lookup(tree: Mapping[Any, Any], path: SecretPath) -> tuple[bool, Any]:
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


def store(tree: MutableMapping[Any, Any], path: SecretPath, value: Any) -> list[str]:
    """Put ``value`` at ``path``, creating mappings on the way; returns the paths of non-mappings replaced."""
    replaced: list[str] = []
    node = tree
    for depth, name in enumerate(path[:-1], start=1):
        key = _key_for(node, name)
        if key is None:
            key = name
            node[key] = {}
        elif not isinstance(node[key], MutableMapping):
            replaced.append(dotted(path[:depth]))
            node[key] = {}
        node = node[key]
    last = _key_for(node, path[-1])
    node[path[-1] if last is None else last] = value
    return replaced


def proper_prefixes(paths: Iterable[SecretPath]) -> set[SecretPath]:
    """Every path that is the start of, but not the whole of, one of ``paths``."""
    return {path[:depth] for path in paths for depth in range(len(path))}


def unused(
    tree: Mapping[Any, Any], required: set[SecretPath], enclosing: set[SecretPath], prefix: SecretPath = ()
) -> Iterator[str]:
    """Dotted paths of stored entries that no requirement uses (whole subtrees are named once).

    ``enclosing`` holds the proper prefixes of the required paths (the mappings on the way to them).
    """
    for key, value in tree.items():
        path = (*prefix, str(key))
        if path in required:
            continue
        if path in enclosing and isinstance(value, Mapping):
            yield from unused(value, required, enclosing, path)
        else:
            yield dotted(path)


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
