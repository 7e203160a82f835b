"""verify: the hosts are exactly what the render says. Data-driven: every check comes from the build manifest.

Run by ``./deploy.py verify`` (:func:`ekc.verify.checks.run_verify`), which passes the build directory in
``$EKC_VERIFY_BUILD`` (and the bundle lock in ``$EKC_VERIFY_LOCK``), one ``--hosts=ssh://root@<address>`` per
host, ``--ssh-config`` and ``--ssh-identity-file``. Each check is its own test with a readable id, e.g.
``test_file_matches_render[pbx1:/etc/chrony/chrony.conf]``, so the JUnit XML names what failed. Without
``$EKC_VERIFY_BUILD`` (a plain ``pytest`` of the repository) the module is skipped.

A unit that skips itself in a container (``ConditionVirtualization=``) cannot be proven running there: its
check is skipped with the reason "not provable in a container: …", never passed.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

import pytest

from ekc.engines.live import FileState
from ekc.engines.units import UnitState, Virtualization, read_unit_probe, unit_probe_script
from ekc.verify.checks import (
    NOT_PROVABLE,
    AbsentCheck,
    FileCheck,
    FirewallProbe,
    PackageCheck,
    PortsCheck,
    ProbeResult,
    ServiceCheck,
    VerifyChecks,
    file_problems,
    parse_listeners,
    probe_command,
    probe_result,
    unexpected_listeners,
    verify_checks,
)
from ekc.verify.cluster import ClusterCheck, cluster_problems
from tests.verify.conftest import LOCK, MANIFEST, SKIP_REASON, Host, Nodes, fail, selected_hosts

if MANIFEST is None:
    pytest.skip(SKIP_REASON, allow_module_level=True)

# --- parametrization from the manifest -----------------------------------------------------------------------


@cache
def checks(hosts_option: str) -> VerifyChecks:
    """The checks of the hosts named by ``--hosts`` (matched to the manifest by address)."""
    assert MANIFEST is not None
    return verify_checks(MANIFEST, [h.name for h in selected_hosts(hosts_option)], LOCK)


class _DeselectEmpty:
    """Drop tests whose parameter set is empty (a region with no absent paths has nothing to check there)."""

    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        empty = [i for i in items if i.name.endswith("[NOTSET]")]
        if empty:
            items[:] = [i for i in items if i not in empty]
            config.hook.pytest_deselected(items=empty)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One test per check: ``<host>:<what>`` ids, so a failure names its host and object."""
    found = checks(metafunc.config.option.hosts or "")
    kinds: dict[str, Sequence[Any]] = {
        "package_check": found.packages, "locked_check": found.locked, "file_check": found.files,
        "absent_check": found.absent, "service_check": found.services, "ports_check": found.ports,
        "denied_probe": found.denied, "admitted_probe": found.admitted, "cluster_check": found.clusters,
    }
    for name, values in kinds.items():
        if name not in metafunc.fixturenames:
            continue
        if name == "locked_check" and LOCK is None:
            metafunc.parametrize(name, [None], ids=["no bundle lock"])
            continue
        if not values and not metafunc.config.pluginmanager.has_plugin("ekc-deselect-empty"):
            metafunc.config.pluginmanager.register(_DeselectEmpty(), "ekc-deselect-empty")
        metafunc.parametrize(name, values, ids=[v.id for v in values])


# --- packages ------------------------------------------------------------------------------------------------


def test_package_installed(nodes: Nodes, package_check: PackageCheck) -> None:
    package = nodes(package_check.host).package(package_check.package)
    fail([] if package.is_installed else [f"{package_check.package} is not installed"])


def test_package_at_locked_version(nodes: Nodes, locked_check: PackageCheck | None) -> None:
    if locked_check is None:
        pytest.skip("no bundle lock given: package versions not checked")
    package = nodes(locked_check.host).package(locked_check.package)
    if not package.is_installed:
        fail([f"{locked_check.package} is not installed (the bundle lock has {locked_check.version})"])
    elif package.version != locked_check.version:
        fail([f"{locked_check.package} {package.version} is installed; the bundle lock has {locked_check.version}"])


# --- files ---------------------------------------------------------------------------------------------------


def observed_file(node: Host, path: str) -> FileState:
    """A path on the host as testinfra sees it."""
    found = node.file(path)
    if found.is_symlink or (found.exists and not found.is_file):
        return FileState(path, "notfile")
    if not found.exists:
        return FileState(path, "missing")
    return FileState(path, "ok", found.sha256sum, f"{found.mode:04o}", found.user, found.group)


