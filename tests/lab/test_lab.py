"""The lab against real containers: nodes boot their own systemd, get their spec identity, reach each
other and nothing else, survive a second ``lab up``, and ``lab down`` leaves nothing behind.

Two labs are used: ``lab`` (kept up for the module) and ``downed`` (brought up and down once), so the
tests hold in any order and on any xdist worker (each worker gets its own region and subnets).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from ekc.bundle.rootfs import cached_rootfs, rootfs_info
from ekc.lab.model import Lab, LabNode, bridge_name, nft_table_name
from ekc.lab.nodes import lab_down, lab_status, lab_up, node_cgroups, node_dir, ssh_command

pytestmark = pytest.mark.lab

WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
OUTSIDE = ("203.0.113.1", 80)  # TEST-NET-3: never a real host (192.0.2.0/24 is this machine's own uplink)
# A /28 of TEST-NET-2 per xdist worker, routed to a port-less bridge on the host for the forwarding probe.
SINK_NET = f"198.51.100.{16 * WORKER}/28"
SINK_HOST, SINK_TARGET = f"198.51.100.{16 * WORKER + 1}/28", f"198.51.100.{16 * WORKER + 2}"
NODE_NAMES = ("alpha", "beta")


def make_lab(prefix: str, third_octet: int, state: Path, key: Path) -> Lab:
    """A two-node lab on 10.254.<third_octet>.0/24 whose root accepts ``key``."""
    net = f"10.254.{third_octet}"
    return Lab(
        region=f"{prefix}{WORKER}",
        cidr=f"{net}.0/24",
        gateway=f"{net}.1",
        nodes=tuple(LabNode(name, f"{net}.{11 + i}") for i, name in enumerate(NODE_NAMES)),
        authorized_keys=key.with_suffix(".pub").read_text(encoding="utf-8"),
        state_dir=state,
        ssh_private_key=key,
        boot_timeout=240,
    )


def run_on(lab: Lab, node: str, command: str) -> subprocess.CompletedProcess[str]:
    """Run a shell command on a node over SSH as root."""
    return subprocess.run([*ssh_command(lab, node), "-o", "BatchMode=yes", command],
                          capture_output=True, text=True, timeout=60, check=False)


def tcp_probe(host: str, port: int) -> str:
    """A command that prints ``connected`` or ``failed <reason>`` for a TCP connection from the node."""
    code = (
        "import socket\n"
        "try:\n"
        f"    socket.create_connection(('{host}', {port}), timeout=3).close(); print('connected')\n"
        "except OSError as exc:\n"
        "    print('failed', exc)\n"
    )
    return f"python3 -c \"{code}\""


def host(*argv: str) -> str:
    """Run a host command that must succeed."""
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def ssh_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh ed25519 key for root on the lab's nodes."""
    key = tmp_path_factory.mktemp("key") / "id_ed25519"
    host("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ekc-lab-test", "-f", str(key))
    return key


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, ssh_key: Path) -> Iterator[Lab]:
    """A running two-node lab, brought down after the module."""
    the_lab = make_lab("lt", 77 + WORKER, tmp_path_factory.mktemp("lab") / "state", ssh_key)
    try:
        lab_up(the_lab)
        yield the_lab
    finally:
        lab_down(the_lab)


@dataclass(frozen=True)
class Downed:
    """What a lab had before ``lab down``, to check that it is all gone after."""

    lab: Lab
    cgroups: tuple[Path, ...]


@pytest.fixture(scope="module")
def downed(tmp_path_factory: pytest.TempPathFactory, ssh_key: Path) -> Downed:
    """A second lab, brought up and then down by a spec that no longer lists its second node, so the
    checks below also prove that a node dropped from the spec is stopped and deleted with the rest."""
    the_lab = make_lab("ld", 177 + WORKER, tmp_path_factory.mktemp("downed") / "state", ssh_key)
    try:
        lab_up(the_lab)
    except BaseException:
        lab_down(the_lab)
        raise
    assert processes_mentioning(str(the_lab.state_path)), "the lab's nodes should run before lab down"
    cgroups = tuple(group for node in the_lab.nodes for group in node_cgroups(the_lab, node))
    lab_down(replace(the_lab, nodes=the_lab.nodes[:1]))
    return Downed(lab=the_lab, cgroups=cgroups)


