"""The region's bundle signing key: an OpenPGP key that signs the bundle's APT repository and checksums.

Every node trusts exactly this key for its packages (``Signed-By:`` in its APT source), and the people who
carry a bundle into the contour check its ``SHA256SUMS.asc`` against the same key taken from the region's
vault, never against the copy inside the bundle. The key is ed25519 (signing only, no passphrase: the vault
encrypts it) and expires after five years, so a leaked or forgotten key stops being trusted on its own.

All work goes through ``gpg --batch`` / ``gpgv`` in throw-away home directories, so nothing ever touches the
operator's own keyrings. Messages describe keys by fingerprint and never quote key material.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

KEY_ALGORITHM = "ed25519"
KEY_LIFETIME = "5y"
# A key this close to its expiry is replaced: a bundle signed today must still install next month.
EXPIRY_MARGIN_DAYS = 90
DIGEST_ALGORITHM = "SHA512"
_PUBKEY_ALGO_EDDSA = "22"
_PROBE_TEXT = b"ekc bundle key check\n"


class GpgError(RuntimeError):
    """gpg or gpgv failed; the message says what was attempted and gpg's own words."""


@dataclass(frozen=True)
class GpgKey:
    """A signing key as kept in the vault: both halves ASCII-armored, and the primary key's fingerprint."""

    private_armored: str
    public_armored: str
    fingerprint: str


@dataclass(frozen=True)
class KeyFacts:
    """What gpg says about one primary key (from ``--with-colons``)."""

    fingerprint: str
    algorithm: str
    capabilities: str
    validity: str
    expires: int | None  # seconds since the epoch, None for never


def run_gpg(home: Path, args: Sequence[str], *, stdin: bytes | None = None, what: str) -> bytes:
    """Run ``gpg --batch`` with ``home`` as GNUPGHOME; return stdout or raise :class:`GpgError`."""
    argv = [
        "gpg",
        "--batch",
        "--no-tty",
        "--homedir",
        str(home),
        "--pinentry-mode",
        "loopback",
        "--passphrase",
        "",
        *args,
    ]
    done = subprocess.run(argv, input=stdin, capture_output=True, check=False)
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip()
        raise GpgError(f"could not {what}: gpg exited {done.returncode}: {message}")
    return done.stdout


@contextmanager
def gpg_home() -> Iterator[Path]:
    """A private, empty GNUPGHOME that is removed (and its agent stopped) afterwards."""
    with tempfile.TemporaryDirectory(prefix="ekc-gpg-") as name:
        home = Path(name)
        home.chmod(0o700)
        try:
            yield home
        finally:
            subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True, check=False)


def key_facts(home: Path, *, secret: bool = False) -> list[KeyFacts]:
    """The primary keys in ``home``'s keyring (public or secret), as gpg lists them."""
    listing = "--list-secret-keys" if secret else "--list-keys"
    text = run_gpg(home, ["--with-colons", "--fixed-list-mode", listing], what="list keys").decode()
    facts: list[KeyFacts] = []
    pending: list[str] | None = None
    for line in text.splitlines():
        fields = line.split(":")
        if fields[0] in ("pub", "sec"):
            pending = fields
        elif fields[0] == "fpr" and pending is not None:
            facts.append(
                KeyFacts(
                    fingerprint=fields[9],
                    algorithm=pending[3],
                    capabilities=pending[11],
                    validity=pending[1],
                    expires=int(pending[6]) if pending[6] else None,
                )
            )
            pending = None
    return facts


def make_signing_key(uid: str) -> GpgKey:
    """A new ed25519 signing key for ``uid`` (e.g. ``ekc bundle 54 <ekc@region54.local>``)."""
    with gpg_home() as home:
        run_gpg(home, ["--quick-generate-key", uid, KEY_ALGORITHM, "sign", KEY_LIFETIME], what="generate a key")
        (facts,) = key_facts(home, secret=True)
        private = run_gpg(home, ["--armor", "--export-secret-keys", facts.fingerprint], what="export the key")
        public = run_gpg(home, ["--armor", "--export", facts.fingerprint], what="export the public key")
    return GpgKey(private_armored=private.decode(), public_armored=public.decode(), fingerprint=facts.fingerprint)


def import_key(home: Path, armored: str) -> list[KeyFacts]:
    """Import an armored key (public or secret) into ``home``; the primary keys now in its keyring."""
    run_gpg(home, ["--import"], stdin=armored.encode(), what="import a key")
    return key_facts(home)


def public_keyring(armored_public: str, dest: Path) -> Path:
    """Write ``armored_public`` as a binary keyring at ``dest``, the form ``gpgv --keyring`` wants."""
    with gpg_home() as home:
        dest.write_bytes(run_gpg(home, ["--dearmor"], stdin=armored_public.encode(), what="read a public key"))
    return dest


@dataclass(frozen=True)
class SignatureCheck:
    """Whether a signature is good and by which primary key (None when it is not good)."""

    good: bool
    primary_fingerprint: str | None
    message: str


