"""Apply engines: converge a region's hosts to a render, with pyinfra (default) or Ansible.

Both take the same build directory and the same deploy key and return the same :class:`ApplyResult`;
:func:`apply_build` is the whole apply in one call: it puts the deploy key on disk and serves the bundle
to the nodes for as long as the engine runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal, Protocol

from ekc.bundle.serve import serve_bundle
from ekc.engines.common import ApplyResult, EngineError, HostResult, deploy_key
from ekc.spec.load import LoadedSpec
from ekc.spec.secrets import SecretsView

__all__ = ["ENGINES", "ApplyResult", "EngineError", "EngineName", "HostResult", "apply_build", "engine"]

EngineName = Literal["pyinfra", "ansible"]


class ApplyFunction(Protocol):
    """The signature both engines share."""

    def __call__(self, build_dir: Path, key_file: Path, *, limit: Sequence[str] = (), dry_run: bool = False,
                 known_hosts: Path | None = None) -> ApplyResult: ...


def _pyinfra() -> ApplyFunction:
    from ekc.engines.pyinfra_engine import apply_pyinfra  # noqa: PLC0415 - pyinfra loads gevent; only when used

    return apply_pyinfra


def _ansible() -> ApplyFunction:
    from ekc.engines.ansible_engine import apply_ansible  # noqa: PLC0415

    return apply_ansible


ENGINES: dict[str, Callable[[], ApplyFunction]] = {"pyinfra": _pyinfra, "ansible": _ansible}


def engine(name: str) -> ApplyFunction:
    """The apply function of engine ``name``."""
    if name not in ENGINES:
        raise EngineError(f"unknown engine {name!r} (engines: {', '.join(ENGINES)})")
    return ENGINES[name]()


def apply_build(loaded: LoadedSpec, secrets: SecretsView, build_dir: Path, bundle_dir: Path | None, *,
                engine_name: str = "pyinfra", limit: Sequence[str] = (), dry_run: bool = False,
                known_hosts: Path | None = None) -> ApplyResult:
    """Apply ``build_dir`` to the region's hosts with one engine, serving ``bundle_dir`` meanwhile.

    The bundle is served on ``network.deploy_host:network.bundle_port`` (the nodes' only package source)
    for as long as the engine runs; a dry run changes nothing, so it needs no bundle (``bundle_dir`` may
    be None then).
    """
    apply = engine(engine_name)
    network = loaded.region.network
    with deploy_key(secrets) as key:
        if dry_run:
            return apply(build_dir, key, limit=limit, dry_run=True, known_hosts=known_hosts)
        if bundle_dir is None:
            raise EngineError("an apply needs the bundle: pass the bundle directory (./deploy.py bundle)")
        with serve_bundle(bundle_dir, network.deploy_host, network.bundle_port):
            return apply(build_dir, key, limit=limit, dry_run=False, known_hosts=known_hosts)
