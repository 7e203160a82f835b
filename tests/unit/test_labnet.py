"""The lab's call network: which addresses the deploy host takes and which routes the nodes get."""

from __future__ import annotations

import pytest

from ekc.lab.host import bridge_mac
from ekc.lab.net import CallNetwork, LabNetError, Subnet, call_network, route_sections

SUBNETS = [Subnet("10.54.0.0/24", "10.54.0.1"), Subnet("10.54.10.0/24", "10.54.10.1")]
NODES = ["10.54.0.11", "10.54.0.21"]


def test_example_region_host_plays_the_carrier_and_the_operators_network() -> None:
    calls = call_network("10.54.0.0/24", "10.54.0.1", SUBNETS, ["10.54.0.5"], ["10.54.10.0/24"], NODES)
    assert calls == CallNetwork(extra_addresses=("10.54.10.1/24", "10.54.0.5/24"), routes=("10.54.10.0/24",))


def test_the_lab_subnet_itself_is_never_routed() -> None:
    calls = call_network("10.54.0.0/24", "10.54.0.1", SUBNETS[:1], [], [], NODES)
    assert calls == CallNetwork((), ())


def test_a_subnet_without_gateway_gets_its_first_free_address() -> None:
    calls = call_network("10.54.0.0/24", "10.54.0.1", [SUBNETS[0], Subnet("10.60.0.0/24")], [], [], NODES)
    assert calls.extra_addresses == ("10.60.0.1/24",)


def test_an_operators_network_outside_the_declared_subnets_is_routed_too() -> None:
    calls = call_network("10.54.0.0/24", "10.54.0.1", SUBNETS, [], ["10.54.10.0/25", "172.16.5.0/24"], NODES)
    assert calls.routes == ("10.54.10.0/24", "172.16.5.0/24")
    assert "172.16.5.1/24" in calls.extra_addresses


def test_a_trunk_peer_in_no_declared_network_gets_a_host_route() -> None:
    calls = call_network("10.54.0.0/24", "10.54.0.1", SUBNETS[:1], ["192.168.77.5"], [], NODES)
    assert calls.routes == ("192.168.77.5/32",)
    assert calls.extra_addresses == ("192.168.77.5/32",)


def test_a_trunk_peer_in_a_routed_network_takes_that_prefix() -> None:
    calls = call_network("10.54.0.0/24", "10.54.0.1", SUBNETS, ["10.54.10.7"], [], NODES)
    assert calls.extra_addresses == ("10.54.10.1/24", "10.54.10.7/24")


def test_a_trunk_peer_on_a_node_address_is_refused() -> None:
    with pytest.raises(LabNetError, match=r"10\.54\.0\.11"):
        call_network("10.54.0.0/24", "10.54.0.1", SUBNETS, ["10.54.0.11"], [], NODES)


def test_routes_never_include_a_default_route() -> None:
    calls = call_network("10.54.0.0/24", "10.54.0.1", SUBNETS, ["10.54.0.5"], ["10.54.10.0/24"], NODES)
    assert all(not r.endswith("/0") for r in calls.routes)


def test_route_sections_for_networkd() -> None:
    text = route_sections(["10.54.10.0/24"], "10.54.0.1")
    assert "[Route]\nDestination=10.54.10.0/24\nGateway=10.54.0.1\n" in text
    assert route_sections([], "10.54.0.1") == ""


def test_the_example_regions_lab_plays_its_carrier_and_operators() -> None:
    from ekc.lab.region import lab_call_network  # noqa: PLC0415
    from ekc.spec.load import load_spec  # noqa: PLC0415

    calls = lab_call_network(load_spec("inventories/example"))
    assert calls == CallNetwork(extra_addresses=("10.54.10.1/24", "10.54.0.5/24"), routes=("10.54.10.0/24",))


def test_the_bridge_has_a_mac_of_its_own_per_region() -> None:
    """A fixed, locally administered unicast MAC: the bridge then keeps it when a node's port leaves."""
    mac = bridge_mac("example")
    first = int(mac.split(":")[0], 16)
    assert first & 0x02 and not first & 0x01, mac
    assert mac == bridge_mac("example") != bridge_mac("ha")
    assert len(mac.split(":")) == 6
