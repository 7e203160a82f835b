"""ekc's own pyinfra facts and operations, for what the manifest needs and pyinfra's do not decide.

Written like pyinfra's own (``pyinfra/operations/files.py``): read facts, compare them with what is wanted,
yield only the commands needed, and say so with ``host.noop`` when nothing is. ``put_file`` writes a managed
file atomically (``ekc.engines.atomic``: staged beside its target with its owner and mode, checked, flushed,
renamed), where ``files.put`` would write into the target in place over SFTP; ``remove_stale_temps`` removes
what an interrupted apply staged; the others install only what is missing and update the lists first, remove
whatever kind of path is there, tell a service only while it runs, and accept a unit that a failed condition
keeps from running.
"""

from __future__ import annotations

import secrets
import shlex
from collections.abc import Callable, Generator, Sequence
from typing import Any

from pyinfra.api.command import FileUploadCommand
from pyinfra.api.facts import FactBase
from pyinfra.api.operation import operation
from pyinfra.context import host
from pyinfra.facts.deb import DebPackages
from pyinfra.facts.files import Directory, File, Link, Sha256File
from pyinfra.operations import apt, files, systemd

from ekc.engines.atomic import Upload, put_steps, stale_temps_command
from ekc.engines.common import UNIT_PROPERTIES, condition_skipped, unit_name
from ekc.render.manifest import ManagedFile

_UNIT_MARK = "@@ekc-unit "


class UnitProperties(FactBase[dict[str, dict[str, str]]]):
    """``systemctl show`` of some units: whether each runs, and whether a failed condition skipped it."""

    def command(self, units: Sequence[str]) -> str:
        """One ``systemctl show`` per unit, each block preceded by a marker line naming the unit."""
        props = ",".join(UNIT_PROPERTIES)
        return "; ".join(f"echo {shlex.quote(_UNIT_MARK + u)}; systemctl show --property={props} -- {shlex.quote(u)}"
                         for u in units)

    def process(self, output: list[str]) -> dict[str, dict[str, str]]:
        """Unit name → its properties."""
        units: dict[str, dict[str, str]] = {}
        current: dict[str, str] = {}
        for line in output:
            if line.startswith(_UNIT_MARK):
                current = units.setdefault(line.removeprefix(_UNIT_MARK).strip(), {})
            elif "=" in line:
                key, value = line.split("=", 1)
                current[key] = value
        return units


def _unit(service: str) -> dict[str, str]:
    """The current properties of one service's unit on the operation's host."""
    unit = unit_name(service)
    return host.get_fact(UnitProperties, units=[unit]).get(unit, {})


@operation()
def remove_path(path: str) -> Generator[Any, None, None]:
    """Make sure nothing is at ``path``: a file, a symbolic link or a directory (removed for good)."""
    if host.get_fact(Link, path=path):
        yield from files.link._inner(path=path, present=False)
    elif host.get_fact(Directory, path=path):
        yield from files.directory._inner(path=path, present=False)
    else:
        yield from files.file._inner(path=path, present=False)


@operation()
def install_packages(packages: list[str], lists_fresh: Callable[[], bool]) -> Generator[Any, None, None]:
    """Install the packages that are missing, rereading the package lists first unless ``lists_fresh()``.

    Nothing is run (no ``apt-get update`` either) when every package is installed: a converged host
    gives no change.
    """
    installed = host.get_fact(DebPackages)
    missing = [name for name in packages if name not in installed]
    if not missing:
        host.noop(f"packages installed: {', '.join(packages)}")
        return
    yield from apt.packages._inner(packages=missing, update=not lists_fresh())


@operation()
def run_trigger(command: str, service: str | None) -> Generator[Any, None, None]:
    """Run a trigger command; one that names a service runs only while that service is active."""
    if service is not None and _unit(service).get("ActiveState") != "active":
        host.noop(f"{service} is not running: nothing to tell it ({command})")
        return
    yield command


@operation()
def converge_service(service: str, enabled: bool, running: bool) -> Generator[Any, None, None]:
    """``systemd.service`` for a manifest service; a unit skipped by a failed condition need only be enabled."""
    if running and condition_skipped(_unit(service)):
        host.noop(f"{service}: a unit condition fails on this host; only its enabled state is managed")
        yield from systemd.service._inner(service=unit_name(service), running=None, enabled=enabled)
        return
    yield from systemd.service._inner(service=unit_name(service), enabled=enabled, running=running)


class StaleTemps(FactBase[list[str]]):
    """The files an interrupted apply staged in some directories and never renamed into place."""

    def command(self, directories: Sequence[str]) -> str:
        """``find`` in each directory that exists (see ``ekc.engines.atomic``)."""
        return stale_temps_command(directories)

    def process(self, output: list[str]) -> list[str]:
        """One path per line."""
        return [line for line in output if line.strip()]


@operation()
def remove_stale_temps(directories: list[str]) -> Generator[Any, None, None]:
    """Remove the staged files an interrupted apply left in ``directories`` (their targets were never touched)."""
    stale = host.get_fact(StaleTemps, directories=directories)
    if not stale:
        host.noop("no staged file left by an interrupted apply")
        return
    yield shlex.join(["rm", "-f", "--", *stale])


@operation()
def put_file(src: str, file: ManagedFile) -> Generator[Any, None, None]:
    """Give the host ``file`` (content from ``src``, the render's copy): staged, checked, flushed and renamed when
    the content differs; only its mode or owner fixed when that is all that differs; nothing when it matches."""
    remote = host.get_fact(File, path=file.path)
    remote_sha256 = host.get_fact(Sha256File, path=file.path) if remote else None
    steps = put_steps(file, remote, remote_sha256, secrets.token_hex(6))
    if not steps:
        host.noop(f"{file.path} matches the render")
        return
    for step in steps:
        yield FileUploadCommand(src, step.temp) if isinstance(step, Upload) else step
