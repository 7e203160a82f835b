"""Cached Debian root filesystems, built once with debootstrap and copied wherever one is needed.

Two users start from the same tree:

- the lab (``ekc.lab.nodes``): every node boots its own copy with systemd-nspawn;
- the bundle build (connected side): a clean chroot of the target suite where ``apt-get`` resolves
  dependency closures and ``pip wheel`` runs for the target's Python.

So the tree is generic: a ``minbase`` Debian of ``suite`` with systemd, sshd and python3 plus whatever
packages the caller asks for, stripped of everything that would make two machines made from it alike or
tie them to the machine that built it: an empty ``/etc/machine-id``, no SSH host keys (each machine
generates its own when sshd first starts), no ``/etc/hostname``, no ``/etc/resolv.conf`` and no APT
sources. A caller that needs the archive inside (the bundle's build root) turns it on with
``enable_archive``; lab nodes never get it: they install only from ekc's bundle.

The cache lives under ``$EKC_CACHE_DIR`` (default ``/var/cache/ekc``), one directory per
(suite, package set, mirror, recipe) key. A build goes into a temporary directory that is renamed into
place only when it is complete, so a failed or interrupted build never leaves a half tree that a later
run would trust.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from ekc.bundle.mirror import host_mirror

DEFAULT_SUITE = "forky"
DEFAULT_CACHE_DIR = Path("/var/cache/ekc")
CACHE_ENV = "EKC_CACHE_DIR"
DEBOOTSTRAP_SCRIPTS = Path("/usr/share/debootstrap/scripts")
# bookworm's debootstrap knows no "forky": sid's script bootstraps any current suite.
FALLBACK_SCRIPT = "sid"

BASE_PACKAGES: tuple[str, ...] = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "python3",
    "iproute2",
    "procps",
    "ca-certificates",
)

# Bump when the way a tree is built or cleaned changes, so that caches made the old way stop matching.
RECIPE = 2

# The archive is served as a snapshot whose Release files may be past their Valid-Until date.
APT_SNAPSHOT_CONF = 'Acquire::Check-Valid-Until "false";\n'

KEYGEN_UNIT_NAME = "sshd-keygen.service"
KEYGEN_WANTED_BY = ("ssh.service", "sshd@.service", "ssh.socket")
KEYGEN_UNIT = """\
# Installed by ekc (ekc/rootfs.py). The shared root filesystem carries no SSH host keys, so every
# machine made from it generates its own. Debian's unit of the same name does that only when
# ConditionFirstBoot holds, which a copy given its own machine-id never does; this one replaces it.
[Unit]
Description=Generate missing SSH host keys
ConditionPathIsReadWrite=/etc/ssh
ConditionPathIsSymbolicLink=!/etc/ssh
Before=ssh.service sshd.service sshd@.service ssh.socket

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=ssh.service sshd@.service ssh.socket
"""


class RootfsError(RuntimeError):
    """A root filesystem could not be built or copied; the message says why and where the log is."""


@dataclass(frozen=True)
class RootfsInfo:
    """What a cached tree is and what it cost: written beside it as ``<tree>.json``."""

    key: str
    suite: str
    packages: tuple[str, ...]
    mirror: str
    build_seconds: float
    size_bytes: int
    built_at: str

    @classmethod
    def from_json(cls, text: str) -> RootfsInfo:
        """Read the record written by ``to_json``."""
        data = json.loads(text)
        data["packages"] = tuple(data["packages"])
        return cls(**data)

    def to_json(self) -> str:
        """Serialise for the record beside the tree."""
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


def cache_dir() -> Path:
    """The cache root: ``$EKC_CACHE_DIR`` or ``/var/cache/ekc``."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR)


def package_set(packages: Sequence[str]) -> tuple[str, ...]:
    """The packages a tree gets: the base set plus ``packages``, sorted and without duplicates."""
    return tuple(sorted(set(BASE_PACKAGES) | {p.strip() for p in packages if p.strip()}))


def rootfs_key(suite: str, packages: Sequence[str], mirror: str) -> str:
    """The cache key of a tree: a hash of everything that changes its content."""
    material = json.dumps(
        {"suite": suite, "packages": package_set(packages), "mirror": mirror.rstrip("/"), "recipe": RECIPE},
        sort_keys=True,
    )
    return hashlib.sha256(material.encode()).hexdigest()[:16]


