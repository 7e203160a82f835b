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

import configparser
import contextlib
import gzip
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ekc.bundle import rootfs
from ekc.bundle.lock import (
    ARCHITECTURE,
    COMPONENT,
    KEYRING_NAME,
    LOCK_NAME,
    NODE_KEYRING,
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
    node_sources,
    parse_sha256sums,
    parse_simulation,
    parse_stanzas,
    sha256sums_text,
    signed_release_hashes,
    wheel_name_version,
)
from ekc.crypto import bundlekey
from ekc.crypto.bundlekey import GpgKey

__all__ = [
    "BundleError",
    "BundleLock",
    "BundleResult",
    "DebEntry",
    "WheelEntry",
    "build_bundle",
    "offline_install_check",
    "verify_bundle",
]

# Tools every wheel build needs inside the build root.
PIP_PACKAGES = ("python3-pip", "python3-venv")
# Environment a build root's pip may need from the host (registry, CA, proxies); nothing else passes.
PIP_ENV = (
    *("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST", "PIP_CERT", "PIP_CLIENT_CERT"),
    *("PIP_DEFAULT_TIMEOUT", "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"),
)
PIP_CONF = Path("/etc/pip.conf")
# Wheels built from sources get fixed timestamps, so a rebuild from the lock gives the same bytes.
SOURCE_DATE_EPOCH = "315532800"
# systemd-nspawn without a systemd host says this on every exit; it is not about the command.
_NSPAWN_NOISE = "Attempted to remove disk file system under"
# Succeeds once the bundle's HTTP server in a networkless root answers on loopback.
_PORT_PROBE = 'import socket; socket.create_connection(("127.0.0.1", 8080))'


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


@dataclass(frozen=True)
class BuildRoot:
    """A private copy of the clean build root and the host directories it shares with the host."""

    root: Path
    io: Path  # host side of /ekc inside the root
    suite: str = SUITE
    binds: tuple[str, ...] = ()

    @property
    def deb_cache(self) -> Path:
        """Where APT in this root keeps downloaded debs on the host (shared by every build of the suite)."""
        return deb_cache(self.suite)


