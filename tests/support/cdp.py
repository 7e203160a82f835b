"""Headless Chromium driven over the DevTools protocol, with the standard library only.

``browser.py`` runs Chromium once per page (``--dump-dom``, ``--screenshot``); pages behind a login need a
session that lives across pages, so this module starts one Chromium with ``--remote-debugging-port`` and
talks to its page over a minimal WebSocket client (RFC 6455: client frames masked, text frames, no
extensions). A caller adds its own flags (a host-resolver rule) and a ``home`` whose NSS database trusts the
region CA, so nothing is installed on the machine.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import struct
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.browser import BASE_FLAGS, CHROMIUM, BrowserError, require_chromium, stop_session

LISTENING = re.compile(r"DevTools listening on (ws://[^\s]+)")


class Page:
    """One page target: ``call`` a DevTools method and get its result; events are skipped."""

    def __init__(self, ws_url: str) -> None:
        match = re.match(r"ws://([^/:]+):(\d+)(/.*)", ws_url)
        if match is None:
            raise BrowserError(f"not a DevTools address: {ws_url}")
        host, port, path = match.group(1), int(match.group(2)), match.group(3)
        self._sock = socket.create_connection((host, port), timeout=60)
        key = base64.b64encode(os.urandom(16)).decode()
        self._sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = self._sock.recv(4096)
            if not chunk:
                raise BrowserError("DevTools closed the WebSocket handshake")
            reply += chunk
        if not reply.startswith(b"HTTP/1.1 101"):
            raise BrowserError(f"DevTools refused the WebSocket: {reply[:200]!r}")
        self._buffer = reply.split(b"\r\n\r\n", 1)[1]
        self._next_id = 0

    def _read(self, count: int) -> bytes:
        while len(self._buffer) < count:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise BrowserError("DevTools closed the connection")
            self._buffer += chunk
        data, self._buffer = self._buffer[:count], self._buffer[count:]
        return data

    def _receive(self) -> str:
        message = b""
        while True:
            first, second = self._read(2)
            length = second & 0x7F
            if length == 126:
                length = struct.unpack(">H", self._read(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", self._read(8))[0]
            message += self._read(length)
            if first & 0x80:
                return message.decode("utf-8")

    def _send(self, text: str) -> None:
        payload = text.encode("utf-8")
        mask = os.urandom(4)
        size = len(payload)
        header = bytes([0x81])
        if size < 126:
            header += bytes([0x80 | size])
        elif size < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack(">H", size)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", size)
        self._sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Run one DevTools method; its result (BrowserError on a protocol error)."""
        self._next_id += 1
        self._send(json.dumps({"id": self._next_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self._receive())
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return dict(reply.get("result", {}))

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def open(self, url: str, *, timeout_s: float = 60) -> None:
        """Navigate to ``url`` and wait until the new document has loaded."""
        self.call("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'", timeout_s)

    def wait_for(self, expression: str, timeout_s: float = 60) -> None:
        """Poll until ``expression`` is true in the page."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.evaluate(expression):
                return
            time.sleep(0.25)
        raise BrowserError(f"timed out waiting for: {expression}")

    def screenshot(self, path: Path, *, full_page: bool = False) -> Path:
        """Write a PNG of the page to ``path``: what the window shows, or with ``full_page`` the whole page."""
        params: dict[str, object] = {"format": "png"}
        if full_page:
            size = self.call("Page.getLayoutMetrics")["cssContentSize"]
            params |= {"captureBeyondViewport": True,
                       "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}}
        data = self.call("Page.captureScreenshot", **params)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        """Close the WebSocket."""
        self._sock.close()


@contextmanager
def chromium_page(*, extra_flags: tuple[str, ...] = (), home: Path | None = None, width: int = 1280,
                  height: int = 1000) -> Iterator[Page]:
    """A headless Chromium with a fresh profile and one page; ``home`` holds its NSS trust store, if given."""
    require_chromium()
    flags = [*BASE_FLAGS, "--remote-debugging-port=0", f"--window-size={width},{height}", *extra_flags]
    env = {**os.environ, "HOME": str(home)} if home is not None else None
    with tempfile.TemporaryDirectory(prefix="ekc-chromium-") as profile:
        # In a session of its own: Chromium's helpers (crashpad, zygotes) are stopped with it, not left writing
        # into the profile while it is removed.
        process = subprocess.Popen([str(CHROMIUM), *flags, f"--user-data-dir={profile}", "about:blank"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                                   start_new_session=True)
        try:
            browser_url = _devtools_address(process)
            # Keep reading its stderr so that Chromium never blocks on a full pipe.
            threading.Thread(target=process.stderr.read, daemon=True).start()  # type: ignore[union-attr]
            port = re.search(r":(\d+)/", browser_url)
            assert port is not None
            with urllib.request.urlopen(f"http://127.0.0.1:{port.group(1)}/json/list", timeout=30) as reply:
                targets = json.loads(reply.read())
            page = Page(next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page"))
            try:
                page.call("Page.enable")
                yield page
            finally:
                page.close()
        finally:
            stop_session(process)


def _devtools_address(process: subprocess.Popen[str]) -> str:
    """The browser's DevTools WebSocket address, read from its stderr."""
    assert process.stderr is not None
    deadline = time.monotonic() + 60
    seen = []
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line and process.poll() is not None:
            break
        seen.append(line)
        match = LISTENING.search(line)
        if match:
            return match.group(1)
    raise BrowserError("chromium did not start its DevTools server:\n" + "".join(seen[-20:]))