def cached_rootfs(
    *,
    suite: str = DEFAULT_SUITE,
    packages: Sequence[str] = (),
    mirror: str | None = None,
    cache: Path | None = None,
) -> Path:
    """The cached tree for (suite, packages, mirror), built first if the cache does not have it.

    The returned directory is shared by every later caller: treat it as read-only and copy it
    (``build_rootfs``) before booting or changing anything in it.
    """
    mirror = (mirror or host_mirror()).rstrip("/")
    root = (cache or cache_dir()) / "rootfs"
    root.mkdir(parents=True, exist_ok=True)
    key = rootfs_key(suite, packages, mirror)
    tree = root / f"{suite}-{key}"
    with exclusive_lock(root / f"{suite}-{key}.lock"):
        if not tree.is_dir():
            _build_cache_entry(tree, suite=suite, packages=package_set(packages), mirror=mirror, key=key)
    return tree


def build_rootfs(
    dest: Path,
    *,
    suite: str = DEFAULT_SUITE,
    packages: Sequence[str] = (),
    mirror: str | None = None,
) -> Path:
    """A fresh, private Debian tree at ``dest`` (which must not exist), copied from the cache.

    This is the entry point for anyone who needs a machine's root filesystem: the lab's nodes and the
    bundle's build root. The first call for a given (suite, packages, mirror) runs debootstrap (about a
    minute); later calls only copy (reflinks where the filesystem supports them).
    """
    if dest.exists():
        raise RootfsError(f"{dest} already exists: a root filesystem is only ever created fresh")
    copy_tree(cached_rootfs(suite=suite, packages=packages, mirror=mirror), dest)
    return dest


def rootfs_info(tree: Path) -> RootfsInfo:
    """The build record of a cached tree (its key, packages, build time and size)."""
    return RootfsInfo.from_json(tree.with_name(tree.name + ".json").read_text(encoding="utf-8"))


def enable_archive(root: Path, *, suite: str = DEFAULT_SUITE, mirror: str | None = None) -> None:
    """Point a tree's APT at the Debian archive: for a connected build root, never for a lab node.

    Writes a deb822 source signed by the tree's own archive keyring and turns off the Valid-Until check
    that the snapshot-served archive would fail.
    """
    mirror = (mirror or host_mirror()).rstrip("/")
    keyrings = root / "usr/share/keyrings"
    keyring = next(
        (f"/usr/share/keyrings/{n}" for n in ("debian-archive-keyring.pgp", "debian-archive-keyring.gpg")
         if (keyrings / n).exists()),
        "/usr/share/keyrings/debian-archive-keyring.gpg",
    )
    sources = root / "etc/apt/sources.list.d/debian.sources"
    sources.parent.mkdir(parents=True, exist_ok=True)
    sources.write_text(
        f"Types: deb\nURIs: {mirror}\nSuites: {suite}\nComponents: main\nSigned-By: {keyring}\n",
        encoding="utf-8",
    )
    conf = root / "etc/apt/apt.conf.d/99ekc-snapshot"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(APT_SNAPSHOT_CONF, encoding="utf-8")


def copy_tree(src: Path, dest: Path) -> None:
    """Copy a root filesystem (owners, modes, device nodes, links kept), atomically.

    Copies into a sibling temporary directory and renames it to ``dest`` so that ``dest`` either does
    not exist or is complete. Uses reflinks when the filesystem has them (btrfs, XFS), a plain copy
    otherwise.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        _run(["cp", "-a", "--reflink=auto", f"{src}/.", str(tmp)], what=f"copy {src} to {dest}")
        tmp.chmod(src.stat().st_mode & 0o7777)  # mkdtemp made it 0700; the copy keeps the source's mode
        tmp.rename(dest)
    except BaseException:
        remove_tree(tmp)
        raise


def remove_tree(path: Path) -> None:
    """Delete a root filesystem (or any tree), refusing if anything is still mounted below it.

    debootstrap mounts /proc and /sys inside its target; deleting through a live mount would reach the
    host's own files.
    """
    if not path.exists():
        return
    mounted = mounts_under(path)
    for point in sorted(mounted, key=lambda p: len(p.parts), reverse=True):
        subprocess.run(["umount", "--lazy", str(point)], check=False, capture_output=True)
    still = mounts_under(path)
    if still:
        raise RootfsError(f"not deleting {path}: still mounted below it: {', '.join(map(str, still))}")
    # rm is several times faster than shutil.rmtree on a 40,000-file tree, and never crosses a mount.
    _run(["rm", "-rf", "--one-file-system", "--", str(path)], what=f"delete {path}")


def mounts_under(path: Path) -> list[Path]:
    """Mount points at or below ``path``, from this process's mount table."""
    base = path.resolve()
    found = []
    for line in Path("/proc/self/mountinfo").read_text(encoding="utf-8").splitlines():
        point = Path(line.split()[4].encode().decode("unicode_escape"))
        if point == base or base in point.parents:
            found.append(point)
    return found