def run_in_root(
    build: BuildRoot,
    script: str,
    *,
    what: str,
    network: bool = True,
    extra_binds: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> str:
    """Run ``sh -c script`` inside the build root with systemd-nspawn (no boot); its output.

    ``network=False`` gives the root a private network namespace with loopback only: nothing outside
    the machine can be reached, as in the contour.
    """
    argv = [
        "systemd-nspawn",
        "-D",
        str(build.root),
        "--register=no",
        "--keep-unit",
        "-q",
        "-M",
        f"ekc-{uuid.uuid4().hex[:12]}",
        "--setenv=LC_ALL=C.UTF-8",
        "--setenv=DEBIAN_FRONTEND=noninteractive",
        f"--bind={build.io}:/ekc",
    ]
    argv += [f"--setenv={k}={v}" for k, v in sorted((env or {}).items())]
    argv += [*build.binds, *extra_binds]
    if not network:
        argv.append("--private-network")
    done = subprocess.run(
        [*argv, "--", "sh", "-ec", script],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PATH": rootfs.sbin_path()},
    )
    if done.returncode != 0:
        lines = [line for line in (done.stdout + done.stderr).splitlines() if not line.startswith(_NSPAWN_NOISE)]
        tail = "\n".join(lines[-25:])
        raise BundleError(f"could not {what} in the build root (exit {done.returncode}):\n{tail}")
    return done.stdout


@contextlib.contextmanager
def build_root(*, suite: str = SUITE, mirror: str | None = None, archive: bool = True) -> Iterator[BuildRoot]:
    """A fresh copy of the cached clean root, removed afterwards; APT pointed at the archive if asked.

    With ``archive``, downloaded debs and APT lists are kept in the ekc cache between builds (bound in), so
    a warm rebuild downloads only what changed. APT inside a container fails at once, rather than
    waiting, when another container holds those caches, so builds of one suite take turns.
    """
    work = rootfs.cache_dir() / "work"
    work.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        if archive:
            stack.enter_context(rootfs.exclusive_lock(rootfs.cache_dir() / f"bundle-{suite}.lock"))
        parent = Path(tempfile.mkdtemp(prefix="bundle-", dir=work))
        stack.callback(rootfs.remove_tree, parent)
        root = rootfs.build_rootfs(parent / "root", suite=suite, mirror=mirror)
        (parent / "io").mkdir()
        binds: tuple[str, ...] = ()
        if archive:
            rootfs.enable_archive(root, suite=suite, mirror=mirror)
            binds = tuple(_cache_binds(suite))
        yield BuildRoot(root=root, io=parent / "io", suite=suite, binds=binds)


def deb_cache(suite: str) -> Path:
    """The host directory holding the debs downloaded for ``suite`` by earlier builds."""
    return rootfs.cache_dir() / "debs" / f"{suite}-{ARCHITECTURE}"


def _cache_binds(suite: str) -> list[str]:
    """nspawn options binding the persistent APT and pip caches of ``suite`` into a build root."""
    cache = rootfs.cache_dir()
    pairs = {
        deb_cache(suite): "/var/cache/apt/archives",
        cache / "apt-lists" / suite: "/var/lib/apt/lists",
        cache / "pip" / suite: "/root/.cache/pip",
    }
    for host in pairs:
        (host / "partial").mkdir(parents=True, exist_ok=True)
    return [f"--bind={host}:{inside}" for host, inside in pairs.items()]


def pip_settings(conf: Path = PIP_CONF, environ: dict[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """nspawn binds and environment that give a build root's pip the host's registry settings.

    The host's pip.conf and every certificate file it or ``PIP_CERT``/``PIP_CLIENT_CERT`` names are bound
    read-only at the same paths; the registry and proxy variables of :data:`PIP_ENV` are passed on.
    """
    environ = dict(os.environ if environ is None else environ)
    env = {name: environ[name] for name in PIP_ENV if environ.get(name)}
    files: set[str] = {env[name] for name in ("PIP_CERT", "PIP_CLIENT_CERT") if name in env}
    binds: list[str] = []
    if conf.is_file():
        binds.append(f"--bind-ro={conf}:/etc/pip.conf")
        parser = configparser.ConfigParser(interpolation=None)
        parser.read(conf, encoding="utf-8")
        for section in parser.sections():
            files |= {parser[section][k] for k in ("cert", "client-cert") if parser[section].get(k)}
    binds += [f"--bind-ro={path}" for path in sorted(files) if Path(path).is_file()]
    return binds, env


# ---------------------------------------------------------------- debs


def resolve_debs(build: BuildRoot, packages: Sequence[str], lock: BundleLock | None) -> list[DebEntry]:
    """The debs the bundle needs, with their archive metadata: the closure, or exactly the lock's set."""
    if not packages:
        return []
    pinned = [f"{d.name}={d.version}" for d in lock.debs] if lock else list(packages)
    args = " ".join(_shell_quote(p) for p in pinned)
    flags = "--reinstall --no-install-recommends --allow-downgrades"
    text = run_in_root(
        build,
        f"apt-get update -q >/dev/null\napt-get install -s -q {flags} {args}",
        what="resolve the dependency closure",
    )
    wanted = parse_simulation(text)
    shown = run_in_root(
        build,
        "apt-cache show " + " ".join(_shell_quote(f"{n}={v}") for n, v, _ in wanted),
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
    args = " ".join(_shell_quote(f"{d.name}={d.version}") for d in debs)
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


def _shell_quote(word: str) -> str:
    """``word`` quoted for ``sh`` (package names and versions never need more than single quotes)."""
    return "'" + word.replace("'", "'\\''") + "'"


# ---------------------------------------------------------------- wheels


def target_python(build: BuildRoot) -> str:
    """The version of the build root's python3 (the target's Python), e.g. ``3.14.8``."""
    script = "python3 -c 'import sys; print(\"%d.%d.%d\" % sys.version_info[:3])'"
    return run_in_root(build, script, what="ask python3 its version").strip()


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


def _sums_problems(out: Path, entries: dict[str, str]) -> list[str]:
    """Files listed but missing, changed or not plain files, and files present but not listed."""
    problems: list[str] = []
    for rel, digest in sorted(entries.items()):
        path = out / rel
        if path.is_symlink():
            problems.append(f"{rel}: a symbolic link, not a file")
        elif not path.is_file():
            problems.append(f"{rel}: listed in {SUMS_NAME} but missing")
        elif file_sha256(path) != digest:
            problems.append(f"{rel}: sha256 does not match {SUMS_NAME} (changed after signing)")
    problems += [f"{rel}: not listed in {SUMS_NAME}" for rel in bundle_files(out) if rel not in entries]
    return problems


def _repository_problems(out: Path, public_key_armored: str, fingerprint: str) -> list[str]:
    """Whether APT would accept the repository: InRelease and Release.gpg signed by the region key, and
    every index file as the signed Release describes it."""
    dists = out / "apt" / "dists" / REPO_SUITE
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="ekc-release-") as tmp:
        signed = Path(tmp) / "Release"
        inrelease = bundlekey.check_signature(public_key_armored, dists / "InRelease", signed_text=signed)
        if not inrelease.good:
            problems.append(
                f"apt/dists/{REPO_SUITE}/InRelease: not signed by the region key {fingerprint}: {inrelease.message}"
            )
            return problems
        hashes = signed_release_hashes(signed.read_text(encoding="utf-8", errors="replace"))
    detached = bundlekey.check_signature(public_key_armored, dists / "Release.gpg", dists / "Release")
    if not detached.good:
        problems.append(f"apt/dists/{REPO_SUITE}/Release.gpg: not a signature of Release by the region key")
    for rel, digest in sorted(hashes.items()):
        path = dists / rel
        if not path.is_file() or file_sha256(path) != digest:
            problems.append(f"apt/dists/{REPO_SUITE}/{rel}: does not match the signed InRelease")
    return problems


def verify_bundle(out: Path, public_key_armored: str) -> list[str]:
    """Problems of the bundle at ``out`` checked against the region's public key; empty means good.

    ``public_key_armored`` must come from the region (its vault or inventory), never from the bundle:
    a forged bundle carries its own matching key. Checks the signature of SHA256SUMS, every file against
    it, that nothing unlisted was added, and the APT repository's own signatures.
    """
    try:
        with bundlekey.gpg_home() as home:
            keys = bundlekey.import_key(home, public_key_armored)
    except bundlekey.GpgError:
        return ["the region key given is not an armored OpenPGP public key"]
    fingerprint = keys[0].fingerprint if len(keys) == 1 else "(several keys)"
    sums, signature = out / SUMS_NAME, out / SUMS_SIGNATURE
    if not sums.is_file():
        return [f"{SUMS_NAME}: missing: nothing in {out} can be checked"]
    problems: list[str] = []
    if not signature.is_file():
        problems.append(f"{SUMS_SIGNATURE}: missing")
    else:
        check = bundlekey.check_signature(public_key_armored, signature, sums)
        if not check.good:
            problems.append(
                f"{SUMS_SIGNATURE}: not a valid signature of {SUMS_NAME} by the region key "
                f"{fingerprint}: {check.message}"
            )
    entries, line_problems = parse_sha256sums(sums.read_text(encoding="utf-8", errors="replace"))
    problems += line_problems + _sums_problems(out, entries)
    if (out / "apt" / "dists" / REPO_SUITE / "InRelease").is_file():
        problems += _repository_problems(out, public_key_armored, fingerprint)
    else:
        problems.append(f"apt/dists/{REPO_SUITE}/InRelease: missing")
    return problems


def offline_install_check(out: Path, public_key_armored: str, packages: Sequence[str], *, suite: str = SUITE) -> str:
    """Install ``packages`` from the bundle alone in a fresh, networkless copy of the build root.

    The copy has no APT source but the bundle, served over HTTP on its own loopback as the deploy host
    serves it to the nodes, trusted through ``Signed-By`` with ``public_key_armored`` only; it has no
    network at all. This is the target's own APT (and signature verifier), so a pass means a node accepts
    the bundle. Returns APT's output; raises :class:`BundleError` on failure.
    """
    with build_root(suite=suite, archive=False) as build:
        keyring = build.root / NODE_KEYRING.lstrip("/")
        keyring.parent.mkdir(parents=True, exist_ok=True)
        keyring.write_text(public_key_armored, encoding="utf-8")
        sources = build.root / "etc/apt/sources.list.d/ekc-bundle.sources"
        sources.write_text(node_sources("http://127.0.0.1:8080/apt"), encoding="utf-8")
        names = " ".join(_shell_quote(p) for p in packages)
        script = "\n".join(
            [
                "python3 -m http.server --bind 127.0.0.1 --directory /srv/bundle 8080 >/dev/null 2>&1 &",
                f"for i in $(seq 100); do python3 -c '{_PORT_PROBE}' 2>/dev/null && break; sleep 0.1; done",
                "apt-get update -q --error-on=any",
                f"apt-get install -y -q --no-install-recommends {names}",
                f"dpkg-query -W {names}",
            ]
        )
        return run_in_root(
            build,
            script,
            what="install from the bundle alone",
            network=False,
            extra_binds=[f"--bind-ro={out.resolve()}:/srv/bundle"],
        )
