"""What every verify module shares: the build's manifest, the bundle lock, testinfra hosts by name, ``fail``.

``./deploy.py verify`` runs the whole ``tests/verify/`` directory with ``$EKC_VERIFY_BUILD`` set: the
data-driven ``test_hosts.py`` (files, packages, services, ports, firewall) and one module per component
(``test_<component>.py``) with the checks only that component knows (a SIP registration refused, a
non-TLS database connection refused, ...). Each module skips itself without ``$EKC_VERIFY_BUILD``.

A component module parametrizes its tests by the hosts that carry its role::

    def pytest_generate_tests(metafunc):
        parametrize_hosts(metafunc, "pbx", "asterisk")

Test ids are then ``test_x[pbx1]``, so the summary names the host.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import testinfra

from ekc.bundle.lock import BundleLock
from ekc.render.manifest import BuildManifest, HostManifest, load_manifest
from ekc.verify.run import BUILD_ENV, LOCK_ENV

Host = Any  # testinfra.host.Host (testinfra has no type information)
Nodes = Callable[[str | None], Host]

MANIFEST: BuildManifest | None = load_manifest(Path(os.environ[BUILD_ENV])) if os.environ.get(BUILD_ENV) else None
LOCK: BundleLock | None = (BundleLock.from_json(Path(os.environ[LOCK_ENV]).read_text(encoding="utf-8"))
                           if os.environ.get(LOCK_ENV) else None)
SKIP_REASON = f"run by `deploy.py verify` (needs ${BUILD_ENV} and --hosts)"


def selected_hosts(hosts_option: str) -> list[HostManifest]:
    """The manifest's hosts named by ``--hosts`` (matched by address), in manifest order."""
    if MANIFEST is None:
        return []
    addresses = {urlparse(spec.strip()).hostname for spec in hosts_option.split(",") if spec.strip()}
    return [h for h in MANIFEST.hosts if h.address in addresses]


def parametrize_hosts(metafunc: pytest.Metafunc, fixture: str, role: str) -> None:
    """Parametrize ``fixture`` with the names of the selected hosts that carry ``role`` (left out if none)."""
    if fixture not in metafunc.fixturenames:
        return
    names = [h.name for h in selected_hosts(metafunc.config.option.hosts or "") if role in h.roles]
    metafunc.parametrize(fixture, names, ids=names)  # none: the test is left out (see below)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave out the checks with nothing to check (no host carries their role): they are not part of the run."""
    empty = [item for item in items if item.name.endswith("[NOTSET]")]
    if empty:
        items[:] = [item for item in items if item not in empty]
        config.hook.pytest_deselected(items=empty)


@pytest.fixture(scope="session")
def manifest() -> BuildManifest:
    """The build's manifest (verify modules skip themselves when there is none)."""
    assert MANIFEST is not None
    return MANIFEST


@pytest.fixture(scope="session")
def nodes(pytestconfig: pytest.Config) -> Nodes:
    """A testinfra host by manifest name (None: the machine verify runs on, i.e. the deploy host)."""
    option = pytestconfig.option

    @cache
    def get(name: str | None) -> Host:
        if name is None:
            return testinfra.get_host("local://")
        host = MANIFEST.host(name) if MANIFEST else None
        assert host is not None, name
        return testinfra.get_host(f"ssh://root@{host.address}", ssh_config=option.ssh_config,
                                  ssh_identity_file=option.ssh_identity_file)

    return get


def fail(problems: Sequence[str]) -> None:
    """Fail with the problems as the message (what the summary and the JUnit XML show), if there are any."""
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)
