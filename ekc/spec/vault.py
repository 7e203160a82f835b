"""The region's secrets file, encrypted with ansible-vault (``$ANSIBLE_VAULT;1.1;AES256``).

We use ansible-core's own vault library rather than a look-alike, so that ``ansible-vault view``/``edit``
open our files and Ansible reads them as it reads any vault file. This module only moves text in and out of
the vault; what the text contains is :mod:`ekc.spec.secretgen`'s business.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import tempfile
from pathlib import Path

from ansible.errors import AnsibleError
from ansible.parsing.vault import AnsibleVaultFormatError, VaultLib, VaultSecret, is_encrypted

PASSWORD_ENV = "EKC_VAULT_PASSWORD"
PASSWORD_FILE_ENV = "EKC_VAULT_PASSWORD_FILE"
REGION_PASSWORD_FILE = ".vault_pass"
PASSWORD_LENGTH = 48
SECRET_FILE_MODE = 0o600


class VaultError(Exception):
    """A vault file or a vault password file cannot be used; the message says why in plain words."""


class VaultPasswordMissing(VaultError):
    """No vault password was found in any of the places ekc looks; the message lists them."""


def resolve_vault_password(explicit_file: Path | None, region_dir: Path) -> bytes:
    """Find the vault password, first match wins.

    Order: ``--vault-password-file`` (``explicit_file``), ``$EKC_VAULT_PASSWORD`` (the password itself),
    ``$EKC_VAULT_PASSWORD_FILE``, then ``<region_dir>/.vault_pass``. A place that is named explicitly (the
    option or an environment variable) but does not work is an error, not a reason to look further: the
    operator asked for that password. Password *scripts*, which ansible-vault runs when the file is
    executable, are not supported: ekc refuses an executable password file rather than read a script's
    source as the password. Raises :class:`VaultPasswordMissing` when no place has a password, and
    :class:`VaultError` when a named place is unusable.
    """
    if explicit_file is not None:
        return read_password_file(explicit_file, origin="--vault-password-file")
    from_env = os.environ.get(PASSWORD_ENV, "").strip()
    if from_env:
        return from_env.encode("utf-8")
    env_file = os.environ.get(PASSWORD_FILE_ENV, "")
    if env_file:
        return read_password_file(Path(env_file), origin=f"${PASSWORD_FILE_ENV}")
    region_file = region_dir / REGION_PASSWORD_FILE
    if region_file.exists():
        return read_password_file(region_file, origin="the region's password file")
    raise VaultPasswordMissing(
        "no vault password found; looked at: --vault-password-file (not given), "
        f"${PASSWORD_ENV} (not set), ${PASSWORD_FILE_ENV} (not set), {region_file} (does not exist). "
        f"Give one of them, or create {region_file} with: deploy.py secrets init <region>"
    )


def read_password_file(path: Path, *, origin: str) -> bytes:
    """Read a vault password file the way ansible-vault does: surrounding whitespace is stripped.

    Stripping exactly as ansible-vault does keeps the two tools agreeing on the password. ``origin`` names
    where the path came from, for the error message.
    """
    try:
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):
            raise VaultError(f"vault password file {path} (from {origin}) is not a regular file")
        if mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH):
            raise VaultError(
                f"vault password file {path} (from {origin}) is executable: ekc does not run password "
                f"scripts; put the password itself in the file and run: chmod 0600 {path}"
            )
        password = path.read_bytes().strip()
    except FileNotFoundError:
        raise VaultError(f"vault password file {path} (from {origin}) does not exist") from None
    except OSError as err:
        raise VaultError(f"cannot read vault password file {path} (from {origin}): {err.strerror}") from None
    if not password:
        raise VaultError(f"vault password file {path} (from {origin}) is empty")
    return password


def create_password_file(path: Path) -> bytes:
    """Create ``path`` holding a new random vault password (mode 0600) and return the password.

    The file is created with ``O_EXCL`` and its final mode in one call, so it is never readable by others,
    not even for an instant, and an existing password file (or a symlink planted in its place) is never
    overwritten: :class:`FileExistsError` is raised instead.
    """
    password = secrets.token_urlsafe(PASSWORD_LENGTH)[:PASSWORD_LENGTH].encode("ascii")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, SECRET_FILE_MODE)
    with os.fdopen(fd, "wb") as handle:
        handle.write(password + b"\n")
        handle.flush()
        os.fsync(handle.fileno())
    return password


def _vault(password: bytes) -> VaultLib:
    """A vault with one secret under ansible's default vault id, so files carry the 1.1 header."""
    return VaultLib([("default", VaultSecret(password))])


def read_vault(path: Path, password: bytes) -> str:
    """Decrypt the vault file at ``path`` and return its text (YAML, for the secrets file).

    Every failure becomes a :class:`VaultError` whose message names the file and what to do; a plaintext
    file is refused, because a secrets file that is not encrypted is already a leak waiting to happen.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise VaultError(f"{path} does not exist") from None
    except OSError as err:
        raise VaultError(f"cannot read {path}: {err.strerror}") from None
    if not is_encrypted(data):
        raise VaultError(
            f"{path} is not encrypted with ansible-vault: encrypt it with: ansible-vault encrypt "
            f"--vault-password-file {path.parent / REGION_PASSWORD_FILE} {path}"
        )
    try:
        plaintext: bytes = _vault(password).decrypt(data)
    except AnsibleVaultFormatError:
        raise VaultError(f"{path} is corrupt: it has an ansible-vault header but cannot be parsed") from None
    except AnsibleError:
        raise VaultError(f"wrong vault password for {path} (or the file is damaged)") from None
    try:
        return plaintext.decode("utf-8")
    except UnicodeDecodeError:
        raise VaultError(f"{path} decrypts, but its content is not UTF-8 text") from None


def write_vault(path: Path, text: str, password: bytes) -> None:
    """Encrypt ``text`` and replace ``path`` with it atomically (mode 0600).

    The ciphertext goes to a temporary file in the same directory (created 0600 by :func:`tempfile.mkstemp`),
    is fsynced, then renamed over ``path``: a crash leaves either the old file or the new one, never half a
    vault. ``OSError`` from the file system is left to the caller.
    """
    try:
        vaulttext: bytes = _vault(password).encrypt(text)
    except AnsibleError as err:
        raise VaultError(f"cannot encrypt {path}: {err.message}") from None
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), SECRET_FILE_MODE)
            handle.write(vaulttext)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable: fsync the directory that holds the new entry."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
