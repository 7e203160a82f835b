"""apply refuses a bundle that does not verify, naming the file, before anything reaches a host."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.lab]

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "bundle-refused-vault-password-not-a-secret-42"


def deploy(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EKC_VAULT_PASSWORD": PASSWORD}
    return subprocess.run([sys.executable, str(REPO / "deploy.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("refused")
    region = root / "refused"
    shutil.copytree(REPO / "inventories" / "small", region,
                    ignore=shutil.ignore_patterns("secrets.yml", ".vault_pass", "bundle*"))
    spec = region / "region.yml"  # the asterisk role alone keeps the bundle small: the refusal is the point
    spec.write_text(spec.read_text(encoding="utf-8").replace("roles: [asterisk, postgresql, crm, monitoring]",
                                                             "roles: [asterisk]"), encoding="utf-8")
    for args in (("secrets", "init", str(region)), ("bundle", "build", str(region), "-o", str(root / "bundle"))):
        done = deploy(*args, cwd=root)
        assert done.returncode == 0, done.stderr
    return region


def test_a_good_bundle_verifies(region: Path) -> None:
    done = deploy("bundle", "verify", str(region.parent / "bundle"), "--key",
                  str(region / "bundle-signing-key.asc"), cwd=region.parent)
    assert done.returncode == 0, done.stderr


def test_apply_refuses_a_bundle_with_one_byte_changed(region: Path) -> None:
    tampered = region.parent / "tampered"
    shutil.copytree(region.parent / "bundle", tampered)
    deb = sorted((tampered / "apt").rglob("chrony_*.deb"))[0]
    data = bytearray(deb.read_bytes())
    data[len(data) // 2] ^= 0x01
    deb.write_bytes(bytes(data))
    done = deploy("apply", str(region), "--bundle", str(tampered), "-y", cwd=region.parent)
    assert done.returncode == 1
    assert "is refused" in done.stderr and deb.name in done.stderr
