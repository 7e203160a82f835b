"""Rendered files pass their own program's check, where that program exists on this machine."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from ekc.render.build import write_build
from ekc.render.manifest import host_file_path
from tests.support.forky import forky_deb, forky_loader
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


@pytest.fixture(scope="module")
def kamailio(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """forky's kamailio (the version the proxies run), unpacked, run with forky's loader: its command and
    its modules directory (``-L``)."""
    if not shutil.which("dpkg-deb"):
        pytest.skip("dpkg-deb is not available to unpack forky's packages")
    loader = forky_loader()
    root = tmp_path_factory.mktemp("kamailio")
    subprocess.run(["dpkg-deb", "-x", str(forky_deb("kamailio", root)), str(root / "x")], check=True)
    modules = root / "x" / "usr" / "lib" / "x86_64-linux-gnu" / "kamailio" / "modules"
    return [*loader, str(root / "x" / "usr" / "sbin" / "kamailio"), "-L", str(modules)]


def _kamailio_check(kamailio: list[str], config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*kamailio, "-c", "-f", str(config)], capture_output=True, text=True, timeout=60)


def test_kamailio_configs_pass_kamailio_check(kamailio: list[str], tmp_path: Path) -> None:
    """Every SIP proxy's kamailio.cfg (inventories/ha) parses, with every module it loads and every function
    it calls (``kamailio -c``: the check the unit runs before it starts Kamailio)."""
    result = placeholder_render("ha")
    proxies = [h.name for h in result.manifest.hosts if "sip-proxy" in h.roles]
    assert proxies == ["edge1", "edge2"]
    for host in proxies:
        config = tmp_path / f"{host}.cfg"
        config.write_bytes(result.contents[(host, "/etc/kamailio/kamailio.cfg")])
        proc = _kamailio_check(kamailio, config)
        assert proc.returncode == 0 and "config file ok" in proc.stderr, f"{host}: {proc.stderr[-2000:]}"


def test_kamailio_check_refuses_a_broken_config(kamailio: list[str], tmp_path: Path) -> None:
    """The check can fail: the same configuration without the module its metrics timer needs is refused."""
    text = placeholder_render("ha").contents[("edge1", "/etc/kamailio/kamailio.cfg")].decode()
    assert 'loadmodule "rtimer.so"\n' in text
    config = tmp_path / "broken.cfg"
    config.write_text(text.replace('loadmodule "rtimer.so"\n', ""), encoding="utf-8")
    proc = _kamailio_check(kamailio, config)
    assert proc.returncode != 0 and "rtimer" in proc.stderr
