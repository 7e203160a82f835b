"""The clean build root: a copy of the cached minbase forky tree in which packages are resolved and wheels
are built with the target's own Python, run with systemd-nspawn and the host's package caches bound in.
"""

from __future__ import annotations

import configparser
import contextlib
import os
import subprocess
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ekc.bundle import rootfs
from ekc.bundle.lock import (
    ARCHITECTURE,
    SUITE,
    BundleError,
)

# Tools every wheel build needs inside the build root.
PIP_PACKAGES = ("python3-pip", "python3-venv")

# Environment a build root's pip may need from the host (registry, CA, proxies); nothing else passes.
PIP_ENV = (
    *("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST", "PIP_CERT", "PIP_CLIENT_CERT"),
    *("PIP_DEFAULT_TIMEOUT", "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"),
)

PIP_CONF = Path("/etc/pip.conf")

# systemd-nspawn without a systemd host says this on every exit; it is not about the command.
_NSPAWN_NOISE = "Attempted to remove disk file system under"


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


def shell_quote(word: str) -> str:
    """``word`` quoted for ``sh`` (package names and versions never need more than single quotes)."""
    return "'" + word.replace("'", "'\\''") + "'"


def target_python(build: BuildRoot) -> str:
    """The version of the build root's python3 (the target's Python), e.g. ``3.14.8``."""
    script = "python3 -c 'import sys; print(\"%d.%d.%d\" % sys.version_info[:3])'"
    return run_in_root(build, script, what="ask python3 its version").strip()