def check_signature(
    armored_public: str, signature: Path, data: Path | None = None, *, signed_text: Path | None = None
) -> SignatureCheck:
    """Check ``signature`` (detached over ``data``, or clear-signed when ``data`` is None) with gpgv.

    Only ``armored_public`` is in the keyring, so a good result means that key made the signature. For a
    clear-signed file, ``signed_text`` receives exactly the text the signature covers: read that, not the
    file around it, which may carry unsigned lines.
    """
    with tempfile.TemporaryDirectory(prefix="ekc-gpgv-") as name:
        keyring = public_keyring(armored_public, Path(name) / "trusted.gpg")
        argv = ["gpgv", "--status-fd", "1", "--keyring", str(keyring)]
        if signed_text is not None:
            argv += ["--output", str(signed_text)]
        argv.append(str(signature))
        if data is not None:
            argv.append(str(data))
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    primary = None
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[:2] == ["[GNUPG:]", "VALIDSIG"]:
            primary = parts[-1]
    good = done.returncode == 0 and primary is not None
    reason = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"gpgv exited {done.returncode}"
    return SignatureCheck(good=good, primary_fingerprint=primary if good else None, message=reason)


def _signing_problem(key: GpgKey, facts: KeyFacts, now: float) -> str | None:
    """Why an imported secret key cannot sign bundles (wrong key, no signing, expired, revoked), or None."""
    if facts.fingerprint.upper() != key.fingerprint.replace(" ", "").upper():
        return f"its private key is {facts.fingerprint}, not the recorded fingerprint"
    if "S" not in facts.capabilities:
        return "it cannot make signatures"
    if facts.validity in ("r", "e", "d", "i"):
        return "it is revoked, expired, disabled or invalid"
    if facts.expires is not None and facts.expires - now < EXPIRY_MARGIN_DAYS * 86400:
        day = time.strftime("%Y-%m-%d", time.gmtime(facts.expires))
        return f"it expires on {day}, less than {EXPIRY_MARGIN_DAYS} days away"
    return None


def key_problem(key: GpgKey, *, now: float | None = None) -> str | None:
    """Why a stored bundle key cannot be kept, in plain words, or None if it can sign bundles.

    Checks that the private key loads without a passphrase, is the recorded fingerprint, can sign, is
    neither expired (nor close to it) nor revoked, and that the public half verifies what the private half
    signs.
    """
    now = time.time() if now is None else now
    with gpg_home() as home:
        try:
            run_gpg(home, ["--import"], stdin=key.private_armored.encode(), what="import the private key")
            secret = key_facts(home, secret=True)
        except GpgError:
            return "its private key is not an unprotected armored OpenPGP secret key"
        if len(secret) != 1:
            return f"its private key block holds {len(secret)} keys, not one"
        problem = _signing_problem(key, secret[0], now)
        if problem is not None:
            return problem
        return _probe_problem(home, key, secret[0].fingerprint)


def _probe_problem(home: Path, key: GpgKey, fingerprint: str) -> str | None:
    """Sign a probe with the secret key imported in ``home`` and check it with ``key``'s public half."""
    probe = home / "probe"
    probe.write_bytes(_PROBE_TEXT)
    try:
        sign_detached(home, fingerprint, probe, probe.with_suffix(".sig"), armor=False)
    except GpgError:
        return "its private key cannot sign without a passphrase"
    try:
        check = check_signature(key.public_armored, probe.with_suffix(".sig"), probe)
    except GpgError:
        return "its public key is not an armored OpenPGP public key"
    if not check.good or check.primary_fingerprint != fingerprint:
        return "its public key does not belong to its private key"
    return None


def sign_detached(home: Path, fingerprint: str, data: Path, dest: Path, *, armor: bool = True) -> None:
    """Write a detached signature of ``data`` to ``dest`` with the secret key ``fingerprint`` in ``home``."""
    args = ["--digest-algo", DIGEST_ALGORITHM, "--local-user", fingerprint, "--yes", "--output", str(dest)]
    if armor:
        args.append("--armor")
    run_gpg(home, [*args, "--detach-sign", str(data)], what=f"sign {data.name}")


def sign_clear(home: Path, fingerprint: str, data: Path, dest: Path) -> None:
    """Write ``data`` clear-signed to ``dest`` (an APT ``InRelease``) with the key ``fingerprint``."""
    args = ["--digest-algo", DIGEST_ALGORITHM, "--local-user", fingerprint, "--yes", "--output", str(dest)]
    run_gpg(home, [*args, "--clearsign", str(data)], what=f"clear-sign {data.name}")


@contextmanager
def signing_home(key: GpgKey) -> Iterator[Path]:
    """A temporary GNUPGHOME holding only ``key``'s secret half, ready for :func:`sign_detached`."""
    with gpg_home() as home:
        run_gpg(home, ["--import"], stdin=key.private_armored.encode(), what="import the bundle key")
        yield home
