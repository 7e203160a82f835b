"""The apply record: what one apply did, kept as JSON beside the region's build (the audit trail of applies).

Every apply that may change hosts writes one record, whichever way it went (the fast path or an engine):
``<records dir>/<UTC time>-<path>.json``, by default ``build/<region>/applies/``. It names the spec and its
sha256, the way the apply went and why (the fast path's refusals), and per host every file written or
deleted with its sha256 before (as the live plan read it) and after, the packages and services changed, the
triggers run and skipped, the result, and where the time went (load, render, plan, apply). It holds no secret
value: files appear by path and sha256 only, as in the render's manifest.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from ekc import __version__
from ekc.engines.common import ApplyResult, HostResult
from ekc.render.manifest import BuildManifest
from ekc.render.plan import Plan

RECORDS_DIR = "applies"
Outcome = Literal["ok", "failed", "nothing to do"]


@dataclass
class Stopwatch:
    """Seconds spent in each named step, in the order they ran, and in all."""

    started: float = field(default_factory=time.perf_counter)
    laps: dict[str, float] = field(default_factory=dict)
    _last: float = 0.0

    def lap(self, step: str) -> float:
        """Close ``step`` (the time since the previous lap) and return its seconds."""
        now = time.perf_counter()
        seconds = now - (self._last or self.started)
        self._last = now
        self.laps[step] = round(self.laps.get(step, 0.0) + seconds, 3)
        return seconds

    def summary(self) -> dict[str, float]:
        """Every lap and the total."""
        return {**self.laps, "total": round(time.perf_counter() - self.started, 3)}


@dataclass(frozen=True)
class FileRecord:
    """One path an apply wrote or deleted. ``old_sha256`` is None when the file was not there (or the hosts
    were not read: see :attr:`ApplyRecord.plan`); ``new_sha256`` is None for a deletion."""

    path: str
    change: Literal["written", "deleted"]
    old_sha256: str | None
    new_sha256: str | None


@dataclass(frozen=True)
class HostRecord:
    """What one apply did on one host (``changes``: the engine's own count of changed steps)."""

    host: str
    ok: bool
    error: str | None
    changes: int
    files: tuple[FileRecord, ...]
    packages: tuple[str, ...]
    services: tuple[str, ...]
    triggers: tuple[str, ...]
    skipped_triggers: tuple[str, ...]
    seconds: float | None


@dataclass(frozen=True)
class ApplyRecord:
    """One apply, as written to its JSON file."""

    started_at: str
    operator: str
    ekc_version: str
    spec: str
    spec_sha256: str
    path: str
    fast_path_refused: tuple[str, ...]
    limit: tuple[str, ...]
    plan: str
    result: Outcome
    hosts: tuple[HostRecord, ...]
    seconds: dict[str, float]


def host_record(result: HostResult, manifest: BuildManifest, plan: Plan | None) -> HostRecord:
    """A host's result with each written file's sha256 before (from the live plan) and after (the render)."""
    wanted = manifest.host(result.host)
    host_plan = next((h for h in plan.hosts if h.host == result.host), None) if plan is not None else None
    before = {c.path: c.old.sha256 for c in host_plan.files if c.old is not None} if host_plan else {}
    files = []
    for path in result.files:
        managed = wanted.file(path) if wanted is not None else None
        if managed is None:
            files.append(FileRecord(path, "deleted", None, None))
        else:
            files.append(FileRecord(path, "written", before.get(path), managed.sha256))
    return HostRecord(result.host, result.ok, result.error, result.changes, tuple(files), result.packages,
                      result.services, result.triggers, result.skipped_triggers, result.seconds)


def apply_record(manifest: BuildManifest, result: ApplyResult | None, *, plan: Plan | None, plan_note: str,
                 refused: Sequence[str], limit: Sequence[str], seconds: dict[str, float],
                 started_at: dt.datetime) -> ApplyRecord:
    """The record of one apply; ``result`` None means the live plan found nothing to do (``refused``: why the
    fast path did not take the plan, or that it was switched off)."""
    outcome: Outcome = "nothing to do" if result is None else ("ok" if result.ok else "failed")
    hosts = () if result is None else tuple(host_record(h, manifest, plan) for h in result.hosts)
    return ApplyRecord(
        started_at=started_at.astimezone(dt.UTC).isoformat(timespec="milliseconds"),
        operator=f"{getpass.getuser()}@{socket.gethostname()}",
        ekc_version=__version__,
        spec=manifest.spec,
        spec_sha256=manifest.spec_sha256,
        # nothing to do: the fast path's finding, unless it was switched off (then no way was taken)
        path=result.engine if result is not None else ("none" if refused else "fast path"),
        fast_path_refused=tuple(refused),
        limit=tuple(limit),
        plan=plan_note,
        result=outcome,
        hosts=hosts,
        seconds=seconds,
    )


def write_record(record: ApplyRecord, directory: Path) -> Path:
    """Write ``record`` as ``<UTC time>-<path>.json`` in ``directory`` (never over an older record)."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.fromisoformat(record.started_at).strftime("%Y%m%dT%H%M%SZ")
    stem = f"{stamp}-{record.path.replace(' ', '-')}"
    text = json.dumps(asdict(record), indent=2, ensure_ascii=False) + "\n"
    for n in range(1, 1000):
        target = directory / (f"{stem}.json" if n == 1 else f"{stem}-{n}.json")
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        return target
    raise FileExistsError(f"{directory}: too many apply records named {stem}")


def read_record(path: Path) -> dict[str, object]:
    """A record as plain JSON data (for tests and benchmarks that check what an apply did)."""
    data: dict[str, object] = json.loads(path.read_text(encoding="utf-8"))
    return data
