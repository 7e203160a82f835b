"""forky's own programs for checking rendered files on this (older) machine: packages unpacked, never installed.

``forky_deb`` finds a package's .deb in the bundle cache or fetches it from the archive (the host's mirror);
``forky_loader`` runs a forky binary with forky's dynamic loader and libraries from a cached root filesystem
(the lab's), for programs that need a newer C library than the host's. Both skip the calling test, saying
why, when the machine has neither.
"""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from ekc.bundle.mirror import host_mirror
from ekc.bundle.rootfs import cache_dir

LOADER = "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
LIBRARIES = "usr/lib/x86_64-linux-gnu"


def forky_deb(package: str, dest: Path) -> Path:
    """The forky .deb of ``package``: from the bundle's cache, else fetched from the archive."""
    cached = sorted((cache_dir() / "debs" / "forky-amd64").glob(f"{package}_*_amd64.deb"))
    if cached:
        return cached[-1]
    lists = sorted((cache_dir() / "apt-lists" / "forky").glob("*_binary-amd64_Packages"))
    if not lists:
        pytest.skip(f"no forky package list in {cache_dir()} to find {package} (a bundle build makes it)")
    filename = None
    for stanza in lists[0].read_text(encoding="utf-8", errors="replace").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and line[0] != " ")
        if fields.get("Package") == package:
            filename = fields["Filename"]
            break
    if filename is None:
        pytest.skip(f"{package} is not in forky's package list")
    target = dest / Path(filename).name
    try:
        urllib.request.urlretrieve(f"{host_mirror()}/{filename}", target)
    except OSError as exc:
        pytest.skip(f"{package}'s forky package cannot be downloaded here: {exc}")
    return target


def forky_loader() -> list[str]:
    """The command prefix that runs a forky binary: forky's loader with forky's libraries (a cached rootfs)."""
    roots = sorted(p for p in (cache_dir() / "rootfs").glob("forky-*") if (p / LOADER).is_file())
    if not roots:
        pytest.skip(f"no cached forky root filesystem in {cache_dir()}/rootfs (the lab makes one)")
    return [str(roots[0] / LOADER), "--library-path", str(roots[0] / LIBRARIES)]
