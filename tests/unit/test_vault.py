"""The secrets vault: real ansible-vault encryption, interoperable with the ansible-vault CLI."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ekc.spec.vault import (
    PASSWORD_ENV,
    PASSWORD_FILE_ENV,
    VaultError,
    VaultPasswordMissing,
    create_password_file,
    read_vault,
    resolve_vault_password,
    write_vault,
)

PASSWORD = b"Tver-region-vault-password-2025"
TEXT = "passwords:\n  sip:\n    '2001': Kx9mQ2vLr8TnW4pZ7aBcD3eF\nca_name: ЕКЦ Тверской области\n"
ANSIBLE_VAULT = Path(sys.executable).parent / "ansible-vault"


@pytest.fixture(autouse=True)
def _no_password_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests must not see a vault password set in the environment of whoever runs them."""
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    monkeypatch.delenv(PASSWORD_FILE_ENV, raising=False)


def _ansible_vault(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the ansible-vault CLI isolated from any ansible.cfg or ANSIBLE_* setting around the test."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_")}
    env["ANSIBLE_HOME"] = str(tmp_path / "ansible-home")
    return subprocess.run(
        [str(ANSIBLE_VAULT), *args], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )


def _password_file(tmp_path: Path, content: bytes, name: str = "pass") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    path.chmod(0o600)
    return path


def test_round_trip_returns_the_text_written(tmp_path: Path) -> None:
    path = tmp_path / "secrets.yml"
    write_vault(path, TEXT, PASSWORD)
    assert read_vault(path, PASSWORD) == TEXT


def test_written_file_is_ansible_vault_1_1_aes256_without_plaintext(tmp_path: Path) -> None:
    path = tmp_path / "secrets.yml"
    write_vault(path, TEXT, PASSWORD)
    data = path.read_bytes()
    assert data.startswith(b"$ANSIBLE_VAULT;1.1;AES256\n")
    assert b"Kx9mQ2vLr8TnW4pZ7aBcD3eF" not in data


def test_written_file_has_mode_0600_and_no_temporary_file_is_left(tmp_path: Path) -> None:
    path = tmp_path / "secrets.yml"
    path.write_text("old")
    path.chmod(0o644)
    write_vault(path, TEXT, PASSWORD)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secrets.yml"]


def test_ansible_vault_view_decrypts_what_write_vault_wrote(tmp_path: Path) -> None:
    path = tmp_path / "secrets.yml"
    password_file = tmp_path / ".vault_pass"
    write_vault(path, TEXT, create_password_file(password_file))
    result = _ansible_vault(tmp_path, "view", "--vault-password-file", str(password_file), str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == TEXT


def test_read_vault_decrypts_what_ansible_vault_encrypted(tmp_path: Path) -> None:
    path = tmp_path / "secrets.yml"
    path.write_text(TEXT, encoding="utf-8")
    password_file = _password_file(tmp_path, PASSWORD + b"\n")
    result = _ansible_vault(tmp_path, "encrypt", "--vault-password-file", str(password_file), str(path))
    assert result.returncode == 0, result.stderr
    assert read_vault(path, PASSWORD) == TEXT


def test_wrong_password_is_a_plain_vault_error(tmp_path: Path) -> None:
    path = tmp_path / "secrets.yml"
    write_vault(path, TEXT, PASSWORD)
    with pytest.raises(VaultError, match=r"^wrong vault password for .*secrets\.yml"):
        read_vault(path, b"not-the-password")


def test_plaintext_secrets_file_is_refused_with_the_command_to_encrypt_it(tmp_path: Path) -> None:
    path = tmp_path / "secrets.yml"
    path.write_text(TEXT, encoding="utf-8")
    with pytest.raises(VaultError) as caught:
        read_vault(path, PASSWORD)
    assert str(caught.value) == (
        f"{path} is not encrypted with ansible-vault: encrypt it with: ansible-vault encrypt "
        f"--vault-password-file {tmp_path / '.vault_pass'} {path}"
    )


def test_corrupt_vault_file_is_reported_as_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "secrets.yml"
    path.write_bytes(b"$ANSIBLE_VAULT;1.1;AES256\nzz-not-hex\n")
    with pytest.raises(VaultError, match="is corrupt"):
        read_vault(path, PASSWORD)


def test_missing_vault_file_is_a_vault_error(tmp_path: Path) -> None:
    with pytest.raises(VaultError, match="does not exist"):
        read_vault(tmp_path / "secrets.yml", PASSWORD)


def test_create_password_file_writes_48_url_safe_chars_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / ".vault_pass"
    password = create_password_file(path)
    assert len(password) == 48
    assert password.decode("ascii").replace("-", "").replace("_", "").isalnum()
    assert path.read_bytes() == password + b"\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_create_password_file_never_overwrites(tmp_path: Path) -> None:
    path = _password_file(tmp_path, b"existing\n", ".vault_pass")
    with pytest.raises(FileExistsError):
        create_password_file(path)
    assert path.read_bytes() == b"existing\n"


def test_explicit_password_file_wins_and_is_stripped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "from-env")
    _password_file(tmp_path, b"from-region\n", ".vault_pass")
    explicit = _password_file(tmp_path, b"from-option\n")
    assert resolve_vault_password(explicit, tmp_path) == b"from-option"


def test_password_env_comes_before_password_file_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "from-env")
    monkeypatch.setenv(PASSWORD_FILE_ENV, str(_password_file(tmp_path, b"from-env-file\n")))
    assert resolve_vault_password(None, tmp_path) == b"from-env"


def test_password_file_env_comes_before_region_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _password_file(tmp_path, b"from-region\n", ".vault_pass")
    monkeypatch.setenv(PASSWORD_FILE_ENV, str(_password_file(tmp_path, b"from-env-file\n")))
    assert resolve_vault_password(None, tmp_path) == b"from-env-file"


def test_region_password_file_is_the_last_resort(tmp_path: Path) -> None:
    _password_file(tmp_path, b"from-region\r\n", ".vault_pass")
    assert resolve_vault_password(None, tmp_path) == b"from-region"


def test_no_password_anywhere_lists_every_place_looked_at(tmp_path: Path) -> None:
    with pytest.raises(VaultPasswordMissing) as caught:
        resolve_vault_password(None, tmp_path)
    message = str(caught.value)
    for place in ("--vault-password-file", PASSWORD_ENV, PASSWORD_FILE_ENV, str(tmp_path / ".vault_pass")):
        assert place in message


def test_executable_password_file_is_refused_not_run(tmp_path: Path) -> None:
    script = _password_file(tmp_path, b"#!/bin/sh\necho secret\n")
    script.chmod(0o700)
    with pytest.raises(VaultError, match="is executable: ekc does not run password scripts"):
        resolve_vault_password(script, tmp_path)


def test_named_but_missing_password_file_is_an_error_not_a_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _password_file(tmp_path, b"from-region\n", ".vault_pass")
    monkeypatch.setenv(PASSWORD_FILE_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(VaultError, match=r"does not exist") as caught:
        resolve_vault_password(None, tmp_path)
    assert not isinstance(caught.value, VaultPasswordMissing)


def test_empty_password_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(VaultError, match="is empty"):
        resolve_vault_password(_password_file(tmp_path, b"\n"), tmp_path)
