"""The lab of a region spec: the spec's nodes, at the spec's addresses, on the subnet that holds them.

``ekc.lab.nodes`` knows nothing about specs; this is the one place that maps a region onto a :class:`Lab`, so the
CLI and the tests boot exactly the servers the spec describes, reachable with the region's deploy key.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from ekc.lab.model import Lab, LabError, LabNode
from ekc.lab.net import CallNetwork, LabNetError, Subnet, call_network
from ekc.spec.load import LoadedSpec
from ekc.spec.secrets import SecretsView


def lab_for(loaded: LoadedSpec, secrets: SecretsView, key_file: Path | None = None, *,
            state_dir: Path | None = None) -> Lab:
    """The lab of ``loaded``: region = the spec's folder name, gateway = ``network.deploy_host``.

    ``key_file`` is the deploy private key written to disk (``ekc.engines.common.deploy_key``); with it
    the lab proves a real root login before calling a node ready. Root on every node accepts the deploy
    public key, exactly as the rendered ``/root/.ssh/authorized_keys`` will.
    """
    region = loaded.region
    calls = lab_call_network(loaded)
    return Lab(
        region=loaded.name,
        cidr=lab_cidr(loaded),
        gateway=region.network.deploy_host,
        nodes=tuple(LabNode(node.name, node.address) for node in region.nodes),
        authorized_keys=secrets.get("ssh", "deploy", "public").strip() + "\n",
        state_dir=state_dir,
        ssh_private_key=key_file,
        extra_addresses=calls.extra_addresses,
        routes=calls.routes,
    )


def lab_call_network(loaded: LoadedSpec) -> CallNetwork:
    """The addresses the deploy host takes to play the carrier (trunk peers) and the operators' phones (an
    address in each declared network that is not the lab's own), and the nodes' routes to those networks."""
    region = loaded.region
    telephony = region.telephony
    try:
        return call_network(
            lab_cidr(loaded),
            region.network.deploy_host,
            [Subnet(s.cidr, s.gateway) for s in region.network.subnets],
            [peer for trunk in telephony.trunks for peer in trunk.peers],
            extra_networks=telephony.operator_networks,
            taken=[node.address for node in region.nodes],
        )
    except LabNetError as exc:
        raise LabError(f"{loaded.display_path}: {exc}") from exc


def lab_cidr(loaded: LoadedSpec) -> str:
    """The declared subnet that holds every node and the deploy host (the lab has one bridge)."""
    network = loaded.region.network
    addresses = [ipaddress.ip_address(n.address) for n in loaded.region.nodes]
    addresses.append(ipaddress.ip_address(network.deploy_host))
    for subnet in network.subnets:
        net = ipaddress.ip_network(subnet.cidr, strict=False)
        if all(address in net for address in addresses):
            return str(net)
    declared = ", ".join(s.cidr for s in network.subnets)
    raise LabError(
        f"{loaded.display_path}: no single subnet ({declared}) holds every node and the deploy host"
        f" {network.deploy_host}; the lab puts them all on one bridge"
    )
