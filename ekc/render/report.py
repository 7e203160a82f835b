"""The auditor's report: one self-contained HTML page describing a redacted build, and what changed since an
older one.

Auditors review the render, not the spec: every host's packages, services and files (content included,
secrets redacted), the flow matrix, and the impact of each file change. The page has no external assets and
needs no JavaScript to be read, so it can be opened on any machine of the closed network or archived as is.
The same build always gives a byte-identical page (no timestamps), so a report can be checksummed and signed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import jinja2

from ekc.paths import TEMPLATES_DIR
from ekc.render.manifest import (
    MANIFEST_NAME,
    BuildManifest,
    Flow,
    HostManifest,
    ManagedFile,
    ServiceState,
    host_file_path,
    load_manifest,
)
from ekc.render.plan import SHORT_HASH
from ekc.render.plan_text import describe_trigger
from ekc.render.report_changes import ChangesView, changes_view, file_anchor, host_anchor

TEMPLATE = "report/index.html.j2"
# A file larger than this is listed with its checksum but not inlined: it keeps the page loadable.
MAX_INLINE_BYTES = 256 * 1024


class ReportError(Exception):
    """A build the report cannot be written from: not redacted, incomplete or unreadable."""


@dataclass(frozen=True)
class FileView:
    """One managed file as the report shows it. ``content`` is None when it is not inlined (see ``note``).

    ``verified`` says whether the file in the build matches the manifest's sha256; None for secret files,
    whose redacted copy cannot match the checksum of the real content.
    """

    anchor: str
    path: str
    mode: str
    owner: str
    group: str
    sha256: str
    sha256_short: str
    component: str
    secret: bool
    action: str
    change_needs: str
    drops_calls: bool
    size: str
    content: str | None
    note: str
    verified: bool | None


@dataclass(frozen=True)
class HostView:
    """One host's section of the report."""

    name: str
    anchor: str
    address: str
    roles: tuple[str, ...]
    packages: tuple[str, ...]
    services: tuple[ServiceState, ...]
    absent: tuple[str, ...]
    files: tuple[FileView, ...]
    secret_files: int


@dataclass(frozen=True)
class Link:
    """A link to an element of the page: its id and the text shown."""

    anchor: str
    label: str


@dataclass(frozen=True)
class ReportView:
    """Everything the template shows; computed here so the template only loops and branches."""

    region_code: str
    region_name: str
    spec: str
    spec_sha256: str
    ekc_version: str
    hosts: tuple[HostView, ...]
    flows: tuple[Flow, ...]
    file_count: int
    secret_count: int
    unverified: tuple[Link, ...]
    changes: ChangesView | None


def write_report(build_dir: Path, out_html: Path, against: Path | None = None) -> None:
    """Write the audit report of a redacted build to ``out_html``; with ``against``, add what changed.

    A build with real secrets is refused: the report is meant to be handed to people who must not see them.
    """
    manifest = _load(build_dir)
    if not manifest.redacted:
        raise ReportError(
            f"{build_dir} is not a redacted build: its files contain real secrets, and the audit report"
            " must not; render the region redacted and report on that build"
        )
    changes = changes_view(_load(against), against, manifest, build_dir) if against is not None else None
    view = _report_view(manifest, build_dir, changes)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    out_html.write_text(render_report(view), encoding="utf-8")


def render_report(view: ReportView) -> str:
    """The HTML text of a report view."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    return env.get_template(TEMPLATE).render(report=view)


def _load(build_dir: Path) -> BuildManifest:
    """The manifest of a build directory, or a ReportError saying why it cannot be read."""
    try:
        return load_manifest(build_dir)
    except FileNotFoundError as exc:
        raise ReportError(f"{build_dir} is not a build directory: {MANIFEST_NAME} is missing") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise ReportError(f"{build_dir / MANIFEST_NAME} cannot be read: {exc}") from exc


def _report_view(manifest: BuildManifest, build_dir: Path, changes: ChangesView | None) -> ReportView:
    """Assemble the whole page's data from a build."""
    hosts = tuple(_host_view(h, build_dir) for h in sorted(manifest.hosts, key=lambda h: h.name))
    files = [(h.name, f) for h in hosts for f in h.files]
    return ReportView(
        region_code=manifest.region_code,
        region_name=manifest.region_name,
        spec=manifest.spec,
        spec_sha256=manifest.spec_sha256,
        ekc_version=manifest.ekc_version,
        hosts=hosts,
        flows=tuple(sorted(manifest.flows, key=_flow_key)),
        file_count=len(files),
        secret_count=sum(f.secret for _, f in files),
        unverified=tuple(Link(f.anchor, f"{host}:{f.path}") for host, f in files if f.verified is False),
        changes=changes,
    )


def _flow_key(flow: Flow) -> tuple[str, int, str, str, str]:
    """Flows ordered by what they reach, then by who reaches it."""
    return (flow.target, flow.port, flow.proto, flow.source, flow.purpose)


def _host_view(host: HostManifest, build_dir: Path) -> HostView:
    """One host's section: packages, services and every file with its content."""
    files = tuple(_file_view(host.name, f, build_dir) for f in sorted(host.files, key=lambda f: f.path))
    return HostView(
        name=host.name,
        anchor=host_anchor(host.name),
        address=host.address,
        roles=host.roles,
        packages=tuple(sorted(host.packages)),
        services=tuple(sorted(host.services, key=lambda s: s.name)),
        absent=tuple(sorted(host.absent)),
        files=files,
        secret_files=sum(f.secret for f in files),
    )


def _file_view(host: str, managed: ManagedFile, build_dir: Path) -> FileView:
    """One file with its rendered (redacted) content read from the build."""
    data = _read_rendered(build_dir, host, managed.path)
    text, note = _inline_text(data)
    verified = None if managed.secret else hashlib.sha256(data).hexdigest() == managed.sha256
    return FileView(
        anchor=file_anchor(host, managed.path),
        path=managed.path,
        mode=managed.mode,
        owner=managed.owner,
        group=managed.group,
        sha256=managed.sha256,
        sha256_short=managed.sha256[:SHORT_HASH],
        component=managed.component,
        secret=managed.secret,
        action=managed.trigger.action,
        change_needs=describe_trigger(managed.trigger) or managed.trigger.impact,
        drops_calls=managed.trigger.action == "restart" and managed.trigger.drops_calls,
        size=_size_text(data, text),
        content=text,
        note=note,
        verified=verified,
    )


def _size_text(data: bytes, text: str | None) -> str:
    """``52 bytes, 1 line``: how big a file is, lines only for text."""
    size = f"{len(data)} byte" + ("" if len(data) == 1 else "s")
    if text is None:
        return size
    lines = len(text.splitlines())
    return f"{size}, {lines} line" + ("" if lines == 1 else "s")


def _read_rendered(build_dir: Path, host: str, path: str) -> bytes:
    """The rendered copy of a host's file; a missing one means the build is incomplete."""
    rendered = host_file_path(build_dir, host, path)
    try:
        return rendered.read_bytes()
    except OSError as exc:
        raise ReportError(f"{build_dir} is incomplete: {host}:{path} is in the manifest but {exc}") from exc


def _inline_text(data: bytes) -> tuple[str | None, str]:
    """The text to inline for a file, or None and the reason it is not shown."""
    if len(data) > MAX_INLINE_BYTES:
        return None, f"not inlined: {len(data)} bytes (over {MAX_INLINE_BYTES}); see the build directory"
    try:
        return data.decode("utf-8"), ""
    except UnicodeDecodeError:
        return None, f"binary content, {len(data)} bytes, not shown"


