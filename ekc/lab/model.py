"""The lab as data: its nodes and bridge, the names of what it makes on the host, the files each node gets, and
what must hold before it comes up. Pure functions only; :mod:`ekc.lab.nodes` does the work.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ekc.bundle.rootfs import sbin_path
from ekc.paths import REPO_ROOT

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


def preflight() -> list[str]:
    """What this machine lacks to run the lab, as messages for a human (empty when nothing is missing)."""
    problems = []
    if os.geteuid() != 0:
        problems.append("the lab needs root: it creates a bridge, an nftables table and containers")
    for tool, package in REQUIRED_TOOLS:
        if _which(tool) is None:
            problems.append(f"{tool} not found: apt-get install {package}")
    if not cgroup2_mounts():
        problems.append("no cgroup v2 hierarchy is mounted (forky's systemd needs one)")
    return problems


def require_none(problems: list[str]) -> None:
    """Raise one error listing every problem, if there are any."""
    if problems:
        raise LabError("cannot bring the lab up:\n" + "\n".join(f"- {p}" for p in problems))


def _which(tool: str) -> str | None:
    """Where ``tool`` is, looking in the sbin directories too."""
    for directory in sbin_path().split(":"):
        candidate = Path(directory) / tool
        if directory and candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def cgroup2_mounts() -> list[Path]:
    """The host's cgroup v2 hierarchy: /sys/fs/cgroup (unified) or /sys/fs/cgroup/unified (hybrid)."""
    for base in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
        if (base / "cgroup.controllers").exists():
            return [base]
    return []
