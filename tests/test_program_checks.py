"""Rendered files pass their own program's check, where that program exists on this machine."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from ekc.render.build import write_build
from ekc.render.manifest import host_file_path
from tests.support.render import placeholder_render

CASES = ("example", "small", "ha")


@pytest.fixture(scope="module", params=CASES)
def build(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    out = tmp_path_factory.mktemp(request.param)
    result = placeholder_render(request.param)
    write_build(result, out)
    return out, [h.name for h in result.manifest.hosts]


def _need(program: str) -> str:
    path = shutil.which(program) or (f"/usr/sbin/{program}" if Path(f"/usr/sbin/{program}").exists() else None)
    if not path:
        pytest.skip(f"{program} is not installed on this machine (make host-deps installs it)")
    return path


def test_nftables_rulesets_pass_nft_check(build: tuple[Path, list[str]]) -> None:
    nft = _need("nft")
    out, hosts = build
    for host in hosts:
        ruleset = host_file_path(out, host, "/etc/nftables.conf")
        proc = subprocess.run([nft, "-c", "-f", str(ruleset)], capture_output=True, text=True)
        assert proc.returncode == 0, f"{host}: {proc.stderr}"


def test_sshd_hardening_passes_sshd_check(build: tuple[Path, list[str]], tmp_path: Path) -> None:
    sshd = _need("sshd")
    out, hosts = build
    key = tmp_path / "host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd -t wants its privilege separation directory
    for host in hosts:
        dropin = host_file_path(out, host, "/etc/ssh/sshd_config.d/10-ekc-hardening.conf")
        config = tmp_path / f"{host}.sshd_config"
        config.write_text(f"Include {dropin}\nHostKey {key}\nPidFile none\n")
        proc = subprocess.run([sshd, "-T", "-f", str(config)], capture_output=True, text=True)
        assert proc.returncode == 0, f"{host}: {proc.stderr}"
        effective = set(proc.stdout.splitlines())
        assert {"passwordauthentication no", "kbdinteractiveauthentication no",
                "permitrootlogin without-password"} <= effective, f"{host}: hardening not effective"


@pytest.fixture(scope="module")
def chronyd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Debian's chronyd unpacked from its package, not installed: nothing starts, the clock is untouched."""
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        pytest.skip("apt-get/dpkg-deb not available to fetch chrony's package")
    root = tmp_path_factory.mktemp("chrony")
    proc = subprocess.run(["apt-get", "download", "-q", "chrony"], cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"chrony's package cannot be downloaded here: {proc.stderr.strip()[:200]}")
    deb = next(root.glob("chrony_*.deb"))
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root / "x")], check=True)
    return root / "x" / "usr" / "sbin" / "chronyd"


def test_chrony_config_parses(build: tuple[Path, list[str]], chronyd: Path) -> None:
    out, hosts = build
    for host in hosts:
        conf = host_file_path(out, host, "/etc/chrony/chrony.conf")
        proc = subprocess.run([str(chronyd), "-p", "-f", str(conf)], capture_output=True, text=True)
        assert proc.returncode == 0, f"{host}: {proc.stderr}"
        assert "cmdport 0" in proc.stdout and "server 10." in proc.stdout