def _build_cache_entry(tree: Path, *, suite: str, packages: tuple[str, ...], mirror: str, key: str) -> None:
    """Build one cache entry beside ``tree`` and rename it into place, with its record and log."""
    log = tree.with_name(tree.name + ".log")
    tmp = Path(tempfile.mkdtemp(prefix=f".{tree.name}.", dir=tree.parent))
    tmp.chmod(0o755)  # a root directory other users cannot enter breaks every service with User=
    started = time.monotonic()
    try:
        _debootstrap(tmp, suite=suite, packages=packages, mirror=mirror, log=log)
        clean_identity(tmp)
        install_keygen_unit(tmp)
        seconds = round(time.monotonic() - started, 1)
        info = RootfsInfo(
            key=key, suite=suite, packages=packages, mirror=mirror, build_seconds=seconds,
            size_bytes=tree_size(tmp), built_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        tree.with_name(tree.name + ".json").write_text(info.to_json(), encoding="utf-8")
        tmp.rename(tree)
    except BaseException:
        remove_tree(tmp)
        raise


def _debootstrap(target: Path, *, suite: str, packages: Sequence[str], mirror: str, log: Path) -> None:
    """Run debootstrap (minbase) for ``suite`` into ``target``, its output going to ``log``."""
    script = DEBOOTSTRAP_SCRIPTS / suite
    if not script.exists():
        script = DEBOOTSTRAP_SCRIPTS / FALLBACK_SCRIPT
    argv = [
        "debootstrap", "--variant=minbase", "--components=main", f"--include={','.join(packages)}",
        suite, str(target), mirror, str(script),
    ]
    env = {**os.environ, "PATH": sbin_path(), "LC_ALL": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"}
    with log.open("w", encoding="utf-8") as out:
        out.write("$ " + " ".join(argv) + "\n")
        out.flush()
        done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=env, check=False)
    if done.returncode != 0:
        tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:])
        raise RootfsError(
            f"debootstrap {suite} from {mirror} failed (exit {done.returncode}); log {log}:\n{tail}"
        )


def clean_identity(root: Path) -> None:
    """Remove what ties a tree to the machine that built it or makes two copies of it alike.

    Machine ID emptied (systemd or the copy's owner gives each machine its own), SSH host keys removed,
    the builder's hostname and resolver dropped (a contour node must not know the builder's DNS), APT
    sources, lists and downloaded packages removed (nodes install only from ekc's bundle; this also keeps
    the tree small), random seed removed.
    """
    (root / "etc/machine-id").write_text("", encoding="utf-8")
    for pattern in (
        "var/lib/dbus/machine-id", "etc/ssh/ssh_host_*", "etc/hostname", "etc/resolv.conf",
        "etc/apt/sources.list", "etc/apt/sources.list.d/*", "var/lib/apt/lists/*_*",
        "var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/systemd/random-seed",
    ):
        for path in root.glob(pattern):
            if path.is_file() or path.is_symlink():
                path.unlink()


def install_keygen_unit(root: Path) -> None:
    """Make sshd's host keys appear on every machine made from the tree, at its first start of sshd."""
    if not (root / "usr/sbin/sshd").exists():
        return
    system = root / "etc/systemd/system"
    system.mkdir(parents=True, exist_ok=True)
    (system / KEYGEN_UNIT_NAME).write_text(KEYGEN_UNIT, encoding="utf-8")
    for unit in KEYGEN_WANTED_BY:
        wants = system / f"{unit}.wants"
        wants.mkdir(parents=True, exist_ok=True)
        link = wants / KEYGEN_UNIT_NAME
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(f"/etc/systemd/system/{KEYGEN_UNIT_NAME}")


def tree_size(root: Path) -> int:
    """Disk usage of a tree in bytes (allocated blocks, hard links counted once), like ``du -s``."""
    seen: set[int] = set()
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if st.st_ino not in seen:
                seen.add(st.st_ino)
                total += st.st_blocks * 512
    return total


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (waiting for it) so two processes never do the same work at once."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def sbin_path() -> str:
    """``$PATH`` with the sbin directories added: debootstrap, chroot, nft and ip live there, and a
    virtualenv's or a test runner's ``$PATH`` may lack them."""
    parts = os.environ.get("PATH", "/usr/bin:/bin").split(":")
    return ":".join(parts + [d for d in ("/usr/local/sbin", "/usr/sbin", "/sbin") if d not in parts])


def _run(argv: list[str], *, what: str) -> None:
    """Run a command that must succeed; on failure raise with its output."""
    env = {**os.environ, "PATH": sbin_path()}
    done = subprocess.run(argv, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise RootfsError(f"could not {what}: {' '.join(argv)}: {(done.stderr or done.stdout).strip()}")