@dataclass(frozen=True)
class ForwardProbe:
    """Drop counts of the lab's host table around one connection a node routed through the host."""

    dropped_before: int
    dropped_after: int
    node_saw: str


def dropped_packets(table: str) -> int:
    """Packets counted by the drop rules of the lab's table."""
    listing = json.loads(host("nft", "-j", "list", "table", "inet", table))
    total = 0
    for entry in listing["nftables"]:
        for expr in entry.get("rule", {}).get("expr", []):
            total += expr.get("counter", {}).get("packets", 0) if isinstance(expr, dict) else 0
    return total


@pytest.fixture(scope="module")
def forward_probe(lab: Lab) -> Iterator[ForwardProbe]:
    """Make the host forward for the lab bridge, give a node a route through the host, and try.

    The destination is routed on the host to a bridge with no ports (``sink``), and that is checked before
    anything is sent, so even without the lab's table the packet could not leave the machine.
    """
    bridge = bridge_name(lab.region)
    sink = f"ekcsink{WORKER}"
    forwarding = Path(f"/proc/sys/net/ipv4/conf/{bridge}/forwarding")
    saved = forwarding.read_text(encoding="utf-8")
    node = lab.nodes[0]
    host("ip", "link", "add", sink, "type", "bridge")
    try:
        host("ip", "addr", "add", SINK_HOST, "dev", sink)
        host("ip", "link", "set", sink, "up")
        forwarding.write_text("1\n", encoding="utf-8")
        route = host("ip", "route", "get", SINK_TARGET, "from", node.address, "iif", bridge)
        assert f"dev {sink}" in route, f"probe would not stay on this machine: {route}"
        before = dropped_packets(nft_table_name(lab.region))
        saw = run_on(lab, node.name, f"ip route add {SINK_NET} via {lab.gateway} && "
                     f"{tcp_probe(SINK_TARGET, 80)}; ip route del {SINK_NET}").stdout
        yield ForwardProbe(before, dropped_packets(nft_table_name(lab.region)), saw)
    finally:
        forwarding.write_text(saved, encoding="utf-8")
        subprocess.run(["ip", "link", "del", sink], check=False)


# --- nodes are real servers ------------------------------------------------------------------------


@pytest.mark.parametrize("name", NODE_NAMES)
def test_node_runs_its_own_systemd(lab: Lab, name: str) -> None:
    state = run_on(lab, name, "systemctl is-system-running").stdout.strip()
    assert state in ("running", "degraded")


@pytest.mark.parametrize("name", NODE_NAMES)
def test_node_has_spec_address(lab: Lab, name: str) -> None:
    shown = run_on(lab, name, "ip -4 -o addr show dev host0").stdout
    assert f"inet {lab.node(name).address}/24 " in shown


@pytest.mark.parametrize("name", NODE_NAMES)
def test_node_has_spec_hostname(lab: Lab, name: str) -> None:
    assert run_on(lab, name, "hostname").stdout.strip() == name


def test_nodes_reach_each_other(lab: Lab) -> None:
    first, second = lab.nodes
    assert run_on(lab, first.name, tcp_probe(second.address, 22)).stdout.strip() == "connected"


