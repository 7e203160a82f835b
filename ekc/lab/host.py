"""What the lab changes on the deploy host itself: its bridge, its nftables table, the cgroups and the
detached ``systemd-nspawn`` processes of its nodes. Everything is named after the region and marked, so
that removing it touches nothing else.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import itertools
import json
import os
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NoReturn

from ekc.bundle.rootfs import sbin_path
from ekc.lab.model import BRIDGE_ALIAS_PREFIX, Lab, LabError, bridge_name, cgroup2_mounts, nft_ruleset, nft_table_name
from ekc.lab.net import add_bridge_addresses


def bridge_mac(region: str) -> str:
    """The lab bridge's own MAC address: locally administered, unicast, derived from the region's name."""
    digest = hashlib.sha256(f"ekc-lab-bridge:{region}".encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, *digest[:5]))


def ensure_bridge(lab: Lab) -> None:
    """Create the lab bridge (marked with our alias) holding the gateway address, and bring it up.

    The bridge gets a MAC address of its own. Without one, Linux gives a bridge the lowest MAC of its ports and
    changes it when that port leaves: a node killed or rebooted would change the deploy host's MAC address on
    the lab network, and every other node would send to the old one until its ARP entry expired (SIP replies
    to the carrier and the phones lost for many seconds).
    """
    bridge = bridge_name(lab.region)
    alias = BRIDGE_ALIAS_PREFIX + lab.region
    info = bridge_info(bridge)
    if info is None:
        host_run(["ip", "link", "add", "name", bridge, "address", bridge_mac(lab.region), "type", "bridge"])
        host_run(["ip", "link", "set", "dev", bridge, "alias", alias])
    elif info.get("ifalias") != alias or info.get("linkinfo", {}).get("info_kind") != "bridge":
        raise LabError(f"{bridge} exists but was not made by the ekc lab of {lab.region}: not touching it")
    elif info.get("address") != bridge_mac(lab.region):
        host_run(["ip", "link", "set", "dev", bridge, "address", bridge_mac(lab.region)])
    prefix = ipaddress.ip_network(lab.cidr).prefixlen
    addresses = host_run(["ip", "-j", "addr", "show", "dev", bridge])
    have = {a.get("local") for entry in json.loads(addresses or "[]") for a in entry.get("addr_info", [])}
    if lab.gateway not in have:
        host_run(["ip", "addr", "add", f"{lab.gateway}/{prefix}", "dev", bridge])
    host_run(["ip", "link", "set", "dev", bridge, "up"])
    add_bridge_addresses(bridge, lab.extra_addresses)


def remove_bridge(lab: Lab, timeout: float = 30) -> None:
    """Delete the lab bridge if it exists and carries our mark, once no node's interface is on it any more.

    The kernel removes a killed node's veth pair when the node's network namespace is gone, which can take a
    while after its processes died; a lab brought up again would otherwise find the old name taken. A member
    still there after ``timeout`` is deleted (it is on our marked bridge).
    """
    bridge = bridge_name(lab.region)
    info = bridge_info(bridge)
    if info is None or info.get("ifalias") != BRIDGE_ALIAS_PREFIX + lab.region:
        return
    deadline = time.monotonic() + timeout
    while bridge_members(bridge) and time.monotonic() < deadline:
        time.sleep(0.5)
    for member in bridge_members(bridge):  # still there: our bridge's, so ours to delete
        subprocess.run(["ip", "link", "del", "dev", member], capture_output=True, check=False, env=_env())
    host_run(["ip", "link", "del", "dev", bridge])


def bridge_members(bridge: str) -> list[str]:
    """The interfaces enslaved to ``bridge``."""
    return [str(entry.get("ifname")) for entry in _links("master", bridge)]


def _links(*selection: str) -> list[dict[str, Any]]:
    """``ip -j link show`` of the host (narrowed by ``selection``), [] when ip refuses."""
    done = subprocess.run(["ip", "-j", "link", "show", *selection], capture_output=True, text=True, check=False,
                          env=_env())
    return list(json.loads(done.stdout or "[]")) if done.returncode == 0 else []


def bridge_info(bridge: str) -> dict[str, Any] | None:
    """``ip -d link`` of the interface, or None if there is none by that name."""
    done = subprocess.run(["ip", "-j", "-d", "link", "show", "dev", bridge], capture_output=True,
                          text=True, check=False, env=_env())
    if done.returncode != 0:
        return None
    entries = json.loads(done.stdout or "[]")
    return dict(entries[0]) if entries else None


def ensure_firewall(lab: Lab) -> None:
    """Install (or replace, atomically) the lab's host table."""
    table = nft_table_name(lab.region)
    script = f"add table inet {table}\ndelete table inet {table}\n{nft_ruleset(lab.region)}"
    host_run(["nft", "-f", "-"], stdin=script)


def remove_firewall(lab: Lab) -> None:
    """Delete the lab's host table if it is there."""
    if firewall_present(lab):
        host_run(["nft", "delete", "table", "inet", nft_table_name(lab.region)])


def firewall_present(lab: Lab) -> bool:
    """Whether the lab's host table exists."""
    done = subprocess.run(["nft", "list", "table", "inet", nft_table_name(lab.region)], capture_output=True,
                          check=False, env=_env())
    return done.returncode == 0


