"""The lab: real Debian servers on one machine, booted with systemd-nspawn on a bridge of their own.

Each node is a full forky system (its own systemd, sshd, address and root filesystem copied from the
cached tree of ``ekc.bundle.rootfs``), so what the engines apply and what verify checks run on real servers.
The host has no systemd, so the lab keeps what it started itself, under ``Lab.state_path``: one
directory per node with its root filesystem, the PID of its ``systemd-nspawn`` and its console log.

The lab is a closed contour like the ministry's: nodes have a static address and no default route,
no resolver, and the host drops every forwarded packet from or to the lab's bridge in an nftables table
of the lab's own, whatever the host's forwarding setting. Everything the lab makes is named after the
region (bridge ``ekc-<region>``, table ``inet ekc_lab_<region>``, machines ``<region>-<node>``) and
marked, so ``lab_down`` removes exactly that and nothing else.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import itertools
import json
import logging
import os
import re
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from ekc.bundle.rootfs import build_rootfs, remove_tree, sbin_path
from ekc.lab.net import add_bridge_addresses, route_sections
from ekc.paths import REPO_ROOT

log = logging.getLogger(__name__)

NSPAWN_ENV = {"SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"}  # forky's systemd refuses the host's cgroup v1 layout
NETWORK_FILE = "etc/systemd/network/10-ekc-lab.network"  # sorts before systemd's 80-container-host0
STATE_MARKER = "lab.json"
BRIDGE_ALIAS_PREFIX = "ekc-lab:"
CGROUP_GROUP = "ekc-lab"
IFNAME_MAX = 15
REQUIRED_TOOLS = (
    ("systemd-nspawn", "systemd-container"),
    ("debootstrap", "debootstrap"),
    ("nft", "nftables"),
    ("ip", "iproute2"),
    ("ssh", "openssh-client"),
)
_REGION_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")
_HOSTNAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_ANSI_RE = re.compile(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])")


class LabError(RuntimeError):
    """The lab could not be brought to the state asked for; the message says what and why."""


@dataclass(frozen=True)
class LabNode:
    """One server of the lab: its spec name (the node's hostname) and its static address."""

    name: str
    address: str


@dataclass(frozen=True)
class Lab:
    """A region's lab as the CLI builds it from the region spec.

    ``cidr`` is the lab network, ``gateway`` the address the host holds on the bridge (nodes get no
    route through it), ``authorized_keys`` the public keys root accepts on every node. With
    ``ssh_private_key`` the lab also proves a real SSH login before calling a node ready. For calls
    (``ekc.lab.net``) the host also holds ``extra_addresses`` (``address/prefix``) on the bridge and the
    nodes route ``routes`` (the spec's other networks) through the gateway.
    """

    region: str
    cidr: str
    gateway: str
    nodes: tuple[LabNode, ...]
    authorized_keys: str
    state_dir: Path | None = None
    ssh_private_key: Path | None = None
    extra_addresses: tuple[str, ...] = ()
    routes: tuple[str, ...] = ()
    boot_timeout: float = 180.0
    stop_timeout: float = 60.0

    @property
    def state_path(self) -> Path:
        """Where the lab keeps its nodes: ``state_dir`` or ``<repo>/.lab/<region>``, made absolute (a node's
        nspawn is recognised by its ``-D`` path, which must not depend on the caller's directory)."""
        state = self.state_dir if self.state_dir is not None else REPO_ROOT / ".lab" / self.region
        return state.absolute()

    @property
    def known_hosts(self) -> Path:
        """The lab's own known_hosts: node host keys never land in the operator's file."""
        return self.state_path / "known_hosts"

    def node(self, name: str) -> LabNode:
        """The node called ``name``."""
        for node in self.nodes:
            if node.name == name:
                return node
        known = ", ".join(n.name for n in self.nodes)
        raise LabError(f"lab {self.region} has no node {name!r} (nodes: {known})")


@dataclass(frozen=True)
class NodeStatus:
    """What the host sees of one node. ``memory_kib`` is the PSS of all its processes."""

    name: str
    machine: str
    address: str
    running: bool
    pid: int | None
    ssh_reachable: bool
    memory_kib: int | None


@dataclass(frozen=True)
class LabStatus:
    """What the host sees of the lab: its bridge, its firewall table and every node."""

    region: str
    bridge: str
    bridge_present: bool
    firewall_present: bool
    nodes: tuple[NodeStatus, ...]

    @property
    def ready(self) -> bool:
        """Bridge and firewall in place, every node running and answering SSH."""
        return self.bridge_present and self.firewall_present and all(
            n.running and n.ssh_reachable for n in self.nodes
        )


# --- names and file contents (pure) -------------------------------------------------------------


def bridge_name(region: str) -> str:
    """The lab bridge of ``region``: ``ekc-<region>``, shortened with a hash to fit 15 characters."""
    name = f"ekc-{region}"
    if len(name) <= IFNAME_MAX:
        return name
    digest = hashlib.sha256(region.encode()).hexdigest()[:4]
    return f"ekc-{region[:IFNAME_MAX - 9]}-{digest}"


def nft_table_name(region: str) -> str:
    """The lab's own nftables table (family inet) on the host."""
    return "ekc_lab_" + re.sub(r"[^a-zA-Z0-9_]", "_", region)


def machine_name(region: str, node: str) -> str:
    """The nspawn machine name: region-prefixed, so two regions' labs with the same node names coexist."""
    return f"{region}-{node}"


def network_file(address: str, cidr: str) -> str:
    """systemd-networkd config of a node's ``host0``: the static address and nothing else.

    No Gateway (so no default route), no DHCP, no router advertisements, no link-local IPv6, no DNS:
    the node reaches the lab network and nothing beyond it.
    """
    prefix = ipaddress.ip_network(cidr, strict=False).prefixlen
    return (
        "# Written by the ekc lab: the node's address on the lab bridge. No gateway, so no default route.\n"
        "[Match]\n"
        "Name=host0\n"
        "\n"
        "[Network]\n"
        f"Address={address}/{prefix}\n"
        "DHCP=no\n"
        "IPv6AcceptRA=no\n"
        "LinkLocalAddressing=no\n"
    )


def hosts_file(name: str, address: str) -> str:
    """A node's /etc/hosts: loopback and itself only; other nodes' names are the product's business."""
    return (
        "127.0.0.1\tlocalhost\n"
        "::1\t\tlocalhost ip6-localhost ip6-loopback\n"
        "ff02::1\t\tip6-allnodes\n"
        "ff02::2\t\tip6-allrouters\n"
        f"{address}\t{name}\n"
    )


def nft_ruleset(region: str) -> str:
    """The lab's host table: drop every packet forwarded from or to the lab bridge.

    Traffic between nodes stays on the bridge (iif and oif both the bridge, when bridged traffic is seen
    by netfilter at all) and is left alone; anything routed between the bridge and any other interface is
    dropped, so no node's packet leaves the machine even if the host forwards.
    """
    bridge = bridge_name(region)
    return (
        f"table inet {nft_table_name(region)} {{\n"
        f'\tcomment "ekc lab {region}: nothing is forwarded from or to {bridge}"\n'
        "\tchain forward {\n"
        "\t\ttype filter hook forward priority filter - 10; policy accept;\n"
        f'\t\tiifname "{bridge}" oifname != "{bridge}" counter drop\n'
        f'\t\toifname "{bridge}" iifname != "{bridge}" counter drop\n'
        "\t}\n"
        "}\n"
    )


def lab_problems(lab: Lab) -> list[str]:
    """Everything wrong with a lab definition, all at once (empty when it can be built)."""
    problems: list[str] = []
    if not _REGION_RE.match(lab.region):
        problems.append(f"region {lab.region!r}: lowercase letters, digits and '-' only, at most 32")
    try:
        net = ipaddress.ip_network(lab.cidr, strict=True)
    except ValueError as exc:
        return [*problems, f"cidr {lab.cidr!r}: {exc}"]
    problems += _address_problems("gateway", lab.gateway, net, set())
    taken = {lab.gateway}
    names: set[str] = set()
    for node in lab.nodes:
        if not _HOSTNAME_RE.match(node.name):
            problems.append(f"node {node.name!r}: not a hostname (lowercase letters, digits, '-')")
        if node.name in names:
            problems.append(f"node {node.name!r}: name used twice")
        names.add(node.name)
        problems += _address_problems(f"node {node.name}", node.address, net, taken)
        taken.add(node.address)
    if not lab.nodes:
        problems.append("the lab has no nodes")
    return problems


def _address_problems(what: str, address: str, net: ipaddress.IPv4Network | ipaddress.IPv6Network,
                      taken: set[str]) -> list[str]:
    """Why ``address`` cannot be a host address in ``net`` (empty when it can)."""
    try:
        addr = ipaddress.ip_address(address)
    except ValueError as exc:
        return [f"{what}: {exc}"]
    if addr not in net or addr in (net.network_address, net.broadcast_address):
        return [f"{what}: {address} is not a host address of {net}"]
    if address in taken:
        return [f"{what}: {address} is already used in the lab"]
    return []


# --- preflight -------------------------------------------------------------------------------------


def preflight() -> list[str]:
    """What this machine lacks to run the lab, as messages for a human (empty when nothing is missing)."""
    problems = []
    if os.geteuid() != 0:
        problems.append("the lab needs root: it creates a bridge, an nftables table and containers")
    for tool, package in REQUIRED_TOOLS:
        if _which(tool) is None:
            problems.append(f"{tool} not found: apt-get install {package}")
    if not _cgroup2_mounts():
        problems.append("no cgroup v2 hierarchy is mounted (forky's systemd needs one)")
    return problems


# --- up, down, status, ssh -------------------------------------------------------------------------


def lab_up(lab: Lab) -> LabStatus:
    """Bring the lab up: bridge, firewall, every node booted and answering SSH. Idempotent.

    A node that is already running is left alone. A node's root filesystem is made (and its identity
    written: hostname, address, keys) only when it does not exist yet; after that it is a server like
    any other and keeps what was applied to it across ``lab_up`` runs.
    """
    _require(preflight() + lab_problems(lab))
    _write_marker(lab)
    _ensure_bridge(lab)
    _ensure_firewall(lab)
    started: list[LabNode] = []
    for node in lab.nodes:
        if node_pid(lab, node) is None:
            _boot_node(lab, node)
            started.append(node)
    deadline = time.monotonic() + lab.boot_timeout
    for node in lab.nodes:
        _wait_ready(lab, node, deadline)
    if started:
        log.info("lab %s: booted %s", lab.region, ", ".join(n.name for n in started))
    return lab_status(lab)


def lab_down(lab: Lab) -> None:
    """Stop every node, then remove the firewall table, the bridge and the state directory. Idempotent.

    Nodes get a clean poweroff first (nspawn turns SIGTERM into a poweroff request to the node's
    systemd) and are killed only after ``stop_timeout``. Only what the lab made is removed: PIDs that
    are not our nspawn, a bridge without our mark, a state directory without our marker are left alone.
    """
    _stop_nodes(lab)
    _remove_firewall(lab)
    _remove_bridge(lab)
    state = lab.state_path
    if (state / STATE_MARKER).is_file():
        nodes = state / "nodes"
        if nodes.is_dir():
            for child in nodes.iterdir():
                remove_tree(child)
        remove_tree(state)
    log.info("lab %s: down", lab.region)


def lab_status(lab: Lab) -> LabStatus:
    """What the host sees of the lab now; changes nothing."""
    nodes = []
    for node in lab.nodes:
        pid = node_pid(lab, node)
        nodes.append(NodeStatus(
            name=node.name,
            machine=machine_name(lab.region, node.name),
            address=node.address,
            running=pid is not None,
            pid=pid,
            ssh_reachable=pid is not None and _ssh_ready(lab, node),
            memory_kib=node_memory_kib(lab, node) if pid is not None else None,
        ))
    return LabStatus(
        region=lab.region,
        bridge=bridge_name(lab.region),
        bridge_present=_bridge_info(bridge_name(lab.region)) is not None,
        firewall_present=_firewall_present(lab),
        nodes=tuple(nodes),
    )


def ssh_command(lab: Lab, node: str) -> list[str]:
    """The ssh argv that logs in as root on ``node`` (append a command to run one), for ``lab ssh``."""
    argv = [
        "ssh",
        "-o", "StrictHostKeyChecking=no",
        "-o", f"UserKnownHostsFile={lab.known_hosts}",
        "-o", "LogLevel=ERROR",
        "-o", "ConnectTimeout=5",
    ]
    if lab.ssh_private_key is not None:
        argv += ["-i", str(lab.ssh_private_key), "-o", "IdentitiesOnly=yes"]
    return [*argv, f"root@{lab.node(node).address}"]


def node_dir(lab: Lab, node: LabNode) -> Path:
    """A node's directory: ``rootfs/``, ``pid`` and ``console.log``."""
    return lab.state_path / "nodes" / node.name


def node_pid(lab: Lab, node: LabNode) -> int | None:
    """The PID of the node's running nspawn, or None when it is not running (or the PID is not ours)."""
    try:
        pid = int((node_dir(lab, node) / "pid").read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None
    return pid if _is_our_nspawn(pid, node_dir(lab, node) / "rootfs") else None


def node_cgroups(lab: Lab, node: LabNode) -> list[Path]:
    """The node's own cgroups (``<hierarchy>/ekc-lab/<machine>``), cgroup v2 first; they may not exist."""
    return [base / CGROUP_GROUP / machine_name(lab.region, node.name) for base in _cgroup_bases()]


def node_memory_kib(lab: Lab, node: LabNode) -> int | None:
    """Proportional memory (PSS, KiB) of every process of the node, nspawn included; None if unknown."""
    pids: set[int] = set()
    for group in node_cgroups(lab, node)[:1]:
        for procs in group.rglob("cgroup.procs") if group.is_dir() else ():
            pids.update(int(p) for p in procs.read_text(encoding="utf-8").split())
    total = 0
    for pid in pids:
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text(encoding="utf-8")
        except OSError:
            continue
        total += sum(int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:"))
    return total if pids else None


# --- host network ----------------------------------------------------------------------------------


def _ensure_bridge(lab: Lab) -> None:
    """Create the lab bridge (marked with our alias) holding the gateway address, and bring it up."""
    bridge = bridge_name(lab.region)
    alias = BRIDGE_ALIAS_PREFIX + lab.region
    info = _bridge_info(bridge)
    if info is None:
        _host(["ip", "link", "add", "name", bridge, "type", "bridge"])
        _host(["ip", "link", "set", "dev", bridge, "alias", alias])
    elif info.get("ifalias") != alias or info.get("linkinfo", {}).get("info_kind") != "bridge":
        raise LabError(f"{bridge} exists but was not made by the ekc lab of {lab.region}: not touching it")
    prefix = ipaddress.ip_network(lab.cidr).prefixlen
    addresses = _host(["ip", "-j", "addr", "show", "dev", bridge])
    have = {a.get("local") for entry in json.loads(addresses or "[]") for a in entry.get("addr_info", [])}
    if lab.gateway not in have:
        _host(["ip", "addr", "add", f"{lab.gateway}/{prefix}", "dev", bridge])
    _host(["ip", "link", "set", "dev", bridge, "up"])
    add_bridge_addresses(bridge, lab.extra_addresses)


def _remove_bridge(lab: Lab) -> None:
    """Delete the lab bridge if it exists and carries our mark."""
    bridge = bridge_name(lab.region)
    info = _bridge_info(bridge)
    if info is not None and info.get("ifalias") == BRIDGE_ALIAS_PREFIX + lab.region:
        _host(["ip", "link", "del", "dev", bridge])


def _bridge_info(bridge: str) -> dict[str, Any] | None:
    """``ip -d link`` of the interface, or None if there is none by that name."""
    done = subprocess.run(["ip", "-j", "-d", "link", "show", "dev", bridge], capture_output=True,
                          text=True, check=False, env=_env())
    if done.returncode != 0:
        return None
    entries = json.loads(done.stdout or "[]")
    return dict(entries[0]) if entries else None


def _ensure_firewall(lab: Lab) -> None:
    """Install (or replace, atomically) the lab's host table."""
    table = nft_table_name(lab.region)
    script = f"add table inet {table}\ndelete table inet {table}\n{nft_ruleset(lab.region)}"
    _host(["nft", "-f", "-"], stdin=script)


def _remove_firewall(lab: Lab) -> None:
    """Delete the lab's host table if it is there."""
    if _firewall_present(lab):
        _host(["nft", "delete", "table", "inet", nft_table_name(lab.region)])


def _firewall_present(lab: Lab) -> bool:
    """Whether the lab's host table exists."""
    done = subprocess.run(["nft", "list", "table", "inet", nft_table_name(lab.region)], capture_output=True,
                          check=False, env=_env())
    return done.returncode == 0


# --- nodes -----------------------------------------------------------------------------------------


def _boot_node(lab: Lab, node: LabNode) -> int:
    """Make the node's root filesystem if needed, then start its nspawn detached; returns the PID."""
    home = node_dir(lab, node)
    rootfs = home / "rootfs"
    if not rootfs.is_dir():
        _create_rootfs(lab, node, rootfs)
    _write_network(lab, node, rootfs)
    machine = machine_name(lab.region, node.name)
    argv = [
        "systemd-nspawn", "--register=no", "--keep-unit", "-b", "-D", str(rootfs), "-M", machine,
        f"--hostname={node.name}", f"--network-bridge={bridge_name(lab.region)}", "--resolv-conf=off",
        "--timezone=off", "--link-journal=no", "--console=read-only",
    ]
    console = home / "console.log"
    with console.open("a", encoding="utf-8") as out:
        out.write(f"\n--- ekc lab: booting {machine} at {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    pid = _spawn_detached(argv, {**os.environ, **NSPAWN_ENV, "PATH": sbin_path()}, console,
                          _make_cgroups(node_cgroups(lab, node)))
    (home / "pid").write_text(f"{pid}\n", encoding="utf-8")
    log.info("lab %s: started %s (pid %d)", lab.region, machine, pid)
    return pid


def _create_rootfs(lab: Lab, node: LabNode, rootfs: Path) -> None:
    """Copy the cached tree and write the node's identity, renaming into place only when complete."""
    staging = rootfs.with_name(".rootfs.new")
    remove_tree(staging)
    build_rootfs(staging)
    _write_identity(lab, node, staging)
    staging.rename(rootfs)
    _forget_host_key(lab, node.address)


def _write_identity(lab: Lab, node: LabNode, root: Path) -> None:
    """Hostname, hosts, a machine ID of its own, the static network and root's authorized keys."""
    (root / "etc/hostname").write_text(node.name + "\n", encoding="utf-8")
    (root / "etc/hosts").write_text(hosts_file(node.name, node.address), encoding="utf-8")
    # A machine ID of its own, written now, so boot is not a "first boot" (no firstboot prompts or presets).
    (root / "etc/machine-id").write_text(uuid.uuid4().hex + "\n", encoding="utf-8")
    _write_network(lab, node, root)
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    keys = ssh_dir / "authorized_keys"
    keys.write_text(lab.authorized_keys.strip() + "\n", encoding="utf-8")
    keys.chmod(0o600)
    _host(["chroot", str(root), "systemctl", "enable", "--quiet", "systemd-networkd.service"])


def _write_network(lab: Lab, node: LabNode, root: Path) -> None:
    """The node's static address, and its routes to the spec's other networks, written before each boot."""
    network = root / NETWORK_FILE
    network.parent.mkdir(parents=True, exist_ok=True)
    text = network_file(node.address, lab.cidr) + route_sections(lab.routes, lab.gateway)
    network.write_text(text, encoding="utf-8")


def _forget_host_key(lab: Lab, address: str) -> None:
    """Drop an old entry for ``address`` from the lab's known_hosts: a new node has new host keys."""
    if lab.known_hosts.is_file():
        lines = lab.known_hosts.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = [line for line in lines if address not in line.split(" ", 1)[0].split(",")]
        lab.known_hosts.write_text("".join(kept), encoding="utf-8")


def _spawn_detached(argv: list[str], env: dict[str, str], console: Path, cgroups: list[Path]) -> int:
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


def _is_our_nspawn(pid: int, rootfs: Path) -> bool:
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


def _wait_ready(lab: Lab, node: LabNode, deadline: float) -> None:
    """Wait until the node answers SSH; fail with the console's tail if it dies or the deadline passes."""
    while True:
        if node_pid(lab, node) is None:
            raise LabError(f"node {node.name} stopped while booting:\n{console_tail(lab, node)}")
        if _ssh_ready(lab, node):
            return
        if time.monotonic() > deadline:
            raise LabError(
                f"node {node.name} ({node.address}) did not answer SSH within {lab.boot_timeout:.0f} s;"
                f" console ({node_dir(lab, node) / 'console.log'}):\n{console_tail(lab, node)}"
            )
        time.sleep(0.5)


def _ssh_ready(lab: Lab, node: LabNode) -> bool:
    """TCP 22 answers, and, when the lab has a private key, a real root login runs ``true``."""
    try:
        with socket.create_connection((node.address, 22), timeout=1.0):
            pass
    except OSError:
        return False
    if lab.ssh_private_key is None:
        return True
    argv = [*ssh_command(lab, node.name)[:-1], "-o", "BatchMode=yes", f"root@{node.address}", "true"]
    try:
        return subprocess.run(argv, capture_output=True, timeout=20, check=False).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def console_tail(lab: Lab, node: LabNode, lines: int = 30) -> str:
    """The last lines of a node's console, terminal escapes removed, for error messages."""
    try:
        text = (node_dir(lab, node) / "console.log").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no console log)"
    clean = _ANSI_RE.sub("", text).replace("\r", "")
    return "\n".join(clean.splitlines()[-lines:])


def _stop_nodes(lab: Lab) -> None:
    """Power every running node off (SIGTERM to nspawn), kill what outlives ``stop_timeout``."""
    nodes = _nodes_on_disk(lab)
    for node in nodes:
        pid = node_pid(lab, node)
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
    if not _wait_gone(lab, nodes, lab.stop_timeout):
        for node in nodes:
            if node_pid(lab, node) is not None:
                log.warning("lab %s: %s ignored poweroff; killing it", lab.region, node.name)
                _kill_node(lab, node)
        if not _wait_gone(lab, nodes, 10):
            raise LabError(f"lab {lab.region}: nodes still running after SIGKILL")
    for node in nodes:
        _remove_cgroups(node_cgroups(lab, node))


def _nodes_on_disk(lab: Lab) -> list[LabNode]:
    """The spec's nodes plus any node the state directory still has (one since removed from the spec
    must be stopped too before its root filesystem is deleted)."""
    nodes = list(lab.nodes)
    known = {node.name for node in nodes}
    home = lab.state_path / "nodes"
    if home.is_dir():
        nodes += [LabNode(d.name, "") for d in sorted(home.iterdir()) if d.name not in known]
    return nodes


def _wait_gone(lab: Lab, nodes: list[LabNode], timeout: float) -> bool:
    """Wait until none of ``nodes`` runs; False if some still do after ``timeout``."""
    deadline = time.monotonic() + timeout
    while any(node_pid(lab, node) is not None for node in nodes):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _kill_node(lab: Lab, node: LabNode) -> None:
    """SIGKILL everything of the node: its whole cgroup where the kernel allows, its nspawn in any case."""
    for group in node_cgroups(lab, node)[:1]:
        kill = group / "cgroup.kill"
        if kill.exists():
            kill.write_text("1\n", encoding="utf-8")
    pid = node_pid(lab, node)
    if pid is not None:
        os.kill(pid, signal.SIGKILL)


# --- cgroups ---------------------------------------------------------------------------------------


def _cgroup2_mounts() -> list[Path]:
    """The host's cgroup v2 hierarchy: /sys/fs/cgroup (unified) or /sys/fs/cgroup/unified (hybrid)."""
    for base in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
        if (base / "cgroup.controllers").exists():
            return [base]
    return []


def _cgroup_bases() -> list[Path]:
    """Every hierarchy a node's processes are placed in: cgroup v2 and, on a hybrid host, name=systemd."""
    bases = _cgroup2_mounts()
    legacy = Path("/sys/fs/cgroup/systemd")
    if bases and bases[0] != Path("/sys/fs/cgroup") and (legacy / "cgroup.procs").exists():
        bases.append(legacy)
    return bases


def _make_cgroups(groups: list[Path]) -> list[Path]:
    """Create the node's own cgroups, where nspawn nests its supervisor and payload.

    Without them every nspawn started from the same cgroup would use the same ``payload`` cgroup, and
    the systemds of two nodes would manage (and kill) each other's services.
    """
    for group in groups:
        group.mkdir(parents=True, exist_ok=True)
    return groups


def _remove_cgroups(groups: list[Path]) -> None:
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


# --- helpers ---------------------------------------------------------------------------------------


def _write_marker(lab: Lab) -> None:
    """Mark the state directory as the lab's own, so ``lab_down`` may delete it and nothing else."""
    state = lab.state_path
    if state.exists() and any(state.iterdir()) and not (state / STATE_MARKER).is_file():
        raise LabError(f"{state} exists and is not an ekc lab's state directory: not using it")
    state.mkdir(parents=True, exist_ok=True)
    marker = {"region": lab.region, "bridge": bridge_name(lab.region), "table": nft_table_name(lab.region)}
    (state / STATE_MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")


def _require(problems: list[str]) -> None:
    """Raise one error listing every problem, if there are any."""
    if problems:
        raise LabError("cannot bring the lab up:\n" + "\n".join(f"- {p}" for p in problems))


def _env() -> dict[str, str]:
    """The environment for host tools, with the sbin directories on ``$PATH``."""
    return {**os.environ, "PATH": sbin_path()}


def _which(tool: str) -> str | None:
    """Where ``tool`` is, looking in the sbin directories too."""
    for directory in sbin_path().split(":"):
        candidate = Path(directory) / tool
        if directory and candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _host(argv: list[str], *, stdin: str | None = None) -> str:
    """Run a host command that must succeed and return its output; raise LabError with stderr if not."""
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False, env=_env())
    if done.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed: {(done.stderr or done.stdout).strip()}")
    return done.stdout
