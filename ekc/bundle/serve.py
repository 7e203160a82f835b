"""Serve a bundle to the nodes while an apply runs: ``http://<deploy host>:<bundle port>/``.

Inside the contour the deploy host is the nodes' only package source (``/etc/apt/sources.list.d/ekc.sources``
points at ``http://<network.deploy_host>:<network.bundle_port>/apt``). The server exists only for the
duration of an apply (a context manager), binds exactly the deploy host's address (never every address of
the machine), answers GET and HEAD for files inside the bundle directory and nothing else (no directory
listings, no uploads), and logs nothing per request: APT fetches hundreds of files and the apply has its
own report. What it served is counted, so a caller can show that the nodes really used it.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from pathlib import Path
from typing import Any, cast

# What makes a directory a bundle: the signed APT repository the nodes' sources name (suite ``ekc``).
BUNDLE_MARKER = Path("apt") / "dists" / "ekc" / "InRelease"


class PublishError(RuntimeError):
    """The bundle cannot be served (not a bundle, or the address is not this machine's or is busy)."""


@dataclass
class ServedCounts:
    """Requests the server answered since it started; updated from the handler threads."""

    files: int = 0
    bytes: int = 0
    refused: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, *, size: int | None) -> None:
        """Count one answered request: a file of ``size`` bytes, or a refusal when ``size`` is None."""
        with self.lock:
            if size is None:
                self.refused += 1
            else:
                self.files += 1
                self.bytes += size


@dataclass(frozen=True)
class BundleServer:
    """A running bundle server: where the nodes reach it and what it has served so far."""

    root: Path
    address: str
    port: int
    counts: ServedCounts

    @property
    def url(self) -> str:
        """The base URL of the bundle (``<url>/apt`` is the APT repository)."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}"


class _BundleRequestHandler(SimpleHTTPRequestHandler):
    """GET/HEAD of files below the bundle root; no listings, no logging."""

    server_version = "ekc-bundle"
    sys_version = ""

    @property
    def counts(self) -> ServedCounts:
        """The counters of the server this request came to."""
        return cast(_Server, self.server).counts

    def list_directory(self, path: str | Any) -> BytesIO | None:
        """Refuse directory listings: APT and pip ask for files by name."""
        self.send_error(HTTPStatus.NOT_FOUND, "no listings")
        return None

    def send_head(self) -> Any:
        """Serve a file inside the root (symlinks leaving it are refused), counting what was sent."""
        target = Path(self.translate_path(self.path))
        root = Path(self.directory).resolve()
        if target.is_file() and not target.resolve().is_relative_to(root):
            self.send_error(HTTPStatus.NOT_FOUND, "outside the bundle")
            result = None
        else:
            result = super().send_head()
        self.counts.add(size=target.stat().st_size if result is not None and target.is_file() else None)
        return result

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: the apply reports what matters."""


class _Server(ThreadingHTTPServer):
    """One thread per request (APT opens several connections); threads die with the server."""

    daemon_threads = True
    allow_reuse_address = True
    counts: ServedCounts


class _Server6(_Server):
    address_family = socket.AF_INET6


def _server_class(address: str) -> type[_Server]:
    """The server class for ``address``: an IPv4 or IPv6 literal of this machine, never a wildcard."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise PublishError(f"{address!r} is not an IP address: the bundle is served on the deploy host's") from None
    if ip.is_unspecified:
        raise PublishError(f"refusing to serve the bundle on {address}: bind the deploy host's own address")
    return _Server6 if ip.version == 6 else _Server


@contextmanager
def serve_bundle(bundle_dir: Path, address: str, port: int) -> Iterator[BundleServer]:
    """Serve ``bundle_dir`` on ``address:port`` in a background thread until the block ends.

    Raises :class:`PublishError` if ``bundle_dir`` is not a bundle, ``address`` is a wildcard or not held
    by this machine, or the port is taken.
    """
    root = bundle_dir.resolve()
    if not (root / BUNDLE_MARKER).is_file():
        raise PublishError(f"{bundle_dir} is not a bundle (no {BUNDLE_MARKER}): run ./deploy.py bundle first")
    counts = ServedCounts()
    server_class = _server_class(address)
    try:
        server = server_class((address, port), functools.partial(_BundleRequestHandler, directory=str(root)))
    except OSError as exc:
        raise PublishError(f"cannot serve the bundle on {address}:{port}: {exc.strerror or exc}") from None
    server.counts = counts
    thread = threading.Thread(target=server.serve_forever, name=f"ekc-bundle-{address}:{port}", daemon=True)
    thread.start()
    try:
        yield BundleServer(root=root, address=address, port=port, counts=counts)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
