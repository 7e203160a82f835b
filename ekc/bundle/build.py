"""The offline bundle (pipeline step 3): everything the region's hosts install, built on the connected side.

A bundle directory holds:

- ``apt/``: a local APT repository (suite ``ekc``, component ``main``, amd64 + all) signed with the
  region's bundle key; the nodes' only package source (``URIs: http://<deploy host>:<port>/apt``,
  ``Signed-By: /etc/apt/keyrings/ekc-bundle.asc``);
- ``wheels/``: Python wheels built by ``pip wheel`` with the target's own python3, for ``pip --no-index``;
- ``keyring.asc``: the public bundle key, for convenience only: a bundle is checked against the key from
  the region's vault, never against the one it carries;
- ``sbom.cdx.json`` (CycloneDX 1.5), ``bundle.lock`` (exact versions and hashes), ``SHA256SUMS`` over
  every file and its detached signature ``SHA256SUMS.asc``.

Dependency closure. Packages are resolved inside a fresh copy of the clean build root from ``ekc.bundle.rootfs``:
a minbase Debian of the target suite plus the lab's base packages (systemd, openssh-server, python3,
ca-certificates, iproute2, procps, dbus). What the bundle carries is exactly what such a machine lacks to
install the requested packages, plus the requested packages themselves (so ``apt-get install --reinstall``
works offline). A contour server installed from other media must have at least that base at versions no
older than the build root's.

Reproducibility. The first build writes the lock; a build given an existing lock asks APT for exactly the
locked versions and fails if the archive no longer has them or serves different bytes.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ekc.bundle.buildroot import (
    PIP_PACKAGES,
    BuildRoot,
    build_root,
    pip_settings,
    run_in_root,
    shell_quote,
    target_python,
)
from ekc.bundle.lock import (
    ARCHITECTURE,
    COMPONENT,
    KEYRING_NAME,
    LOCK_NAME,
    REPO_SUITE,
    SBOM_NAME,
    SUITE,
    SUMS_NAME,
    SUMS_SIGNATURE,
    BundleError,
    BundleLock,
    DebEntry,
    WheelEntry,
    bundle_files,
    file_sha256,
    lock_differences,
    make_sbom,
    parse_simulation,
    parse_stanzas,
    sha256sums_text,
    wheel_name_version,
)
from ekc.crypto import bundlekey
from ekc.crypto.bundlekey import GpgKey

# Wheels built from sources get fixed timestamps, so a rebuild from the lock gives the same bytes.
SOURCE_DATE_EPOCH = "315532800"


@dataclass(frozen=True)
class BundleResult:
    """What a build made and what it cost."""

    out: Path
    debs: int
    deb_bytes: int
    wheels: int
    wheel_bytes: int
    total_bytes: int
    seconds: float
    python: str
    lock_written: bool
    fingerprint: str


# ---------------------------------------------------------------- build root


# ---------------------------------------------------------------- debs


def resolve_debs(build: BuildRoot, packages: Sequence[str], lock: BundleLock | None) -> list[DebEntry]:
    """The debs the bundle needs, with their archive metadata: the closure, or exactly the lock's set."""
    if not packages:
        return []
    pinned = [f"{d.name}={d.version}" for d in lock.debs] if lock else list(packages)
    args = " ".join(shell_quote(p) for p in pinned)
    flags = "--reinstall --no-install-recommends --allow-downgrades"
    text = run_in_root(
        build,
        f"apt-get update -q >/dev/null\napt-get install -s -q {flags} {args}",
        what="resolve the dependency closure",
    )
    wanted = parse_simulation(text)
    shown = run_in_root(
        build,
        "apt-cache show " + " ".join(shell_quote(f"{n}={v}") for n, v, _ in wanted),
        what="read package metadata",
    )
    index = {(s["Package"], s["Version"], s["Architecture"]): s for s in parse_stanzas(shown)}
    entries = []
    for key in wanted:
        stanza = index.get(key)
        if stanza is None:
            raise BundleError(f"the archive index has no entry for {key[0]} {key[1]} ({key[2]})")
        entries.append(
            DebEntry(
                name=key[0],
                version=key[1],
                arch=key[2],
                sha256=stanza["SHA256"],
                size=int(stanza["Size"]),
                filename=stanza["Filename"],
            )
        )
    return sorted(entries)


def download_debs(build: BuildRoot, debs: Sequence[DebEntry], apt_dir: Path) -> None:
    """Download ``debs`` through APT (which checks them against the signed index) and copy them to the pool.

    Each file's SHA-256 is checked again here against the index entry, so a cached file that went bad
    never reaches a bundle.
    """
    args = " ".join(shell_quote(f"{d.name}={d.version}") for d in debs)
    flags = "--reinstall --no-install-recommends --allow-downgrades"
    run_in_root(build, f"apt-get install -d -y -q {flags} {args}", what="download the packages")
    for deb in debs:
        cached = build.deb_cache / f"{deb.name}_{deb.version.replace(':', '%3a')}_{deb.arch}.deb"
        if not cached.is_file():
            raise BundleError(f"APT reported {deb.name} {deb.version} downloaded but {cached} is missing")
        if file_sha256(cached) != deb.sha256:
            cached.unlink()
            raise BundleError(f"{cached.name}: sha256 differs from the archive's signed index (removed; rerun)")
        target = apt_dir / deb.filename
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cached, target)


