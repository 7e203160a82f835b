"""The bundle's data and checks without a build root: lock, SBOM, checksums, APT output, key, signatures.

The last part builds a tiny synthetic bundle from two hand-made debs with the host's own tools (gpg,
dpkg-deb, apt-ftparchive; no network, no build root, a second or two) to prove that ``verify_bundle``
catches every kind of tampering. The real build is proven in tests/lab/test_bundle.py.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from ekc.bundle.build import publish_apt_repo, read_lock, write_bundle_metadata
from ekc.bundle.buildroot import pip_settings
from ekc.bundle.check import verify_bundle
from ekc.bundle.lock import (
    BundleError,
    BundleLock,
    DebEntry,
    WheelEntry,
    deb_purl,
    lock_differences,
    make_sbom,
    node_sources,
    normalise_pypi_name,
    parse_sha256sums,
    parse_simulation,
    parse_stanzas,
    sha256sums_text,
    signed_release_hashes,
    wheel_name_version,
    wheel_purl,
)
from ekc.bundle.region import trusted_key
from ekc.crypto.bundlekey import GpgKey, check_signature, key_problem, make_signing_key, signing_home

SHA_A = "a" * 64
SHA_B = "b" * 64
CHRONY = DebEntry("chrony", "4.9-2", "amd64", SHA_A, 328980, "pool/main/c/chrony/chrony_4.9-2_amd64.deb")
OPENSSH = DebEntry(
    "openssh-server",
    "1:10.6p1-1",
    "amd64",
    SHA_B,
    641792,
    "pool/main/o/openssh/openssh-server_10.6p1-1_amd64.deb",
)
TZDATA = DebEntry("tzdata", "2026f-1", "all", SHA_A, 263396, "pool/main/t/tzdata/tzdata_2026f-1_all.deb")
SIX = WheelEntry("six", "1.17.0", SHA_B, "six-1.17.0-py2.py3-none-any.whl")
LOCK = BundleLock(
    suite="forky",
    architecture="amd64",
    python="3.14.8",
    packages=("chrony", "openssh-server"),
    python_requirements=("six==1.17.0",),
    debs=(TZDATA, OPENSSH, CHRONY),
    wheels=(SIX,),
)
FPR = "0123456789ABCDEF0123456789ABCDEF01234567"

SIMULATION = """\
The following NEW packages will be installed:
  chrony libedit2
