"""bcrypt hashes: made and proven as bcrypt does, and a pair proven once in a process is not proven again."""

from __future__ import annotations

import bcrypt
import pytest

from ekc.spec import hashes
from ekc.spec.hashes import hash_matches, is_public_hash, make_hash

PASSWORD = "Kx9mQ2vLr8TnW4pZ7aBcD3eF"


def test_a_made_hash_is_bcrypt_s_own_and_public() -> None:
    hashed = make_hash(PASSWORD)
    assert is_public_hash(hashed)
    assert bcrypt.checkpw(PASSWORD.encode(), hashed.encode())
    assert hashed.startswith(f"$2b${hashes.BCRYPT_ROUNDS:02d}$")


def test_only_the_right_password_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    calls: list[bytes] = []
    real = bcrypt.checkpw

    def counting(password: bytes, digest: bytes) -> bool:
        calls.append(password)
        return real(password, digest)

    monkeypatch.setattr(bcrypt, "checkpw", counting)
    assert hash_matches(PASSWORD, hashed) and hash_matches(PASSWORD, hashed)
    assert len(calls) == 1, "a pair proven once is not proven again"
    assert not hash_matches(PASSWORD + "x", hashed) and not hash_matches(PASSWORD + "x", hashed)
    assert len(calls) == 3, "a pair that does not match is checked each time"


def test_a_hash_made_here_needs_no_proof(monkeypatch: pytest.MonkeyPatch) -> None:
    hashed = make_hash(PASSWORD)
    monkeypatch.setattr(bcrypt, "checkpw", lambda *_: pytest.fail("proven again"))
    assert hash_matches(PASSWORD, hashed)


def test_the_process_remembers_no_password_or_hash() -> None:
    hashed = make_hash(PASSWORD)
    remembered = b"".join(hashes._PROVEN)
    assert PASSWORD.encode() not in remembered and hashed.encode() not in remembered