# ---------------------------------------------------------------- wheels


def build_wheels(
    build: BuildRoot, requirements: Sequence[str], lock: BundleLock | None, dest: Path
) -> list[WheelEntry]:
    """Wheels for ``requirements`` (or exactly the lock's) built by the target's own python3 and pip."""
    if not requirements:
        return []
    lines = [f"{w.name}=={w.version}" for w in lock.wheels] if lock else list(requirements)
    (build.io / "requirements.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (build.io / "wheels").mkdir()
    binds, env = pip_settings()
    no_deps = " --no-deps" if lock else ""
    run_in_root(build, "apt-get install -y -q --no-install-recommends " + " ".join(PIP_PACKAGES), what="install pip")
    run_in_root(
        build,
        f"python3 -m pip wheel -q --wheel-dir /ekc/wheels{no_deps} -r /ekc/requirements.txt",
        what="build the wheels",
        extra_binds=binds,
        env={**env, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH},
    )
    dest.mkdir(parents=True, exist_ok=True)
    wheels = []
    for path in sorted((build.io / "wheels").glob("*.whl")):
        name, version = wheel_name_version(path.name)
        shutil.copyfile(path, dest / path.name)
        wheels.append(WheelEntry(name=name, version=version, sha256=file_sha256(path), filename=path.name))
    return sorted(wheels)


# ---------------------------------------------------------------- APT repository and the signed bundle


def _ftparchive(args: Sequence[str], *, cwd: Path) -> bytes:
    """Run the host's apt-ftparchive (from apt-utils) in ``cwd``; its output."""
    if shutil.which("apt-ftparchive") is None:
        raise BundleError("apt-ftparchive not found on this machine: apt-get install apt-utils")
    no_weak = [
        f"-o=APT::FTPArchive::{index}::{algo}=false" for index in ("Packages", "Release") for algo in ("MD5", "SHA1")
    ]
    done = subprocess.run(["apt-ftparchive", *no_weak, *args], cwd=cwd, capture_output=True, check=False)
    if done.returncode != 0:
        raise BundleError(f"apt-ftparchive {' '.join(args)} failed: {done.stderr.decode(errors='replace')}")
    return done.stdout


def publish_apt_repo(apt_dir: Path, home: Path, fingerprint: str, region: str) -> None:
    """Index the pool under ``apt_dir`` as suite ``ekc``, component ``main``, and sign its Release.

    Like Debian's archive, ``binary-amd64`` lists arch-all packages too (for any APT), ``binary-all``
    lists only those. ``Release`` carries SHA256 and SHA512 only and no Valid-Until: a bundle carried into
    the contour must stay installable for as long as the region keeps it. ``InRelease`` and
    ``Release.gpg`` are signed with SHA512 digests.
    """
    dists = apt_dir / "dists" / REPO_SUITE
    (apt_dir / "pool" / COMPONENT).mkdir(parents=True, exist_ok=True)
    for arch in (ARCHITECTURE, "all"):
        index_dir = dists / COMPONENT / f"binary-{arch}"
        index_dir.mkdir(parents=True, exist_ok=True)
        packages = _ftparchive(["--arch", arch, "packages", f"pool/{COMPONENT}"], cwd=apt_dir)
        (index_dir / "Packages").write_bytes(packages)
        (index_dir / "Packages.gz").write_bytes(gzip.compress(packages, mtime=0))
    fields = {
        "Origin": "ekc",
        "Label": f"ekc bundle {region}",
        "Suite": REPO_SUITE,
        "Codename": REPO_SUITE,
        "Architectures": f"{ARCHITECTURE} all",
        "Components": COMPONENT,
        "Description": f"ekc offline bundle of region {region}",
    }
    for signed in ("Release", "InRelease", "Release.gpg"):  # apt-ftparchive would list an old Release
        (dists / signed).unlink(missing_ok=True)
    release = _ftparchive(
        [*(f"-o=APT::FTPArchive::Release::{k}={v}" for k, v in fields.items()), "release", "."], cwd=dists
    )
    (dists / "Release").write_bytes(release)
    bundlekey.sign_clear(home, fingerprint, dists / "Release", dists / "InRelease")
    bundlekey.sign_detached(home, fingerprint, dists / "Release", dists / "Release.gpg")


def write_bundle_metadata(out: Path, lock: BundleLock, key: GpgKey, *, region: str, home: Path) -> None:
    """The public key, SBOM and lock copy, then SHA256SUMS over everything and its signature."""
    (out / "wheels").mkdir(exist_ok=True)
    (out / KEYRING_NAME).write_text(key.public_armored, encoding="utf-8")
    sbom = make_sbom(lock, region=region, fingerprint=key.fingerprint)
    (out / SBOM_NAME).write_text(json.dumps(sbom, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / LOCK_NAME).write_text(lock.to_json(), encoding="utf-8")
    for path in [out, *out.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    (out / SUMS_NAME).write_text(sha256sums_text(out), encoding="utf-8")
    bundlekey.sign_detached(home, key.fingerprint, out / SUMS_NAME, out / SUMS_SIGNATURE)
    for name in (SUMS_NAME, SUMS_SIGNATURE):
        (out / name).chmod(0o644)


def read_lock(lock: Path | None, packages: Sequence[str], requirements: Sequence[str]) -> BundleLock | None:
    """The lock to rebuild from, or None to resolve afresh; refuse a lock made for another request."""
    if lock is None or not lock.exists():
        return None
    found = BundleLock.from_json(lock.read_text(encoding="utf-8"))
    if (found.packages, found.python_requirements) != (tuple(packages), tuple(requirements)):
        raise BundleError(
            f"{lock} was made for packages {list(found.packages)} and Python requirements "
            f"{list(found.python_requirements)}; this build asks for {list(packages)} and "
            f"{list(requirements)}. Delete {lock} to resolve the new set afresh."
        )
    return found


def _require_same(lock: BundleLock, debs: Sequence[DebEntry], wheels: Sequence[WheelEntry], path: Path | None) -> None:
    """Raise unless the build matches the lock (read from ``path``) exactly."""
    problems = lock_differences(lock, debs, wheels)
    if problems:
        listed = "\n".join(f"  {p}" for p in problems[:40])
        raise BundleError(f"this build does not reproduce {path}:\n{listed}\nDelete the lock to re-resolve.")


def _staging_dir(out: Path) -> Path:
    """An empty private directory beside ``out`` to build in; ``out`` itself must not exist or be empty."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BundleError(f"{out} already exists and is not empty: a bundle is only ever built fresh")
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))


def _collect(
    staging: Path,
    packages: Sequence[str],
    requirements: Sequence[str],
    old: BundleLock | None,
    *,
    lock_path: Path | None,
    suite: str,
    mirror: str | None,
) -> BundleLock:
    """Resolve, download and build into ``staging`` in a fresh build root; the new bundle's lock."""
    with build_root(suite=suite, mirror=mirror) as build:
        debs = resolve_debs(build, packages, old)
        if old is not None:
            _require_same(old, debs, old.wheels, lock_path)
        download_debs(build, debs, staging / "apt")
        python = target_python(build)
        wheels = build_wheels(build, requirements, old, staging / "wheels")
    new = BundleLock(
        suite=suite,
        architecture=ARCHITECTURE,
        python=python,
        packages=tuple(packages),
        python_requirements=tuple(requirements),
        debs=tuple(debs),
        wheels=tuple(wheels),
    )
    if old is not None:
        _require_same(old, debs, wheels, lock_path)
    return new


def build_bundle(
    packages: list[str],
    python_requirements: list[str],
    out: Path,
    key: GpgKey,
    *,
    lock: Path | None,
    region: str,
    suite: str = SUITE,
    mirror: str | None = None,
) -> BundleResult:
    """Build the signed offline bundle for ``packages`` and ``python_requirements`` into ``out``.

    ``lock``: when the file exists the build reproduces it exactly (or fails saying what differs); when it
    does not, the resolved set is written there. ``mirror`` defaults to the host's own Debian mirror.
    ``out`` appears only complete: the bundle is assembled beside it and renamed into place.
    """
    started = time.monotonic()
    problem = bundlekey.key_problem(key)
    if problem is not None:
        raise BundleError(f"the bundle key {key.fingerprint} cannot sign: {problem}")
    wanted, requirements = sorted(set(packages)), sorted(set(python_requirements))
    old = read_lock(lock, wanted, requirements)
    staging = _staging_dir(out)
    try:
        new = _collect(staging, wanted, requirements, old, lock_path=lock, suite=suite, mirror=mirror)
        with bundlekey.signing_home(key) as home:
            publish_apt_repo(staging / "apt", home, key.fingerprint, region)
            write_bundle_metadata(staging, new, key, region=region, home=home)
        if out.exists():
            out.rmdir()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if lock is not None and old is None:
        lock.parent.mkdir(parents=True, exist_ok=True)
        lock.write_text(new.to_json(), encoding="utf-8")
    return BundleResult(
        out=out,
        debs=len(new.debs),
        deb_bytes=sum(d.size for d in new.debs),
        wheels=len(new.wheels),
        wheel_bytes=sum((out / "wheels" / w.filename).stat().st_size for w in new.wheels),
        total_bytes=sum((out / rel).stat().st_size for rel in bundle_files(out)),
        seconds=round(time.monotonic() - started, 1),
        python=new.python,
        lock_written=old is None and lock is not None,
        fingerprint=key.fingerprint,
    )


# ---------------------------------------------------------------- checking a bundle


