"""bcrypt hashes of stored passwords (for the services that accept a hash): recognising, making, proving them.

A proof costs ~60 ms of CPU, which is bcrypt's point, and ``secrets init`` checks the file it has just filled:
so a (password, hash) pair made or proven once in this process is remembered and not proven again. It is
remembered as an HMAC under a key drawn for this process, never as the password or the hash.
"""

from __future__ import annotations

import hmac
import re
import secrets

import bcrypt

# A bcrypt hash of a generated 32-character password: public (auditors may read it; it cannot be reversed).
BCRYPT_HASH = re.compile(r"^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$")
BCRYPT_ROUNDS = 10

_PROOF_KEY = secrets.token_bytes(32)
_PROVEN: set[bytes] = set()


def is_public_hash(value: str) -> bool:
    """Whether ``value`` is a bcrypt hash (shown to auditors, never counted as a secret)."""
    return bool(BCRYPT_HASH.match(value.strip()))


def _proof(password: bytes, hashed: bytes) -> bytes:
    return hmac.digest(_PROOF_KEY, len(password).to_bytes(8, "big") + password + hashed, "sha256")


def make_hash(password: str) -> str:
    """A new bcrypt hash of ``password`` (a fresh salt, ``BCRYPT_ROUNDS``)."""
    secret = password.encode()
    hashed = bcrypt.hashpw(secret, bcrypt.gensalt(BCRYPT_ROUNDS))
    _PROVEN.add(_proof(secret, hashed))
    return hashed.decode("ascii")


def hash_matches(password: str, hashed: str) -> bool:
    """Whether ``hashed`` is a bcrypt hash of ``password`` (``bcrypt.checkpw``, once per pair and process)."""
    secret, digest = password.encode(), hashed.encode()
    proof = _proof(secret, digest)
    if proof in _PROVEN:
        return True
    if not bcrypt.checkpw(secret, digest):
        return False
    _PROVEN.add(proof)
    return True
