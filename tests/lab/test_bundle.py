"""A real bundle built from Debian's archive and PyPI in a forky build root, checked and installed offline.

Needs root, systemd-nspawn and debootstrap, and the archive and PyPI (the connected side). The first run
builds the cached forky root (about a minute); the bundle builds then take 15-20 s each.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import pytest

from ekc.bundle.build import BundleResult, build_bundle
from ekc.bundle.check import offline_install_check, verify_bundle
from ekc.bundle.lock import BundleError, BundleLock, wheel_name_version
from ekc.crypto.bundlekey import GpgKey, make_signing_key

pytestmark = [
    pytest.mark.lab,
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0 or not all(shutil.which(t) for t in ("systemd-nspawn", "debootstrap", "apt-ftparchive")),
        reason="needs root, systemd-nspawn, debootstrap and apt-ftparchive (apt-utils)",
    ),
]

PACKAGES = ["chrony", "nftables"]
# one pure-Python wheel and one with a compiled extension (tagged for one CPython version)
REQUIREMENTS = ["six==1.17.0", "markupsafe==3.0.3"]


@pytest.fixture(scope="module")
def key() -> GpgKey:
    """The region's bundle key for this module."""
    return make_signing_key("ekc bundle lab-test <ekc-bundle@lab.test>")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the module's bundles and the region's lock live."""
    return tmp_path_factory.mktemp("bundles")


@pytest.fixture(scope="module")
def first(workdir: Path, key: GpgKey) -> BundleResult:
    """A bundle resolved afresh; it writes the region's lock."""
    lock = workdir / "inventory" / "bundle.lock"
    return build_bundle(PACKAGES, REQUIREMENTS, workdir / "first", key, lock=lock, region="lab")


@pytest.fixture(scope="module")
def second(first: BundleResult, workdir: Path, key: GpgKey) -> BundleResult:
    """The same bundle rebuilt from the lock the first build wrote."""
    lock = workdir / "inventory" / "bundle.lock"
    return build_bundle(PACKAGES, REQUIREMENTS, workdir / "second", key, lock=lock, region="lab")


@pytest.fixture
def copy(first: BundleResult, tmp_path: Path) -> Path:
    """A private copy of the first bundle that a test may tamper with."""
    return Path(shutil.copytree(first.out, tmp_path / "bundle"))


def _lock(out: Path) -> BundleLock:
    return BundleLock.from_json((out / "bundle.lock").read_text(encoding="utf-8"))


def test_a_fresh_bundle_verifies_with_the_region_key(first: BundleResult, key: GpgKey) -> None:
    assert verify_bundle(first.out, key.public_armored) == []


def test_the_bundle_carries_the_requested_packages_and_what_the_base_lacks(first: BundleResult) -> None:
    names = {d.name for d in _lock(first.out).debs}
    assert {"chrony", "nftables", "libnftables1"} <= names
    assert "python3-pip" not in names  # the build's own tools never leak into the bundle
    assert first.debs == len(names) and first.deb_bytes > 0


def test_the_requested_packages_lie_in_the_pool(first: BundleResult) -> None:
    pool = {p.name.split("_")[0] for p in (first.out / "apt" / "pool").rglob("*.deb")}
    assert set(PACKAGES) <= pool


def test_wheels_are_built_for_the_targets_python(first: BundleResult) -> None:
    wheels = {wheel_name_version(p.name)[0]: p.name for p in (first.out / "wheels").glob("*.whl")}
    assert set(wheels) == {"six", "markupsafe"}
    major, minor = first.python.split(".")[:2]
    assert f"-cp{major}{minor}-" in wheels["markupsafe"]


def test_the_region_lock_is_written_and_copied_into_the_bundle(first: BundleResult, workdir: Path) -> None:
    assert first.lock_written
    region_lock = (workdir / "inventory" / "bundle.lock").read_text(encoding="utf-8")
    assert region_lock == (first.out / "bundle.lock").read_text(encoding="utf-8")


def test_the_sbom_has_one_component_per_deb_and_wheel(first: BundleResult, key: GpgKey) -> None:
    sbom = json.loads((first.out / "sbom.cdx.json").read_text(encoding="utf-8"))
    assert len(sbom["components"]) == first.debs + first.wheels
    properties = sbom["metadata"]["component"]["properties"]
    assert {"name": "ekc:signing-key-fingerprint", "value": key.fingerprint} in properties


def test_one_changed_byte_of_a_deb_is_named(copy: Path, key: GpgKey) -> None:
    deb = next((copy / "apt" / "pool").rglob("chrony_*.deb"))
    data = bytearray(deb.read_bytes())
    data[len(data) // 2] ^= 0xFF
    deb.write_bytes(bytes(data))
    rel = deb.relative_to(copy).as_posix()
    assert verify_bundle(copy, key.public_armored) == [
        f"{rel}: sha256 does not match SHA256SUMS (changed after signing)"
    ]


def test_a_changed_checksum_list_fails_its_signature(copy: Path, key: GpgKey) -> None:
    sums = copy / "SHA256SUMS"
    data = bytearray(sums.read_bytes())
    data[0] = ord("0") if data[0] != ord("0") else ord("1")
    sums.write_bytes(bytes(data))
    problems = verify_bundle(copy, key.public_armored)
    assert any(p.startswith("SHA256SUMS.asc: not a valid signature") for p in problems)


def test_the_bundle_does_not_verify_with_another_key(first: BundleResult) -> None:
    other = make_signing_key("forger <forger@lab.test>")
    problems = verify_bundle(first.out, other.public_armored)
    assert [p.split(":")[0] for p in problems] == ["SHA256SUMS.asc", "apt/dists/ekc/InRelease"]


def test_a_rebuild_from_the_lock_gets_the_same_debs_and_wheels(first: BundleResult, second: BundleResult) -> None:
    assert not second.lock_written
    assert _lock(second.out) == _lock(first.out)


def test_a_rebuild_from_the_lock_verifies(second: BundleResult, key: GpgKey) -> None:
    assert verify_bundle(second.out, key.public_armored) == []


def test_a_lock_the_archive_does_not_match_fails_naming_the_package(
    first: BundleResult, workdir: Path, key: GpgKey
) -> None:
    lock = _lock(first.out)
    chrony = next(d for d in lock.debs if d.name == "chrony")
    forged = dataclasses.replace(chrony, sha256="0" * 64)
    bad = dataclasses.replace(lock, debs=tuple(forged if d is chrony else d for d in lock.debs))
    path = workdir / "forged.lock"
    path.write_text(bad.to_json(), encoding="utf-8")
    with pytest.raises(BundleError, match=r"deb chrony 4\S*: sha256 \w+, the lock says 0{64}"):
        build_bundle(PACKAGES, REQUIREMENTS, workdir / "forged", key, lock=path, region="lab")
    assert not (workdir / "forged").exists()


def test_a_networkless_node_installs_chrony_from_the_bundle_alone(first: BundleResult, key: GpgKey) -> None:
    output = offline_install_check(first.out, key.public_armored, ["chrony"])
    assert any(line.startswith("chrony\t") for line in output.splitlines())


def test_a_networkless_node_refuses_a_bundle_signed_by_another_key(first: BundleResult) -> None:
    other = make_signing_key("forger <forger@lab.test>")
    with pytest.raises(BundleError, match=r"(?s)install from the bundle alone.*InRelease' is not signed"):
        offline_install_check(first.out, other.public_armored, ["chrony"])
