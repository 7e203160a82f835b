"""The render's working types: what a component contributes to a host, and what it may read.

A component is a function ``(RenderContext, Node) -> HostLayer``; :mod:`ekc.render.region` runs them and
merges their layers. Components import only this module (and their own helpers), never the renderer, so the
imports run one way: region -> components -> model.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ekc.render.manifest import BuildManifest, Flow, ServiceState, Trigger
from ekc.render.pool import Placement
from ekc.spec.load import LoadedSpec
from ekc.spec.secrets import SecretsView
from schemas.region import Node


@dataclass(frozen=True)
class FileSpec:
    """A file a component wants on a host, before rendering."""

    path: str
    template: str
    component: str
    data: Mapping[str, Any] = field(default_factory=dict)
    mode: str = "0644"
    owner: str = "root"
    group: str = "root"
    trigger: Trigger = field(default_factory=Trigger)
    secret: bool = False
    comment: str | None = "#"


@dataclass
class HostLayer:
    """What one component contributes to one host."""

    packages: list[str] = field(default_factory=list)
    services: list[ServiceState] = field(default_factory=list)
    files: list[FileSpec] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)
    # Python requirements (``name==version``) whose wheels the bundle must carry for this host's setup units.
    python: list[str] = field(default_factory=list)


T = TypeVar("T")


@dataclass(frozen=True)
class RenderedFile:
    """One rendered file content and its sha256, shared by every host that gets the same file."""

    data: bytes
    sha256: str


@dataclass(frozen=True)
class RenderContext:
    """Everything a component may read while rendering.

    ``shared`` holds region-wide data that components build once per render and hand to every node (the
    phones of pjsip.conf, the queues), and ``rendered`` the files already rendered, so that nodes with the
    same file share the work (:func:`ekc.render.files.rendered_file`). Data handed to a :class:`FileSpec` is
    never changed afterwards.
    """

    spec: LoadedSpec
    secrets: SecretsView
    flows: tuple[Flow, ...]
    shared: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    rendered: dict[Hashable, RenderedFile] = field(default_factory=dict, compare=False, repr=False)

    @property
    def redacted(self) -> bool:
        """True when secrets render as ``<redacted>`` (auditors' output)."""
        return self.secrets.redacted

    def once(self, name: str, build: Callable[[], T]) -> T:
        """The region-wide value called ``name`` (``<component>.<what>``), built on first use in this render."""
        if name not in self.shared:
            self.shared[name] = build()
        value: T = self.shared[name]
        return value


Component = Callable[[RenderContext, Node], HostLayer]


@dataclass(frozen=True)
class RenderResult:
    """The whole render: the manifest, the content of every file, keyed by (host, path), and where each
    department is served (empty without a pool behind the SIP edge)."""

    manifest: BuildManifest
    contents: Mapping[tuple[str, str], bytes]
    placements: Mapping[str, Placement] = field(default_factory=dict)


class RenderError(Exception):
    """A template or component failed: a defect in ekc, never a user mistake (those fail validation)."""
