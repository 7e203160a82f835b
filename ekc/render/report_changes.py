"""The audit report's changes section: what differs from an older build, host by host, with content diffs
(never of a file that carries secrets)."""

from __future__ import annotations

import difflib
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from ekc.render.manifest import (
    BuildManifest,
    host_file_path,
)
from ekc.render.plan import SHORT_HASH, FileChange, HostPlan, Plan, diff_builds
from ekc.render.plan_text import describe_attributes, describe_service, describe_trigger, format_plan, plan_summary

TEMPLATE = "report/index.html.j2"
# A file larger than this is listed with its checksum but not inlined: it keeps the page loadable.
MAX_INLINE_BYTES = 256 * 1024

# A longer diff is cut: the full files are in both build directories.
MAX_DIFF_LINES = 2000

SECRET_DIFF_NOTE = "content changed (contains secrets)"

UNREDACTED_DIFF_NOTE = "content changed (not shown: the older build is not redacted)"


@dataclass(frozen=True)
class DiffLine:
    """One line of a unified diff and its kind (add, del, hunk, head, ctx) for colouring."""

    kind: str
    text: str


@dataclass(frozen=True)
class FileChangeView:
    """One file change in the "changes since" section, with its diff when it may be shown."""

    path: str
    change: str
    marker: str
    details: str
    action: str
    trigger: str
    drops_calls: bool
    secret: bool
    anchor: str
    diff: tuple[DiffLine, ...]
    note: str


@dataclass(frozen=True)
class HostChangesView:
    """The changes of one host since the older build."""

    name: str
    address: str
    anchor: str
    status: str
    files: tuple[FileChangeView, ...]
    packages: tuple[str, ...]
    services: tuple[str, ...]
    absent: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChangesView:
    """The "changes since" section: the plan from the older build to this one."""

    old_spec: str
    old_spec_sha256: str
    old_short: str
    old_ekc_version: str
    old_redacted: bool
    summary: str
    text: str
    hosts: tuple[HostChangesView, ...]
    unchanged: tuple[str, ...]


def changes_view(old: BuildManifest, old_dir: Path, new: BuildManifest, new_dir: Path) -> ChangesView:
    """The "changes since" section: the plan from the older build, with diffs where they may be shown."""
    plan = diff_builds(old, new)
    return ChangesView(
        old_spec=old.spec,
        old_spec_sha256=old.spec_sha256,
        old_short=old.spec_sha256[:SHORT_HASH],
        old_ekc_version=old.ekc_version,
        old_redacted=old.redacted,
        summary=plan_summary(plan),
        text=format_plan(plan),
        hosts=tuple(_host_changes(h, old, old_dir, new_dir) for h in _changed_hosts(plan)),
        unchanged=tuple(h.host for h in plan.hosts if not h.changed),
    )


def _changed_hosts(plan: Plan) -> list[HostPlan]:
    """The hosts of a plan that change, in name order."""
    return [h for h in plan.hosts if h.changed]


def _host_changes(host: HostPlan, old: BuildManifest, old_dir: Path, new_dir: Path) -> HostChangesView:
    """One host's changes: files (with diffs), packages, services."""
    if host.removed_host:
        status = "removed from the spec; nothing is applied to it"
    else:
        status = "new host" if host.added_host else ""
    return HostChangesView(
        name=host.host,
        address=host.address,
        anchor="" if host.removed_host else host_anchor(host.host),
        status=status,
        files=tuple(_file_change_view(c, old.redacted, old_dir, new_dir) for c in host.files),
        packages=tuple(f"{'+' if p.change == 'added' else '-'} {p.package}" for p in host.packages),
        services=tuple(describe_service(s) for s in host.services),
        absent=tuple(f"{'delete' if a.change == 'added' else 'no longer kept absent'}: {a.path}" for a in host.absent),
        notes=host.notes,
    )


def _file_change_view(change: FileChange, old_redacted: bool, old_dir: Path, new_dir: Path) -> FileChangeView:
    """One file change; its content diff only when neither build can leak a secret through it."""
    diff: tuple[DiffLine, ...] = ()
    note = {"added": "new file", "removed": "removed from the host"}.get(change.change, "")
    if change.change == "changed" and "content" in change.attributes:
        if not old_redacted:
            note = UNREDACTED_DIFF_NOTE
        elif change.secret:
            note = SECRET_DIFF_NOTE
        else:
            diff, note = _content_diff(change, old_dir, new_dir)
    trigger = describe_trigger(change.trigger)
    return FileChangeView(
        path=change.path,
        change=change.change,
        marker={"added": "+", "changed": "~", "removed": "-"}[change.change],
        details=_what_changed(change),
        action=change.trigger.action,
        trigger=trigger or "no service is touched",
        drops_calls=change.trigger.action == "restart" and change.trigger.drops_calls,
        secret=change.secret,
        anchor="" if change.change == "removed" else file_anchor(change.host, change.path),
        diff=diff,
        note=note,
    )


def _what_changed(change: FileChange) -> str:
    """``content``, ``mode 0644 → 0640``, ``added``…: the "what changed" cell of a file change."""
    if change.change != "changed":
        return change.change
    return describe_attributes(change) or "content"


def _content_diff(change: FileChange, old_dir: Path, new_dir: Path) -> tuple[tuple[DiffLine, ...], str]:
    """A unified diff of a non-secret file between two redacted builds, cut at MAX_DIFF_LINES."""
    try:
        before = host_file_path(old_dir, change.host, change.path).read_bytes().decode("utf-8")
        after = host_file_path(new_dir, change.host, change.path).read_bytes().decode("utf-8")
    except OSError as exc:
        return (), f"content changed (no diff: {exc})"
    except UnicodeDecodeError:
        return (), "content changed (binary, no diff)"
    lines = list(
        difflib.unified_diff(
            before.splitlines(), after.splitlines(), f"a{change.path}", f"b{change.path}", lineterm=""
        )
    )
    note = "content changed"
    if len(lines) > MAX_DIFF_LINES:
        note = f"content changed (diff cut at {MAX_DIFF_LINES} of {len(lines)} lines)"
        lines = lines[:MAX_DIFF_LINES]
    return tuple(DiffLine(_diff_kind(line), line) for line in lines), note


def _diff_kind(line: str) -> str:
    """The kind of a unified diff line, for colouring."""
    if line.startswith(("+++", "---")):
        return "head"
    if line.startswith("@@"):
        return "hunk"
    return {"+": "add", "-": "del"}.get(line[:1], "ctx")


_ANCHOR_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def host_anchor(host: str) -> str:
    """The HTML id (and data-testid) of a host's section, e.g. ``host-pbx1``."""
    return "host-" + _ANCHOR_UNSAFE.sub("-", host)


def file_anchor(host: str, path: str) -> str:
    """The HTML id of a file's entry, e.g. ``file-pbx1-etc-asterisk-pjsip.conf-1a2b3c``.

    The short hash of the exact path keeps ids unique where the readable part would collide.
    """
    readable = _ANCHOR_UNSAFE.sub("-", path).strip("-")
    digest = hashlib.sha256(f"{host}:{path}".encode()).hexdigest()[:6]
    return f"file-{_ANCHOR_UNSAFE.sub('-', host)}-{readable}-{digest}"
