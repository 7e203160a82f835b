"""The closed contour, proven on applied servers: the apply succeeded, and the nodes can reach nothing outside.

``test_lab.py`` proves that a bare lab node has no route, no resolver and no forwarding through the host.
This module proves the point of the product on top of that: a *complete* apply (every package the render
asks for, installed by pyinfra) succeeded on a node that can reach nothing outside the lab, so every
package came from the region's bundle served by the deploy host, and nothing the apply wrote opened a way
out (no resolver, no route). The region is a copy of ``inventories/small`` on 10.232.10.0/24.

Outside addresses are TEST-NET ones that are never real hosts. 192.0.2.0/24 is this build machine's own
uplink (192.0.2.1 is its real default gateway), so connections go to 203.0.113.1 (TEST-NET-3) and 192.0.2.1
is only looked up in the routing table, which sends nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from ekc.bundle.lock import BundleLock
from ekc.engines.common import wanted_packages
from tests.support.labregion import AppliedRegion, applied_region

pytestmark = [pytest.mark.lab, pytest.mark.slow]

WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
OUTSIDE = ("203.0.113.1", 80)  # TEST-NET-3: never a real host
ROUTE_ONLY = ("192.0.2.1", "198.51.100.1", "203.0.113.1")  # looked up in the routing table only
OUTSIDE_NAMES = ("deb.debian.org", "pypi.org")


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppliedRegion]:
    """``contourtest`` applied on its own lab."""
    name = "contourtest" if WORKER == 0 else f"contourtest{WORKER}"
    with applied_region(tmp_path_factory.mktemp("contourtest"), name, prefix=f"10.232.{10 + 20 * WORKER}.") as applied:
        yield applied


@pytest.fixture(scope="module")
def node(region: AppliedRegion) -> str:
    """The region's only node (everything on one server)."""
    return region.manifest.hosts[0].name


def test_the_apply_succeeded_and_installed_every_wanted_package(region: AppliedRegion, node: str) -> None:
    assert region.applied.ok
    wanted = wanted_packages(region.manifest.hosts[0])
    listed = region.run(node, "dpkg-query -W -f='${Package} ${db:Status-Abbrev}\\n' " + " ".join(wanted))
    installed = {line.split()[0] for line in listed.stdout.splitlines() if line.split()[1:] == ["ii"]}
    assert installed == set(wanted), listed.stdout + listed.stderr


def test_the_bundle_was_the_only_package_source(region: AppliedRegion, node: str) -> None:
    assert region.served.files > 0 and region.served.refused == 0
    bundle = f"http://{region.lab.gateway}:{region.bundle_port}/apt"
    policy = region.run(node, "apt-cache policy").stdout
    sources = {line.split()[1] for line in policy.splitlines() if line.strip()[:3].isdigit() and "http" in line}
    assert sources == {bundle}, policy


def test_every_installed_package_is_the_bundles_locked_version(region: AppliedRegion, node: str) -> None:
    lock = BundleLock.from_json(region.lock.read_text(encoding="utf-8"))
    wanted = {d.name: d.version for d in lock.debs if d.name in wanted_packages(region.manifest.hosts[0])}
    listed = region.run(node, "dpkg-query -W -f='${Package} ${Version}\\n' " + " ".join(sorted(wanted)))
    assert dict(line.split(" ", 1) for line in listed.stdout.splitlines()) == wanted


@pytest.mark.parametrize("name", OUTSIDE_NAMES)
def test_an_outside_name_does_not_resolve_after_apply(region: AppliedRegion, node: str, name: str) -> None:
    assert region.run(node, f"getent ahosts {name}").returncode != 0


def test_an_outside_address_is_unreachable_after_apply(region: AppliedRegion, node: str) -> None:
    host, port = OUTSIDE
    code = (f"import socket\ntry:\n    socket.create_connection(('{host}', {port}), timeout=3).close(); "
            "print('connected')\nexcept OSError as exc:\n    print('failed', exc)\n")
    saw = region.run(node, f'python3 -c "{code}"').stdout
    assert saw.startswith("failed"), saw


@pytest.mark.parametrize("address", ROUTE_ONLY)
def test_no_route_leads_outside_after_apply(region: AppliedRegion, node: str, address: str) -> None:
    looked_up = region.run(node, f"ip route get {address}")
    assert looked_up.returncode != 0 and "unreachable" in looked_up.stderr, looked_up.stdout
