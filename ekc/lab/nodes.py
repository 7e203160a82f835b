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
import json
import logging
import os
import re
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

from ekc.bundle.rootfs import build_rootfs, remove_tree, sbin_path
from ekc.lab.host import (
    bridge_info,
    cgroup_bases,
    drop_interface,
    ensure_bridge,
    ensure_firewall,
    firewall_present,
    host_run,
    host_veth,
    is_our_nspawn,
    make_cgroups,
    remove_bridge,
    remove_cgroups,
    remove_firewall,
    spawn_detached,
)
from ekc.lab.model import (
    CGROUP_GROUP,
    NETWORK_FILE,
    NSPAWN_ENV,
    STATE_MARKER,
    Lab,
    LabError,
    LabNode,
    LabStatus,
    NodeStatus,
    bridge_name,
    hosts_file,
    lab_problems,
    machine_name,
    network_file,
    nft_table_name,
    preflight,
    require_none,
)
from ekc.lab.net import route_sections

log = logging.getLogger(__name__)

_ANSI_RE = re.compile(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])")


# --- names and file contents (pure) -------------------------------------------------------------


# --- preflight -------------------------------------------------------------------------------------


# --- up, down, status, ssh -------------------------------------------------------------------------


def lab_up(lab: Lab) -> LabStatus:
    """Bring the lab up: bridge, firewall, every node booted and answering SSH. Idempotent.

    A node that is already running is left alone. A node's root filesystem is made (and its identity
    written: hostname, address, keys) only when it does not exist yet; after that it is a server like
    any other and keeps what was applied to it across ``lab_up`` runs.
    """
    require_none(preflight() + lab_problems(lab))
    _write_marker(lab)
    ensure_bridge(lab)
    ensure_firewall(lab)
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
    remove_firewall(lab)
    remove_bridge(lab)
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
        bridge_present=bridge_info(bridge_name(lab.region)) is not None,
        firewall_present=firewall_present(lab),
        nodes=tuple(nodes),
    )


def crash_node(lab: Lab, name: str, timeout: float = 30) -> None:
    """Kill node ``name`` at once, as a power cut would (its whole cgroup): no shutdown, no goodbye to peers.

    ``lab_up`` boots it again from its root filesystem, which keeps what was applied and written to it.
    """
    node = lab.node(name)
    pid = node_pid(lab, node)
    veth = host_veth(pid) if pid is not None else None
    _kill_node(lab, node)
    if not _wait_gone(lab, [node], timeout):
        raise LabError(f"lab {lab.region}: node {name} still runs {timeout:.0f} s after SIGKILL")
    # The dead node's cgroups go too: booted again into the old tree, its systemd finds the units' cgroups of
    # the killed boot and SIGKILLs every service it starts there during the first seconds (Kamailio among them,
    # until systemd's start limit gives up on it).
    remove_cgroups(node_cgroups(lab, node))
    if veth is not None:
        # The kernel drops the node's veth pair once its network namespace is freed, which can take long
        # enough that booting the node again would find the name taken.
        drop_interface(veth, timeout=10)


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
    return pid if is_our_nspawn(pid, node_dir(lab, node) / "rootfs") else None


def node_cgroups(lab: Lab, node: LabNode) -> list[Path]:
    """The node's own cgroups (``<hierarchy>/ekc-lab/<machine>``), cgroup v2 first; they may not exist."""
    return [base / CGROUP_GROUP / machine_name(lab.region, node.name) for base in cgroup_bases()]


def node_pids(lab: Lab, node: LabNode) -> set[int]:
    """Every process of the node, nspawn included: the PIDs in its cgroup v2 tree (empty when it is not up)."""
    pids: set[int] = set()
    for group in node_cgroups(lab, node)[:1]:
        for procs in group.rglob("cgroup.procs") if group.is_dir() else ():
            with contextlib.suppress(OSError):  # a cgroup the node's systemd removed meanwhile
                pids.update(int(p) for p in procs.read_text(encoding="utf-8").split())
    return pids


def node_memory_kib(lab: Lab, node: LabNode) -> int | None:
    """Proportional memory (PSS, KiB) of every process of the node, nspawn included; None if unknown."""
    pids, total = node_pids(lab, node), 0
    for pid in pids:
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text(encoding="utf-8")
        except OSError:
            continue
        total += sum(int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:"))
    return total if pids else None


# --- host network ----------------------------------------------------------------------------------


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
    pid = spawn_detached(argv, {**os.environ, **NSPAWN_ENV, "PATH": sbin_path()}, console,
                          make_cgroups(node_cgroups(lab, node)))
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
    host_run(["chroot", str(root), "systemctl", "enable", "--quiet", "systemd-networkd.service"])


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
        remove_cgroups(node_cgroups(lab, node))


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


# --- helpers ---------------------------------------------------------------------------------------


def _write_marker(lab: Lab) -> None:
    """Mark the state directory as the lab's own, so ``lab_down`` may delete it and nothing else."""
    state = lab.state_path
    if state.exists() and any(state.iterdir()) and not (state / STATE_MARKER).is_file():
        raise LabError(f"{state} exists and is not an ekc lab's state directory: not using it")
    state.mkdir(parents=True, exist_ok=True)
    marker = {"region": lab.region, "bridge": bridge_name(lab.region), "table": nft_table_name(lab.region)}
    (state / STATE_MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")