0 upgraded, 2 newly installed, 1 reinstalled, 0 to remove and 0 not upgraded.
Inst libedit2 (3.1-20260512-1 Debian:testing [amd64])
Inst tzdata (2026f-1 Debian:testing [all])
Inst libc6:amd64 [2.42-1] (2.43-7 Debian:testing, Debian:unstable [amd64])
Inst openssh-server [1:10.6p1-1] (1:10.6p1-1 Debian:testing [amd64])
Conf libedit2 (3.1-20260512-1 Debian:testing [amd64])
"""


# ---------------------------------------------------------------- lock


def test_lock_round_trips_through_its_json() -> None:
    assert BundleLock.from_json(LOCK.to_json()) == dataclasses.replace(LOCK, debs=(CHRONY, OPENSSH, TZDATA))


def test_lock_lists_debs_sorted_by_name_whatever_the_input_order() -> None:
    names = [d["name"] for d in json.loads(LOCK.to_json())["debs"]]
    assert names == ["chrony", "openssh-server", "tzdata"]


def test_lock_entries_carry_name_version_arch_sha256_and_file() -> None:
    entry = json.loads(LOCK.to_json())["debs"][1]
    assert entry == {
        "name": "openssh-server", "version": "1:10.6p1-1", "arch": "amd64", "sha256": SHA_B, "size": 641792,
        "filename": "pool/main/o/openssh/openssh-server_10.6p1-1_amd64.deb",
    }  # fmt: skip


def test_lock_records_suite_architecture_and_the_request() -> None:
    data = json.loads(LOCK.to_json())
    assert (data["suite"], data["architecture"], data["packages"]) == (
        "forky",
        "amd64",
        ["chrony", "openssh-server"],
    )


def test_lock_text_is_the_same_for_the_same_content() -> None:
    shuffled = dataclasses.replace(LOCK, debs=(CHRONY, TZDATA, OPENSSH))
    assert shuffled.to_json() == LOCK.to_json()
    assert shuffled.digest() == LOCK.digest()


@pytest.mark.parametrize(
    "text", ["not json", "{}", json.dumps({"format": 99}), LOCK.to_json().replace('"sha256"', '"sha1"', 1)]
)
def test_a_broken_or_foreign_lock_is_refused(text: str) -> None:
    with pytest.raises(BundleError):
        BundleLock.from_json(text)


def test_no_differences_between_a_lock_and_the_same_build() -> None:
    assert lock_differences(LOCK, [CHRONY, OPENSSH, TZDATA], [SIX]) == []


def test_a_different_hash_is_a_difference_that_names_the_package() -> None:
    changed = dataclasses.replace(CHRONY, sha256=SHA_B)
    assert lock_differences(LOCK, [changed, OPENSSH, TZDATA], [SIX]) == [
        f"deb chrony 4.9-2: sha256 {SHA_B}, the lock says {SHA_A}"
    ]


def test_missing_extra_and_newer_packages_are_differences() -> None:
    newer = dataclasses.replace(OPENSSH, version="1:10.7p1-1")
    extra = dataclasses.replace(CHRONY, name="libedit2")
    assert lock_differences(LOCK, [newer, TZDATA, extra], []) == [
        "deb chrony: in the lock but not in this build",
        "deb libedit2: in this build but not in the lock",
        "deb openssh-server: version 1:10.7p1-1, the lock says 1:10.6p1-1",
        "wheel six: in the lock but not in this build",
    ]


def test_a_lock_made_for_another_request_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bundle.lock"
    path.write_text(LOCK.to_json(), encoding="utf-8")
    with pytest.raises(BundleError, match=r"Delete .*bundle\.lock"):
        read_lock(path, ["chrony", "nginx"], ["six==1.17.0"])


def test_a_lock_made_for_this_request_is_used_and_none_means_resolve(tmp_path: Path) -> None:
    path = tmp_path / "bundle.lock"
    assert read_lock(path, ["chrony"], []) is None
    path.write_text(LOCK.to_json(), encoding="utf-8")
    assert read_lock(path, ["chrony", "openssh-server"], ["six==1.17.0"]) == BundleLock.from_json(LOCK.to_json())


# ---------------------------------------------------------------- APT and pip output


def test_simulation_gives_every_package_to_fetch_with_version_and_arch() -> None:
    assert parse_simulation(SIMULATION) == [
        ("libc6", "2.43-7", "amd64"),
        ("libedit2", "3.1-20260512-1", "amd64"),
        ("openssh-server", "1:10.6p1-1", "amd64"),
        ("tzdata", "2026f-1", "all"),
    ]


def test_control_stanzas_are_read_field_by_field() -> None:
    text = "Package: chrony\nVersion: 4.9-2\nDescription: x\n long text\n\nPackage: nftables\nVersion: 1.1.7-3\n"
    stanzas = parse_stanzas(text)
    assert [(s["Package"], s["Version"]) for s in stanzas] == [("chrony", "4.9-2"), ("nftables", "1.1.7-3")]


def test_release_hashes_come_from_the_sha256_field_only() -> None:
    text = (
        f"Suite: ekc\nSHA256:\n {SHA_A}  12 main/binary-amd64/Packages\n {SHA_B} 5 main/binary-all/Packages\n"
        f"SHA512:\n {'c' * 128} 12 main/binary-amd64/Packages\n"
    )
    assert signed_release_hashes(text) == {
        "main/binary-amd64/Packages": SHA_A,
        "main/binary-all/Packages": SHA_B,
    }


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("six-1.17.0-py2.py3-none-any.whl", ("six", "1.17.0")),
        (
            "MarkupSafe-3.0.3-cp314-cp314-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
            ("markupsafe", "3.0.3"),
        ),
        ("zope.interface-7.2-1-cp314-cp314-linux_x86_64.whl", ("zope-interface", "7.2")),
    ],
)
def test_wheel_file_names_give_project_and_version(filename: str, expected: tuple[str, str]) -> None:
    assert wheel_name_version(filename) == expected


def test_python_project_names_are_normalised() -> None:
    assert normalise_pypi_name("Creme_CRM.core") == "creme-crm-core"


def test_pip_gets_the_hosts_config_its_ca_and_registry_variables_only(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x", encoding="utf-8")
    conf = tmp_path / "pip.conf"
    conf.write_text(f"[global]\ncert = {ca}\nindex-url = https://pypi.example/simple\n", encoding="utf-8")
    environ = {"PIP_DEFAULT_TIMEOUT": "180", "PIP_FIND_LINKS": "/opt/wheels", "HOME": "/root"}
    binds, env = pip_settings(conf, environ)
    assert binds == [f"--bind-ro={conf}:/etc/pip.conf", f"--bind-ro={ca}"]
    assert env == {"PIP_DEFAULT_TIMEOUT": "180"}


def test_nodes_use_a_deb822_source_signed_by_the_bundle_key() -> None:
    assert node_sources("http://10.54.0.1:8080/apt") == (
        "Types: deb\nURIs: http://10.54.0.1:8080/apt\nSuites: ekc\nComponents: main\n"
        "Signed-By: /etc/apt/keyrings/ekc-bundle.asc\n"
    )


# ---------------------------------------------------------------- SBOM


def test_deb_purl_keeps_the_epoch_colon_and_encodes_plus() -> None:
    plus = dataclasses.replace(TZDATA, name="libstdc++6", version="15.2.0-1+b1", arch="amd64")
    assert deb_purl(OPENSSH) == "pkg:deb/debian/openssh-server@1:10.6p1-1?arch=amd64&distro=forky"
    assert deb_purl(plus) == "pkg:deb/debian/libstdc%2B%2B6@15.2.0-1%2Bb1?arch=amd64&distro=forky"


def test_wheel_purl_is_pypi() -> None:
    assert wheel_purl(SIX) == "pkg:pypi/six@1.17.0"


def test_sbom_is_cyclonedx_1_5_with_one_component_per_deb_and_wheel() -> None:
    sbom = make_sbom(LOCK, region="54", fingerprint=FPR)
    assert (sbom["bomFormat"], sbom["specVersion"], sbom["version"]) == ("CycloneDX", "1.5", 1)
    components = sbom["components"]
    assert isinstance(components, list)
    assert [c["purl"] for c in components] == [
        "pkg:deb/debian/chrony@4.9-2?arch=amd64&distro=forky",
        "pkg:deb/debian/openssh-server@1:10.6p1-1?arch=amd64&distro=forky",
        "pkg:deb/debian/tzdata@2026f-1?arch=all&distro=forky",
        "pkg:pypi/six@1.17.0",
    ]
    assert components[0]["hashes"] == [{"alg": "SHA-256", "content": SHA_A}]


def test_sbom_metadata_names_the_bundle_and_its_key() -> None:
    metadata = make_sbom(LOCK, region="54", fingerprint=FPR)["metadata"]
    assert isinstance(metadata, dict)
    assert metadata["component"]["name"] == "ekc-bundle-54"
    assert {"name": "ekc:signing-key-fingerprint", "value": FPR} in metadata["component"]["properties"]
    assert "timestamp" not in metadata


def test_sbom_serial_is_a_uuid_derived_from_the_content() -> None:
    first = make_sbom(LOCK, region="54", fingerprint=FPR)
    assert first == make_sbom(LOCK, region="54", fingerprint=FPR)
    serial = str(first["serialNumber"])
    assert serial.startswith("urn:uuid:") and uuid.UUID(serial[9:]).version == 5
    other = make_sbom(dataclasses.replace(LOCK, wheels=()), region="54", fingerprint=FPR)
    assert other["serialNumber"] != first["serialNumber"]


# ---------------------------------------------------------------- SHA256SUMS


def test_sums_list_every_file_but_themselves_in_sha256sum_format(tmp_path: Path) -> None:
    (tmp_path / "apt" / "pool").mkdir(parents=True)
    (tmp_path / "apt" / "pool" / "a.deb").write_bytes(b"a")
    (tmp_path / "keyring.asc").write_bytes(b"")
    (tmp_path / "SHA256SUMS").write_text("old", encoding="utf-8")
    (tmp_path / "SHA256SUMS.asc").write_text("old", encoding="utf-8")
    text = sha256sums_text(tmp_path)
    assert text == (
        "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb  apt/pool/a.deb\n"
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  keyring.asc\n"
    )
    subprocess.run(["sha256sum", "--check", "--quiet", "-"], input=text.encode(), cwd=tmp_path, check=True)


def test_sums_are_parsed_back_including_the_binary_marker() -> None:
    entries, problems = parse_sha256sums(f"{SHA_A}  apt/x.deb\n{SHA_B} *wheels/y.whl\n")
    assert (entries, problems) == ({"apt/x.deb": SHA_A, "wheels/y.whl": SHA_B}, [])


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("nonsense", "SHA256SUMS:2: not a '<sha256>  <path>' line"),
        (f"{SHA_A.upper()}  a", "SHA256SUMS:2: not a '<sha256>  <path>' line"),
        (f"{SHA_A}  /etc/passwd", "SHA256SUMS:2: /etc/passwd: absolute, outside the bundle or listed twice"),
        (f"{SHA_A}  apt/../../x", "SHA256SUMS:2: apt/../../x: absolute, outside the bundle or listed twice"),
    ],
)
def test_bad_sums_lines_are_problems_with_their_line_number(line: str, problem: str) -> None:
    entries, problems = parse_sha256sums(f"{SHA_B}  ok\n{line}\n")
    assert (entries, problems) == ({"ok": SHA_B}, [problem])


def test_a_file_listed_twice_is_a_problem() -> None:
    _, problems = parse_sha256sums(f"{SHA_A}  a\n{SHA_B}  a\n")
    assert problems == ["SHA256SUMS:2: a: absolute, outside the bundle or listed twice"]


# ---------------------------------------------------------------- the bundle key


@pytest.fixture(scope="module")
def key() -> GpgKey:
    """One bundle key for the module (generation takes a fraction of a second, but why repeat it)."""
    return make_signing_key("ekc bundle unit-test <ekc-bundle@unit.test>")


@pytest.fixture(scope="module")
def other_key() -> GpgKey:
    """A second, unrelated key: what a forger would sign with."""
    return make_signing_key("someone else <forger@unit.test>")


def test_a_fresh_key_is_good(key: GpgKey) -> None:
    assert key_problem(key) is None


def test_a_fresh_key_is_ed25519_armored_and_named_by_its_fingerprint(key: GpgKey) -> None:
    assert key.private_armored.startswith("-----BEGIN PGP PRIVATE KEY BLOCK-----")
    assert key.public_armored.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    assert len(key.fingerprint) == 40
    listing = subprocess.run(
        ["gpg", "--with-colons", "--show-keys"],
        input=key.public_armored.encode(),
        capture_output=True,
        check=True,
    ).stdout.decode()
    assert ":22:" in next(line for line in listing.splitlines() if line.startswith("pub"))  # EdDSA


def test_a_key_whose_halves_do_not_match_is_a_problem(key: GpgKey, other_key: GpgKey) -> None:
    mixed = dataclasses.replace(key, public_armored=other_key.public_armored)
    assert key_problem(mixed) == "its public key does not belong to its private key"


def test_a_key_recorded_under_another_fingerprint_is_a_problem(key: GpgKey, other_key: GpgKey) -> None:
    problem = key_problem(dataclasses.replace(key, fingerprint=other_key.fingerprint))
    assert problem == f"its private key is {key.fingerprint}, not the recorded fingerprint"


def test_garbage_instead_of_a_key_is_a_problem_that_does_not_quote_it(key: GpgKey) -> None:
    problem = key_problem(dataclasses.replace(key, private_armored="hunter2-secret"))
    assert problem == "its private key is not an unprotected armored OpenPGP secret key"


def test_a_key_close_to_expiry_is_a_problem(key: GpgKey) -> None:
    four_years_and_ten_months = time.time() + (5 * 365 - 60) * 86400
    assert "expires on" in str(key_problem(key, now=four_years_and_ten_months))


# ---------------------------------------------------------------- a synthetic bundle, signed and checked

NEEDS_TOOLS = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("dpkg-deb", "apt-ftparchive", "gpg", "gpgv")),
    reason="needs dpkg-deb, apt-ftparchive (apt-utils), gpg and gpgv on this machine",
)


def _tiny_deb(pool: Path, name: str, arch: str) -> DebEntry:
    """A minimal real deb (control file only) in ``pool``, as the build would have downloaded it."""
    src = pool.parent / f"src-{name}"
    (src / "DEBIAN").mkdir(parents=True)
    (src / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: 1.0-1\nArchitecture: {arch}\nMaintainer: ekc <ekc@unit.test>\n"
        f"Description: synthetic test package\n",
        encoding="utf-8",
    )
    rel = f"pool/main/{name[0]}/{name}/{name}_1.0-1_{arch}.deb"
    (pool.parent / rel).parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(src), str(pool.parent / rel)],
                   check=True, capture_output=True)  # fmt: skip
    shutil.rmtree(src)
    return DebEntry(name, "1.0-1", arch, "0" * 64, 0, rel)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory, key: GpgKey) -> Path:
    """A complete, signed bundle of two tiny debs and a fake wheel, made like the real one."""
    out = tmp_path_factory.mktemp("bundle")
    debs = [
        _tiny_deb(out / "apt" / "pool", "ekc-demo", "amd64"),
        _tiny_deb(out / "apt" / "pool", "ekc-data", "all"),
    ]
    (out / "wheels").mkdir()
    (out / "wheels" / SIX.filename).write_bytes(b"PK fake wheel")
    lock = dataclasses.replace(LOCK, packages=("ekc-demo",), debs=tuple(debs))
    with signing_home(key) as home:
        publish_apt_repo(out / "apt", home, key.fingerprint, "unit")
        write_bundle_metadata(out, lock, key, region="unit", home=home)
    return out


@pytest.fixture
def bundle(synthetic: Path, tmp_path: Path) -> Path:
    """A private copy of the synthetic bundle that a test may tamper with."""
    return Path(shutil.copytree(synthetic, tmp_path / "bundle"))


@NEEDS_TOOLS
def test_an_untouched_bundle_verifies(bundle: Path, key: GpgKey) -> None:
    assert verify_bundle(bundle, key.public_armored) == []


@NEEDS_TOOLS
def test_the_repository_indexes_both_architectures_like_debian(bundle: Path) -> None:
    amd64 = (bundle / "apt/dists/ekc/main/binary-amd64/Packages").read_text(encoding="utf-8")
    arch_all = (bundle / "apt/dists/ekc/main/binary-all/Packages").read_text(encoding="utf-8")
    assert sorted(s["Package"] for s in parse_stanzas(amd64)) == ["ekc-data", "ekc-demo"]
    assert [s["Package"] for s in parse_stanzas(arch_all)] == ["ekc-data"]


@NEEDS_TOOLS
def test_the_release_has_no_weak_digest_and_no_expiry(bundle: Path) -> None:
    fields = parse_stanzas((bundle / "apt/dists/ekc/Release").read_text(encoding="utf-8"))[0]
    assert {k for k in fields if k in ("MD5Sum", "SHA1", "SHA256", "SHA512", "Valid-Until")} == {
        "SHA256",
        "SHA512",
    }
    assert (fields["Suite"], fields["Components"], fields["Architectures"]) == ("ekc", "main", "amd64 all")


@NEEDS_TOOLS
def test_signatures_use_sha512(bundle: Path) -> None:
    listing = subprocess.run(["gpg", "--list-packets"], input=(bundle / "SHA256SUMS.asc").read_bytes(),
                             capture_output=True, check=False).stdout.decode()  # fmt: skip
    assert "digest algo 10" in listing  # 10 = SHA512


@NEEDS_TOOLS
def test_one_changed_byte_of_a_deb_is_named(bundle: Path, key: GpgKey) -> None:
    deb = bundle / "apt/pool/main/e/ekc-demo/ekc-demo_1.0-1_amd64.deb"
    data = bytearray(deb.read_bytes())
    data[-1] ^= 0x01
    deb.write_bytes(bytes(data))
    assert verify_bundle(bundle, key.public_armored) == [
        f"{deb.relative_to(bundle)}: sha256 does not match SHA256SUMS (changed after signing)"
    ]


@NEEDS_TOOLS
def test_a_changed_checksum_list_fails_its_signature(bundle: Path, key: GpgKey) -> None:
    sums = bundle / "SHA256SUMS"
    sums.write_text(sums.read_text(encoding="utf-8").replace("0", "1", 1), encoding="utf-8")
    problems = verify_bundle(bundle, key.public_armored)
    assert problems[0].startswith(
        f"SHA256SUMS.asc: not a valid signature of SHA256SUMS by the region key {key.fingerprint}"
    )


@NEEDS_TOOLS
def test_a_bundle_re_signed_by_another_key_is_refused(bundle: Path, key: GpgKey, other_key: GpgKey) -> None:
    with signing_home(other_key) as home:
        publish_apt_repo(bundle / "apt", home, other_key.fingerprint, "unit")
        write_bundle_metadata(bundle, LOCK, other_key, region="unit", home=home)
    assert verify_bundle(bundle, other_key.public_armored) == []  # it is a good bundle of the other key...
    problems = verify_bundle(bundle, key.public_armored)  # ...but not of this region
    assert [p.split(":")[0] for p in problems] == ["SHA256SUMS.asc", "apt/dists/ekc/InRelease"]


@NEEDS_TOOLS
def test_an_added_file_is_named(bundle: Path, key: GpgKey) -> None:
    (bundle / "wheels" / "evil-1.0-py3-none-any.whl").write_bytes(b"PK")
    assert verify_bundle(bundle, key.public_armored) == ["wheels/evil-1.0-py3-none-any.whl: not listed in SHA256SUMS"]


@NEEDS_TOOLS
def test_a_removed_file_is_named(bundle: Path, key: GpgKey) -> None:
    (bundle / "wheels" / SIX.filename).unlink()
    assert verify_bundle(bundle, key.public_armored) == [f"wheels/{SIX.filename}: listed in SHA256SUMS but missing"]


@NEEDS_TOOLS
def test_a_missing_checksum_list_is_one_clear_problem(bundle: Path, key: GpgKey) -> None:
    (bundle / "SHA256SUMS").unlink()
    assert verify_bundle(bundle, key.public_armored) == [f"SHA256SUMS: missing: nothing in {bundle} can be checked"]


@NEEDS_TOOLS
def test_inrelease_is_clear_signed_over_release(bundle: Path, key: GpgKey, tmp_path: Path) -> None:
    signed = tmp_path / "signed"
    check = check_signature(key.public_armored, bundle / "apt/dists/ekc/InRelease", signed_text=signed)
    assert check.good and check.primary_fingerprint == key.fingerprint
    assert signed.read_bytes() == (bundle / "apt/dists/ekc/Release").read_bytes()


def test_a_region_key_that_is_not_a_key_is_one_problem(tmp_path: Path) -> None:
    assert verify_bundle(tmp_path, "not a key") == ["the region key given is not an armored OpenPGP public key"]


def test_a_region_without_its_public_bundle_key_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"no trusted bundle key at .*bundle-signing-key\.asc: run \./deploy\.py "
                                          r"secrets init"):
        trusted_key(tmp_path / "bundle", None, tmp_path)