def test_nodes_have_distinct_ssh_host_keys(lab: Lab) -> None:
    keys = {run_on(lab, n.name, "cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[1] for n in lab.nodes}
    assert len(keys) == len(lab.nodes)


def test_nodes_have_distinct_machine_ids(lab: Lab) -> None:
    ids = {run_on(lab, n.name, "cat /etc/machine-id").stdout.strip() for n in lab.nodes}
    assert len(ids) == len(lab.nodes)


# --- nodes reach nothing outside the lab -----------------------------------------------------------


def test_node_cannot_resolve_names(lab: Lab) -> None:
    assert run_on(lab, lab.nodes[0].name, "getent hosts deb.debian.org").returncode != 0


def test_node_cannot_connect_outside(lab: Lab) -> None:
    saw = run_on(lab, lab.nodes[0].name, tcp_probe(*OUTSIDE)).stdout
    assert saw.startswith("failed")


@pytest.mark.parametrize("family", ["-4", "-6"])
def test_node_has_no_default_route(lab: Lab, family: str) -> None:
    assert run_on(lab, lab.nodes[0].name, f"ip {family} route show default").stdout.strip() == ""


def test_host_table_drops_what_a_node_routes_through_the_host(forward_probe: ForwardProbe) -> None:
    assert forward_probe.dropped_after > forward_probe.dropped_before, forward_probe.node_saw


# --- lifecycle ---------------------------------------------------------------------------------------


def test_status_reports_the_lab_ready(lab: Lab) -> None:
    assert lab_status(lab).ready


def test_lab_up_again_keeps_the_running_nodes(lab: Lab) -> None:
    before = [n.pid for n in lab_status(lab).nodes]
    assert [n.pid for n in lab_up(lab).nodes] == before


def test_node_console_is_logged(lab: Lab) -> None:
    console = (node_dir(lab, lab.nodes[0]) / "console.log").read_text(encoding="utf-8", errors="replace")
    assert "Reached target" in console


def processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line contains ``text`` (PIDs alone may have been reused by then)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text.encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_lab_down_stops_every_node_process(downed: Downed) -> None:
    assert processes_mentioning(str(downed.lab.state_path)) == []


def test_lab_down_removes_the_bridge(downed: Downed) -> None:
    assert not Path(f"/sys/class/net/{bridge_name(downed.lab.region)}").exists()


def test_lab_down_removes_the_nft_table(downed: Downed) -> None:
    listed = subprocess.run(["nft", "list", "table", "inet", nft_table_name(downed.lab.region)],
                            capture_output=True, check=False)
    assert listed.returncode != 0


def test_lab_down_removes_the_state_dir(downed: Downed) -> None:
    assert not downed.lab.state_path.exists()


def test_lab_down_removes_the_node_cgroups(downed: Downed) -> None:
    assert [group for group in downed.cgroups if group.exists()] == []


def test_lab_down_twice_is_harmless(downed: Downed) -> None:
    lab_down(downed.lab)
    assert not lab_status(downed.lab).bridge_present


# --- the cached root filesystem carries no identity --------------------------------------------------


@pytest.fixture(scope="module")
def cached_tree(lab: Lab) -> Path:
    """The cached tree the lab's nodes were copied from."""
    return cached_rootfs()


def test_cached_rootfs_has_an_empty_machine_id(cached_tree: Path) -> None:
    assert (cached_tree / "etc/machine-id").read_text(encoding="utf-8") == ""


def test_cached_rootfs_has_no_ssh_host_keys(cached_tree: Path) -> None:
    assert sorted((cached_tree / "etc/ssh").glob("ssh_host_*")) == []


def test_cached_rootfs_has_no_apt_sources(cached_tree: Path) -> None:
    sources = [*(cached_tree / "etc/apt").glob("sources.list"), *(cached_tree / "etc/apt").glob("sources.list.d/*")]
    assert sources == []


def test_cached_rootfs_has_no_resolver_of_the_builder(cached_tree: Path) -> None:
    assert not (cached_tree / "etc/resolv.conf").exists()


def test_cached_rootfs_records_its_build(cached_tree: Path) -> None:
    assert rootfs_info(cached_tree).size_bytes > 100 * 2**20
