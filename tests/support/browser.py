"""Real headless Chromium for tests, without a browser-automation library.

Debian's ``/usr/bin/chromium`` is run once per call: ``dump_dom`` returns the DOM after the page's scripts
ran, ``screenshot`` writes a PNG. Every run gets a fresh throw-away profile and no network features (no sync,
no component updates, no QUIC), so tests never reach anything outside the machine. Reused by the report,
CRM and wallboard tests.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
TIMEOUT_S = 90
BASE_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--mute-audio",
)


class BrowserError(RuntimeError):
    """Chromium failed or produced nothing; carries its exit code and stderr tail."""


def chromium_available() -> bool:
    """Whether Debian's chromium is installed here."""
    return CHROMIUM.is_file() and shutil.which(str(CHROMIUM)) is not None


def stop_session(process: subprocess.Popen[str]) -> None:
    """Stop ``process`` and every process of its session (SIGTERM, then SIGKILL after 20 s)."""
    for sig, wait_s in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            process.poll()
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


def require_chromium() -> None:
    """Skip the calling test, saying why, when chromium is missing."""
    if not chromium_available():
        pytest.skip(f"{CHROMIUM} is not installed (Debian package 'chromium'); browser tests need it")


def _run(url: str, extra: list[str]) -> str:
    """Run chromium headless on ``url`` with a fresh profile; its stdout, or BrowserError."""
    require_chromium()
    with tempfile.TemporaryDirectory(prefix="ekc-chromium-") as profile:
        command = [str(CHROMIUM), *BASE_FLAGS, f"--user-data-dir={profile}", *extra, url]
        # A session of its own: its helpers are stopped with it before the profile is removed.
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   start_new_session=True)
        try:
            stdout, stderr = process.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            raise BrowserError(f"chromium did not finish within {TIMEOUT_S} s on {url}") from exc
        finally:
            stop_session(process)
    if process.returncode != 0:
        tail = "\n".join(stderr.splitlines()[-20:])
        raise BrowserError(f"chromium exited with {process.returncode} on {url}:\n{tail}")
    return stdout


def dump_dom(url: str, *, budget_ms: int = 2000) -> str:
    """The page's DOM serialised after its scripts ran (``budget_ms`` of virtual time for timers)."""
    dom = _run(url, ["--dump-dom", f"--virtual-time-budget={budget_ms}"])
    if "<html" not in dom:
        raise BrowserError(f"chromium returned no DOM for {url}")
    return dom


def screenshot(url: str, path: Path, *, width: int = 1280, height: int = 2000) -> Path:
    """Write a PNG of the page's first ``width`` x ``height`` pixels to ``path`` and return it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _run(url, [f"--screenshot={path}", f"--window-size={width},{height}"])
    if not path.is_file() or path.stat().st_size == 0:
        raise BrowserError(f"chromium wrote no screenshot of {url} to {path}")
    return path
