"""The lab's network for calls: the deploy host plays the carrier and the operators' phones.

A region's SIP traffic comes from addresses outside its servers: the trunk's peers (the carrier) and the
operators' networks. In the lab the deploy host holds those addresses on the lab bridge, so SIPp runs
there bound to a carrier's or a phone's address, and every node gets a route to each of the spec's own
subnets through the deploy host. Nothing else changes: still no default route, and the routes cover only
the spec's declared networks, which the host terminates itself (it forwards nothing).

Pure functions compute what to add from plain values (the lab knows nothing about specs); the two host
functions add the addresses and read them back. The addresses go when the bridge goes (``lab down``).
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ekc.bundle.rootfs import sbin_path

IPv4Net = ipaddress.IPv4Network


class LabNetError(RuntimeError):
    """The lab's call network could not be laid out or set up; the message says why."""


@dataclass(frozen=True)
class Subnet:
    """A declared network of the spec: its CIDR and, if the spec names one, its gateway."""

    cidr: str
    gateway: str | None = None


@dataclass(frozen=True)
class CallNetwork:
    """What the lab adds for calls.

    ``extra_addresses`` are ``address/prefix`` the host holds on the lab bridge besides the gateway;
    ``routes`` are the networks every node reaches through the gateway.
    """

    extra_addresses: tuple[str, ...]
    routes: tuple[str, ...]


def call_network(lab_cidr: str, gateway: str, subnets: Sequence[Subnet], trunk_peers: Iterable[str],
                 extra_networks: Iterable[str] = (), taken: Iterable[str] = ()) -> CallNetwork:
    """The addresses and routes that let the host play the carrier and the phones of a region.

    Every declared subnet other than the lab's own is routed through ``gateway`` and the host takes its
    gateway address (or its first host address); ``extra_networks`` (e.g. operators' networks outside the
    declared subnets) likewise. Trunk peers become host addresses with the prefix of the network that holds
    them (a /32 route when no declared network does). ``taken`` (the nodes, the gateway) must never be
    claimed by the host.
    """
    lab_net = _network(lab_cidr)
    taken_set = {str(ipaddress.ip_address(a)) for a in (*taken, gateway)}
    networks: list[tuple[IPv4Net, str | None]] = [(_network(s.cidr), s.gateway) for s in subnets]
    for cidr in extra_networks:
        net = _network(cidr)
        if not any(net.subnet_of(known) for known, _ in networks):
            networks.append((net, None))
    routes: list[str] = []
    addresses: list[str] = []
    for net, net_gateway in networks:
        if net == lab_net or net.subnet_of(lab_net) or net.overlaps(lab_net):
            continue
        if any(net.subnet_of(_network(r)) for r in routes):
            continue
        routes.append(str(net))
        addresses.append(f"{_host_address(net, net_gateway, taken_set)}/{net.prefixlen}")
    for peer in trunk_peers:
        addr = ipaddress.ip_address(peer)
        if str(addr) in taken_set:
            raise LabNetError(f"trunk peer {peer} is a node's or the deploy host's address: the host cannot"
                              " play the carrier there")
        holder = next((n for n in [lab_net, *(_network(r) for r in routes)] if addr in n), None)
        if holder is None:
            holder = _network(f"{addr}/32")
            routes.append(str(holder))
        entry = f"{addr}/{holder.prefixlen}"
        if entry not in addresses:
            addresses.append(entry)
    return CallNetwork(extra_addresses=tuple(addresses), routes=tuple(routes))


def route_sections(routes: Iterable[str], gateway: str) -> str:
    """systemd-networkd ``[Route]`` sections for a node's ``host0``: each network via the gateway."""
    return "".join(
        f"\n# The spec's network {route}, served by the deploy host (the lab's carrier and phones).\n"
        f"[Route]\nDestination={route}\nGateway={gateway}\n"
        for route in routes
    )


def _network(cidr: str) -> IPv4Net:
    """An IPv4 network, host bits allowed (``10.54.10.1/24`` is 10.54.10.0/24)."""
    net = ipaddress.ip_network(cidr, strict=False)
    if not isinstance(net, IPv4Net):
        raise LabNetError(f"{cidr}: the lab's call network is IPv4 only")
    return net


def _host_address(net: IPv4Net, gateway: str | None, taken: set[str]) -> str:
    """The address the host takes in ``net``: its gateway, else the first free host address."""
    if gateway is not None and str(ipaddress.ip_address(gateway)) not in taken:
        return str(ipaddress.ip_address(gateway))
    for candidate in net.hosts() if net.prefixlen < 32 else [net.network_address]:
        if str(candidate) not in taken:
            return str(candidate)
    raise LabNetError(f"{net}: no free address for the deploy host")


# --- on the host -----------------------------------------------------------------------------------


def add_bridge_addresses(bridge: str, addresses: Iterable[str]) -> list[str]:
    """Add each ``address/prefix`` to the bridge unless it is there; return what was added."""
    have = bridge_addresses(bridge)
    added = []
    for entry in addresses:
        if entry.split("/")[0] not in have:
            _host(["ip", "addr", "add", entry, "dev", bridge])
            added.append(entry)
    return added


def bridge_addresses(bridge: str) -> set[str]:
    """The IPv4 addresses the host holds on ``bridge`` (empty when there is no such interface)."""
    done = subprocess.run(["ip", "-j", "-4", "addr", "show", "dev", bridge], capture_output=True, text=True,
                          check=False, env={**os.environ, "PATH": sbin_path()})
    if done.returncode != 0:
        return set()
    return {str(a.get("local")) for entry in json.loads(done.stdout or "[]") for a in entry.get("addr_info", [])}


def _host(argv: list[str]) -> None:
    """Run a host command that must succeed."""
    done = subprocess.run(argv, capture_output=True, text=True, check=False,
                          env={**os.environ, "PATH": sbin_path()})
    if done.returncode != 0:
        raise LabNetError(f"{' '.join(argv)} failed: {(done.stderr or done.stdout).strip()}")