def spawn_detached(argv: list[str], env: dict[str, str], console: Path, cgroups: list[Path]) -> int:
    """Start ``argv`` as a daemon and return its PID.

    Double fork: the process gets its own session, belongs to PID 1 rather than to us (so it outlives
    the CLI and never lingers as our zombie), starts in the node's own cgroups (so two nodes' systemds
    never share one), reads /dev/null and writes to ``console``.
    """
    read_fd, write_fd = os.pipe()
    middle = os.fork()
    if middle == 0:
        os.close(read_fd)
        _daemonize(argv, env, console, cgroups, write_fd)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        text = pipe.read().strip()
    os.waitpid(middle, 0)
    if not text.isdigit():
        raise LabError(f"could not start {' '.join(argv)}: {text or 'no PID reported'} (see {console})")
    return int(text)


def _daemonize(argv: list[str], env: dict[str, str], console: Path, cgroups: list[Path],
               write_fd: int) -> NoReturn:
    """The middle process of ``_spawn_detached``: never returns."""
    try:
        os.setsid()
        for group in cgroups:
            (group / "cgroup.procs").write_text("0\n", encoding="utf-8")
        out = os.open(console, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        null = os.open(os.devnull, os.O_RDONLY)
        child = os.fork()
        if child == 0:
            try:
                os.dup2(null, 0)
                os.dup2(out, 1)
                os.dup2(out, 2)
                os.execvpe(argv[0], argv, env)
            finally:
                os._exit(127)
        os.write(write_fd, str(child).encode())
    except BaseException as exc:
        os.write(write_fd, f"{type(exc).__name__}: {exc}".encode())
    finally:
        os._exit(0)


def is_our_nspawn(pid: int, rootfs: Path) -> bool:
    """Whether ``pid`` is alive and is a systemd-nspawn booting ``rootfs`` (not a reused PID)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
        return False
    args = [a.decode(errors="replace") for a in argv]
    wanted = str(rootfs)
    return (bool(args) and os.path.basename(args[0]) == "systemd-nspawn"
            and any(a == "-D" and b == wanted for a, b in itertools.pairwise(args)))


def cgroup_bases() -> list[Path]:
    """Every hierarchy a node's processes are placed in: cgroup v2 and, on a hybrid host, name=systemd."""
    bases = cgroup2_mounts()
    legacy = Path("/sys/fs/cgroup/systemd")
    if bases and bases[0] != Path("/sys/fs/cgroup") and (legacy / "cgroup.procs").exists():
        bases.append(legacy)
    return bases


def make_cgroups(groups: list[Path]) -> list[Path]:
    """Create the node's own cgroups, where nspawn nests its supervisor and payload.

    Without them every nspawn started from the same cgroup would use the same ``payload`` cgroup, and
    the systemds of two nodes would manage (and kill) each other's services.
    """
    for group in groups:
        group.mkdir(parents=True, exist_ok=True)
    return groups


def remove_cgroups(groups: list[Path]) -> None:
    """Remove the node's cgroups (deepest first) once its processes are gone."""
    for group in groups:
        if not group.is_dir():
            continue
        for _attempt in range(20):
            for path in sorted(_subdirs(group), key=lambda p: len(p.parts), reverse=True):
                with contextlib.suppress(OSError):
                    path.rmdir()
            if not group.exists():
                break
            time.sleep(0.1)
        with contextlib.suppress(OSError):  # another lab's nodes may still be there
            group.parent.rmdir()


def _subdirs(group: Path) -> Iterable[Path]:
    """``group`` and every cgroup below it (cgroupfs has only directories and control files)."""
    yield group
    for dirpath, dirnames, _files in os.walk(group):
        for name in dirnames:
            yield Path(dirpath) / name


def _env() -> dict[str, str]:
    """The environment for host tools, with the sbin directories on ``$PATH``."""
    return {**os.environ, "PATH": sbin_path()}


def host_run(argv: list[str], *, stdin: str | None = None) -> str:
    """Run a host command that must succeed and return its output; raise LabError with stderr if not."""
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False, env=_env())
    if done.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed: {(done.stderr or done.stdout).strip()}")
    return done.stdout


def host_interface(ifindex: int) -> str | None:
    """The name of the host's interface with index ``ifindex``, or None."""
    return next((str(e["ifname"]) for e in _links() if e.get("ifindex") == ifindex), None)


def drop_interface(name: str, timeout: float) -> None:
    """Wait up to ``timeout`` for interface ``name`` to go by itself, then delete it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if subprocess.run(["ip", "link", "show", "dev", name], capture_output=True, check=False,
                          env=_env()).returncode != 0:
            return
        time.sleep(0.5)
    subprocess.run(["ip", "link", "del", "dev", name], capture_output=True, check=False, env=_env())


def host_veth(nspawn_pid: int) -> str | None:
    """The host side of a node's network interface (the peer of its host0), or None if it cannot be told."""
    try:
        children = Path(f"/proc/{nspawn_pid}/task/{nspawn_pid}/children").read_text(encoding="ascii").split()
    except OSError:
        return None
    if not children:
        return None
    done = subprocess.run(["nsenter", "-t", children[0], "-n", "ip", "-j", "link", "show", "dev", "host0"],
                          capture_output=True, text=True, check=False, env=_env())
    entries = json.loads(done.stdout or "[]") if done.returncode == 0 else []
    index = entries[0].get("link_index") if entries else None
    return host_interface(int(index)) if index else None
