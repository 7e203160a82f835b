"""Writing a managed file on a host so that every reader, and every interrupted apply, finds either the old
content or the new one in full, never a part of it.

The new content is staged beside its target, in a hidden file named after it (``.<name>.ekc-tmp.<suffix>``,
:func:`temp_path`): in the same directory, so the final ``rename(2)`` never crosses file systems and is atomic.
The staged file gets its owner and mode while it is still empty, so a secret is never readable by anyone it is
not meant for; its content is checked against the render's sha256 and flushed to disk (``fsync``) before the
rename, and the directory is flushed after it, so a power cut right after the apply cannot leave an empty or
truncated file either. An apply killed half way leaves at most a staged file beside an untouched target; the
next apply removes whatever staged files it finds in the directories it manages (:func:`stale_temps_command`)
and writes the file again.

The pyinfra engine (``ekc.engines.pyinfra_ops``) and the fast path (``ekc.engines.fastpath``) write files this
way; Ansible's ``copy`` module stages and renames by itself (see README, "Atomic writes").
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from ekc.render.manifest import ManagedFile

TEMP_MARK = ".ekc-tmp."
# Staged files in a directory, whatever file they were staged for: the mark is ekc's own.
TEMP_GLOB = f".*{TEMP_MARK}*"


def temp_path(path: str, suffix: str) -> str:
    """Where a new version of ``path`` is staged: beside it, hidden, named after it."""
    target = PurePosixPath(path)
    return str(target.parent / f".{target.name}{TEMP_MARK}{suffix}")


def stale_temps_command(directories: Iterable[str], *, delete: bool = False) -> str:
    """A shell command that prints (or, with ``delete``, removes) the staged files an interrupted apply left in
    ``directories``; a directory that does not exist yet holds none, and is no error."""
    q = shlex.quote
    action = " -print -delete" if delete else " -print"
    dirs = " ".join(q(d) for d in directories)
    return (f"for d in {dirs}; do [ ! -d \"$d\" ] || find \"$d\" -maxdepth 1 -type f -name {q(TEMP_GLOB)}{action}; "
            "done; true")


@dataclass(frozen=True)
class Upload:
    """Send the render's file to ``temp`` on the host (the step an engine does with its own file transfer)."""

    temp: str


def stage_command(file: ManagedFile, temp: str) -> str:
    """Create the empty staged file with its final owner and mode (no content yet: nothing to read)."""
    q = shlex.quote
    return (f"{{ umask 077 && set -C && : > {q(temp)} && chown -- {q(f'{file.owner}:{file.group}')} {q(temp)} && "
            f"chmod -- {q(file.mode)} {q(temp)}; }} || {{ rm -f -- {q(temp)}; exit 1; }}")


def commit_command(file: ManagedFile, temp: str) -> str:
    """Check the staged content against the render, flush it, rename it over the target, flush the directory.

    Content with another sha256 (a transfer cut short) is removed and fails the step; the target is untouched.
    """
    q = shlex.quote
    directory = str(PurePosixPath(file.path).parent)
    mismatch = f"{file.path}: the uploaded content has another sha256 than the render's"
    return (f"if [ \"$(sha256sum < {q(temp)} | cut -d ' ' -f 1)\" != {q(file.sha256)} ]; then "
            f"rm -f -- {q(temp)}; echo {q(mismatch)} >&2; exit 1; fi; "
            f"sync -- {q(temp)} && mv -fT -- {q(temp)} {q(file.path)} && {{ sync -- {q(directory)} || true; }}")


Step = str | Upload


def put_steps(file: ManagedFile, remote: Mapping[str, Any] | bool | None, remote_sha256: str | None,
              suffix: str) -> list[Step]:
    """What it takes to give the host ``file``, from what the host has at its path.

    ``remote`` is pyinfra's ``File`` fact (``None``: nothing there; ``False``: something that is not a regular
    file, such as a symbolic link, which the rename replaces); ``remote_sha256`` the content's sha256. Content
    that already matches is never written again: only a wrong mode or owner is fixed, in place, and a file that
    matches in every way needs no step at all.
    """
    q = shlex.quote
    if not isinstance(remote, Mapping) or remote_sha256 != file.sha256:
        temp = temp_path(file.path, suffix)
        return [stage_command(file, temp), Upload(temp), commit_command(file, temp)]
    steps: list[Step] = []
    if int(str(remote.get("mode")), 8) != int(file.mode, 8):
        steps.append(f"chmod -- {q(file.mode)} {q(file.path)}")
    if (remote.get("user"), remote.get("group")) != (file.owner, file.group):
        steps.append(f"chown -- {q(f'{file.owner}:{file.group}')} {q(file.path)}")
    return steps
