"""Render a validated region into the exact state of every host: files, packages, services, triggers.

The render is engine-independent and offline. Both apply engines and the auditors read its output, so what
is reviewed is exactly what runs. It is byte-identical on every rerun and machine: no timestamps, sorted
output, content derived only from the spec and the secrets.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import replace

from ekc import __version__
from ekc.render.components.asterisk_pool import region_placements
from ekc.render.components.registry import components_for
from ekc.render.files import rendered_file
from ekc.render.flows import flow_matrix
from ekc.render.manifest import BuildManifest, HostManifest, ManagedFile
from ekc.render.model import Component, FileSpec, HostLayer, RenderContext, RenderedFile, RenderError, RenderResult
from ekc.spec.load import LoadedSpec, collector_paused
from ekc.spec.secrets import REDACTED, SecretsView
from schemas.region import Node


def render_host(
    ctx: RenderContext, node: Node, components: Iterable[Component]
) -> tuple[HostManifest, dict[str, bytes]]:
    """Everything one host must have, merged from every component that applies to it.

    A file another host already has (same template and data) is not rendered again: both hosts get the
    same bytes object.
    """
    merged = HostLayer()
    for component in components:
        layer = component(ctx, node)
        merged.packages.extend(layer.packages)
        merged.services.extend(layer.services)
        merged.files.extend(layer.files)
        merged.absent.extend(layer.absent)
        merged.python.extend(layer.python)
    contents: dict[str, bytes] = {}
    files: list[ManagedFile] = []
    for spec in sorted(merged.files, key=lambda f: f.path):
        if spec.path in contents:
            raise RenderError(f"{node.name}: two components render {spec.path}")
        rendered = rendered_file(ctx, spec)
        contents[spec.path] = rendered.data
        files.append(_managed(spec, rendered))
    manifest = HostManifest(
        name=node.name,
        address=node.address,
        roles=tuple(node.roles),
        packages=tuple(sorted(set(merged.packages))),
        files=tuple(files),
        services=tuple(sorted(set(merged.services), key=lambda s: s.name)),
        absent=tuple(sorted(set(merged.absent))),
        python=tuple(sorted(set(merged.python))),
    )
    return manifest, contents


def _managed(spec: FileSpec, rendered: RenderedFile) -> ManagedFile:
    return ManagedFile(
        path=spec.path,
        mode=spec.mode,
        owner=spec.owner,
        group=spec.group,
        sha256=rendered.sha256,
        component=spec.component,
        secret=spec.secret,
        trigger=spec.trigger,
    )


def render_region(spec: LoadedSpec, secrets: SecretsView) -> RenderResult:
    """Render every host of the region. With a redacting view, the result is safe for auditors."""
    with collector_paused():
        return _render_region(spec, secrets)


def _render_region(spec: LoadedSpec, secrets: SecretsView) -> RenderResult:
    # A node marked absent is rendered nowhere: no files of its own, and no other host names it any more.
    spec = replace(spec, region=spec.region.without_absent())
    ctx = RenderContext(spec=spec, secrets=secrets, flows=flow_matrix(spec.region))
    # In a redacted render, what hosts really get is rendered too, for the manifest's hashes. Files without
    # secrets come out the same, so both contexts share the rendered files (their keys hold the data).
    real_ctx = replace(ctx, secrets=secrets.real, shared={}) if secrets.redacted and secrets.real else None
    hosts: list[HostManifest] = []
    contents: dict[tuple[str, str], bytes] = {}
    for node in spec.region.nodes:
        host, files = render_host(ctx, node, components_for(node))
        if real_ctx is not None:
            host = _with_real_hashes(host, real_ctx, node)
        hosts.append(host)
        contents.update({(node.name, path): data for path, data in files.items()})
    _check_secrets_absent(contents, secrets)
    manifest = BuildManifest(
        ekc_version=__version__,
        spec=spec.display_path,
        spec_sha256=spec.sha256,
        region_code=spec.region.region.code,
        region_name=spec.region.region.name,
        redacted=secrets.redacted,
        hosts=tuple(hosts),
        flows=ctx.flows,
    )
    return RenderResult(manifest=manifest, contents=contents, placements=region_placements(ctx))


def _with_real_hashes(host: HostManifest, real_ctx: RenderContext, node: Node) -> HostManifest:
    """In a redacted render, record the hash of what the host really gets for files with secrets."""
    if not any(f.secret for f in host.files):
        return host
    real, _ = render_host(real_ctx, node, components_for(node))
    return replace(host, files=real.files)


_DELIMITERS = re.compile(rb"""[\s"',;:=<>()\[\]{}]+""")


def _check_secrets_absent(contents: Mapping[tuple[str, str], bytes], secrets: SecretsView) -> None:
    """Refuse to produce redacted output that still carries a secret value (a defect if it happens)."""
    if not secrets.redacted or secrets.real is None:
        return
    values = {v.encode() for v in secrets.real.values() if v != REDACTED}
    checked: set[int] = set()  # hosts share file contents: look at each distinct bytes object once
    for (host, path), data in contents.items():
        if id(data) in checked:
            continue
        checked.add(id(data))
        if not values.isdisjoint(_DELIMITERS.split(data)):
            raise RenderError(f"{host}:{path}: a secret value survived redaction")
