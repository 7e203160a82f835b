"""The render's output model: what every host must have, as written to ``build/<region>/manifest.json``.

This is the contract between ``render`` and everything downstream of it (report, plan, apply, verify):
they read the manifest and the rendered file tree, never the spec.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, is_dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

MANIFEST_NAME = "manifest.json"
HOSTS_DIR = "hosts"
FILES_DIR = "files"

Action = Literal["none", "reload", "restart"]


@dataclass(frozen=True)
class Trigger:
    """What a change of a file needs on its host, and what that costs."""

    action: Action = "none"
    service: str | None = None
    command: str | None = None
    impact: str = "no service is touched"
    drops_calls: bool = False


@dataclass(frozen=True)
class ManagedFile:
    """One file a host must have. ``sha256`` is of the content the host gets (never redacted)."""

    path: str
    mode: str
    owner: str
    group: str
    sha256: str
    component: str
    secret: bool = False
    trigger: Trigger = field(default_factory=Trigger)


@dataclass(frozen=True)
class ServiceState:
    """A systemd unit and the state it must be in."""

    name: str
    enabled: bool = True
    running: bool = True


# IP protocols a flow may name besides TCP and UDP, with their numbers. They have no ports: such a flow's
# ``port`` is 0.
PORTLESS_PROTOCOLS: dict[str, int] = {"vrrp": 112}


@dataclass(frozen=True)
class Flow:
    """One allowed connection: a source (node name or network) reaches a host's port (or protocol, for VRRP)."""

    source: str
    source_cidr: str
    target: str
    target_address: str
    port: int
    proto: Literal["tcp", "udp", "vrrp"]
    purpose: str
    port_end: int | None = None

    @property
    def ports(self) -> str:
        """The port, or the range ``first-last``; ``-`` for a protocol without ports."""
        if self.proto in PORTLESS_PROTOCOLS:
            return "-"
        return f"{self.port}-{self.port_end}" if self.port_end else str(self.port)


@dataclass(frozen=True)
class HostManifest:
    """Everything one host must have."""

    name: str
    address: str
    roles: tuple[str, ...]
    packages: tuple[str, ...]
    files: tuple[ManagedFile, ...]
    services: tuple[ServiceState, ...]
    absent: tuple[str, ...] = ()
    python: tuple[str, ...] = ()

    def file(self, path: str) -> ManagedFile | None:
        """The managed file at ``path``, if this host has one."""
        return next((f for f in self.files if f.path == path), None)


@dataclass(frozen=True)
class BuildManifest:
    """The whole render of a region."""

    ekc_version: str
    spec: str
    spec_sha256: str
    region_code: str
    region_name: str
    redacted: bool
    hosts: tuple[HostManifest, ...]
    flows: tuple[Flow, ...]

    def packages(self) -> list[str]:
        """Every Debian package any host installs: what the bundle must carry."""
        return sorted({package for host in self.hosts for package in host.packages})

    def python_requirements(self) -> list[str]:
        """Every Python requirement any host's setup installs from the bundle's wheels."""
        return sorted({req for host in self.hosts for req in host.python})

    def host(self, name: str) -> HostManifest | None:
        """The host called ``name``, if the region has one."""
        return next((h for h in self.hosts if h.name == name), None)


def host_file_path(build_dir: Path, host: str, target_path: str) -> Path:
    """Where the rendered copy of ``target_path`` for ``host`` lies inside a build directory."""
    return build_dir / HOSTS_DIR / host / FILES_DIR / target_path.lstrip("/")


def dump_manifest(manifest: BuildManifest) -> str:
    """The manifest as stable JSON text (sorted keys, fixed indentation, trailing newline)."""
    return json.dumps(_plain(manifest), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


@cache
def _field_names(kind: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(kind))


def _plain(value: Any) -> Any:
    """What ``dataclasses.asdict`` gives for the manifest's types, without its deep copies (5 times faster)."""
    if is_dataclass(value) and not isinstance(value, type):
        return {name: _plain(getattr(value, name)) for name in _field_names(type(value))}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def load_manifest(build_dir: Path) -> BuildManifest:
    """Read ``build_dir/manifest.json`` back into the model."""
    raw: dict[str, Any] = json.loads((build_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
    hosts = tuple(
        HostManifest(
            name=h["name"],
            address=h["address"],
            roles=tuple(h["roles"]),
            packages=tuple(h["packages"]),
            files=tuple(
                ManagedFile(**{**f, "trigger": Trigger(**f["trigger"])}) for f in h["files"]
            ),
            services=tuple(ServiceState(**s) for s in h["services"]),
            absent=tuple(h.get("absent", ())),
            python=tuple(h.get("python", ())),
        )
        for h in raw["hosts"]
    )
    return BuildManifest(
        ekc_version=raw["ekc_version"],
        spec=raw["spec"],
        spec_sha256=raw["spec_sha256"],
        region_code=raw["region_code"],
        region_name=raw["region_name"],
        redacted=raw["redacted"],
        hosts=hosts,
        flows=tuple(Flow(**f) for f in raw["flows"]),
    )
