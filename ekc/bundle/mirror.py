"""Which Debian archive the connected side reaches: read from the host's own APT sources."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

DEFAULT_MIRROR = "http://deb.debian.org/debian"

APT_DIR = Path("/etc/apt")


def host_mirror(apt_dir: Path = APT_DIR) -> str:
    """The Debian archive the host's own APT uses, so the build reaches what the host already reaches.

    Reads ``sources.list`` and ``sources.list.d/*.list|*.sources`` in APT's order and returns the first
    URI that serves the Debian archive itself (path ending in ``/debian``: not security, not third-party
    repositories). Falls back to ``deb.debian.org``.
    """
    files = [apt_dir / "sources.list"]
    parts = apt_dir / "sources.list.d"
    if parts.is_dir():
        files += sorted(p for p in parts.iterdir() if p.suffix in (".list", ".sources"))
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        uris = deb822_uris(text) if path.suffix == ".sources" else one_line_uris(text)
        for uri in uris:
            if is_debian_archive(uri):
                return uri.rstrip("/")
    return DEFAULT_MIRROR


def one_line_uris(text: str) -> list[str]:
    """The URIs of the ``deb`` lines of a one-line-style sources list (options in brackets skipped)."""
    uris = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        rest = line[4:].strip()
        if rest.startswith("["):
            rest = rest.split("]", 1)[-1].strip()
        if rest:
            uris.append(rest.split()[0])
    return uris


def deb822_uris(text: str) -> list[str]:
    """The URIs of the enabled ``Types: deb`` stanzas of a deb822 ``.sources`` file."""
    uris: list[str] = []
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for raw in stanza.splitlines():
            if raw.startswith("#") or ":" not in raw or raw[:1].isspace():
                continue
            name, value = raw.split(":", 1)
            fields[name.strip().lower()] = value.strip()
        if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes").lower() != "no":
            uris += fields.get("uris", "").split()
    return uris


def is_debian_archive(uri: str) -> bool:
    """Whether ``uri`` serves the main Debian archive (``…/debian``), not security or a third party."""
    parsed = urlparse(uri)
    return parsed.scheme in ("http", "https") and parsed.path.rstrip("/").endswith("/debian")