def test_file_matches_render(nodes: Nodes, file_check: FileCheck) -> None:
    fail(file_problems(file_check.file, observed_file(nodes(file_check.host), file_check.file.path)))


def test_path_absent(nodes: Nodes, absent_check: AbsentCheck) -> None:
    found = nodes(absent_check.host).file(absent_check.path)
    fail([f"{absent_check.path} exists; the render wants it absent"] if found.exists or found.is_symlink else [])


# --- services ------------------------------------------------------------------------------------------------


def unit_state(node: Host, service: str) -> tuple[UnitState, Virtualization]:
    """The unit's state and the host's virtualization, read the way the live plan reads them."""
    return read_unit_probe(node.check_output("sh -c %s", unit_probe_script(service)), service)


def test_service_enabled(nodes: Nodes, service_check: ServiceCheck) -> None:
    unit, _ = unit_state(nodes(service_check.host), service_check.service.name)
    wanted = service_check.service.enabled
    if not unit.found:
        fail([f"{unit.name}: no such unit on the host"])
    elif unit.is_enabled != wanted:
        fail([f"{unit.name} is {unit.enabled}; the render wants it {'enabled' if wanted else 'disabled'}"])


def test_service_running(nodes: Nodes, service_check: ServiceCheck) -> None:
    unit, virt = unit_state(nodes(service_check.host), service_check.service.name)
    wanted = service_check.service.running
    if unit.is_running == wanted:
        return
    guards = unit.container_conditions(virt)
    if wanted and virt.in_container and unit.skipped_by_condition and guards:
        pytest.skip(f"{NOT_PROVABLE}: {unit.name} has {', '.join(map(str, guards))}")
    unmet = ", ".join(map(str, unit.unmet(virt)))
    why = f" (start condition not met: {unmet or 'see systemctl status'})" if unit.skipped_by_condition else ""
    fail([f"{unit.name} is {unit.active}; the render wants it {'running' if wanted else 'stopped'}{why}"])


# --- listening ports and the firewall ------------------------------------------------------------------------


def test_only_flow_matrix_ports_listen(nodes: Nodes, ports_check: PortsCheck) -> None:
    node = nodes(ports_check.host)
    listening = node.check_output("ss -Hltnu")
    first, last = (int(p) for p in node.check_output("cat /proc/sys/net/ipv4/ip_local_port_range").split())
    extra = unexpected_listeners(parse_listeners(listening), ports_check.flows, ephemeral=(first, last))
    fail([f"listening but not in the flow matrix: {', '.join(extra)}"] if extra else [])


def run_probe(nodes: Nodes, probe: FirewallProbe) -> tuple[ProbeResult, str]:
    """Make the probe's connection from its source and return the result."""
    source = nodes(probe.source_host)
    result, detail = probe_result(source.run(probe_command(probe.source_address, probe.address, probe.port)).stdout)
    if result == "nobind":
        where = probe.source_host or "the machine verify runs on"
        pytest.skip(f"cannot probe from {probe.source}: {probe.source_address} is not an address of {where}")
    return result, detail


def test_firewall_drops_unlisted_connection(nodes: Nodes, denied_probe: FirewallProbe) -> None:
    result, detail = run_probe(nodes, denied_probe)
    what = f"{denied_probe.source} → {denied_probe.host} tcp/{denied_probe.port}"
    reasons = {
        "connected": f"{what} connected: the firewall admits it",
        "refused": f"{what} was answered with a reset: the packet reached the host's TCP stack, "
                   "so the firewall did not drop it",
        "error": f"{what}: the probe failed ({detail})",
    }
    fail([f"{reasons[result]}; {denied_probe.why}"] if result in reasons else [])


def test_firewall_admits_listed_connection(nodes: Nodes, admitted_probe: FirewallProbe) -> None:
    result, detail = run_probe(nodes, admitted_probe)
    what = f"{admitted_probe.source} → {admitted_probe.host} tcp/{admitted_probe.port}"
    fail([] if result == "connected" else [f"{what}: {result} {detail}".rstrip() + f"; {admitted_probe.why}"])


# --- database cluster -----------------------------------------------------------------------------------------


def test_cluster_member_sound(nodes: Nodes, cluster_check: ClusterCheck) -> None:
    """A Patroni member runs or streams in a cluster with one leader; an etcd member is healthy over TLS."""
    out = nodes(cluster_check.host).run(cluster_check.command)
    fail(cluster_problems(cluster_check, out.stdout or out.stderr))
