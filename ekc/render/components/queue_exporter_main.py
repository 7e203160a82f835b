"""ekc queue exporter: live queue and trunk figures of Asterisk over AMI, served to Prometheus on /metrics.

Installed on every Asterisk node as /usr/local/lib/ekc/queue-exporter and run by ekc-queue-exporter.service
with forky's python3 (standard library only). Every scrape logs in to AMI on loopback as ekc_exporter,
asks QueueStatus and PJSIPShowContacts, logs off, and answers with, per department (queue name = department
id): callers waiting, the longest wait, operators logged in, available and paused, Asterisk's own completed,
abandoned and service-level figures; per trunk whether the SIP OPTIONS qualify of its AOR ``trunk-<name>``
reaches a contact. ``ekc_ami_up`` is 0 when AMI does not answer (Asterisk down), and every department's
series are still there (zero), so a dashboard never loses a tile.

Usage: queue-exporter CONFIG.json (the AMI password comes from systemd's credential ``ami-password``).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

Message = dict[str, str]

# Asterisk device states (ast_device_state) a queue member reports in QueueMember's Status.
DEVICE_NOT_INUSE = 1
DEVICE_NOT_LOGGED_IN = frozenset({4, 5})  # invalid, unavailable: the phone is not registered
CACHE_S = 1.0


@dataclass(frozen=True)
class Config:
    """Where to listen, how to reach AMI, and which departments and trunks to report."""

    listen: str
    port: int
    ami_host: str
    ami_port: int
    ami_user: str
    departments: tuple[str, ...]
    trunks: tuple[str, ...]

    @classmethod
    def load(cls, path: Path) -> Config:
        """Read the JSON configuration the render writes."""
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        ami = data["ami"]
        return cls(data["listen"], int(data["port"]), ami["host"], int(ami["port"]), ami["user"],
                   tuple(data["departments"]), tuple(data["trunks"]))


@dataclass
class QueueFigures:
    """One department's queue right now."""

    configured: int = 0
    callers: int = 0
    longest_wait_s: float = 0.0
    logged_in: int = 0
    available: int = 0
    paused: int = 0
    completed: int = 0
    abandoned: int = 0
    service_level_pct: float | None = None


@dataclass
class Snapshot:
    """Everything one scrape reports."""

    ami_up: int = 0
    queues: dict[str, QueueFigures] = field(default_factory=dict)
    trunk_contacts: dict[str, int] = field(default_factory=dict)
    trunk_reachable: dict[str, int] = field(default_factory=dict)
    trunk_rtt_s: dict[str, float] = field(default_factory=dict)
    duration_s: float = 0.0


class AmiError(Exception):
    """AMI refused the login or broke off."""


class AmiConnection:
    """A minimal AMI client: messages are ``Key: Value`` lines ended by an empty line."""

    def __init__(self, host: str, port: int, timeout: float = 5.0) -> None:
        self._sock = socket.create_connection((host, port), timeout=timeout)
        self._file = self._sock.makefile("rb")
        self._file.readline()  # the banner: "Asterisk Call Manager/x.y.z"
        self._next_id = 0

    def close(self) -> None:
        """Close the connection."""
        self._file.close()
        self._sock.close()

    def _read(self) -> Message:
        message: Message = {}
        while True:
            line = self._file.readline()
            if not line:
                raise AmiError("AMI closed the connection")
            text = line.decode("utf-8", errors="replace").rstrip("\r\n")
            if not text:
                if message:
                    return message
                continue
            key, _, value = text.partition(":")
            message.setdefault(key.strip(), value.strip())

    def action(self, name: str, **fields: str) -> list[Message]:
        """Send one action; return its response followed by the events of its list (if it starts one)."""
        self._next_id += 1
        action_id = f"ekc-{self._next_id}"
        lines = [f"Action: {name}", f"ActionID: {action_id}", *(f"{k}: {v}" for k, v in fields.items())]
        self._sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8"))
        messages: list[Message] = []
        while True:
            message = self._read()
            if message.get("ActionID") != action_id:
                continue
            messages.append(message)
            if len(messages) == 1 and (message.get("Response") != "Success"
                                       or message.get("EventList", "").lower() != "start"):
                return messages
            if message.get("EventList", "").lower() == "complete" or message.get("Event", "").endswith("Complete"):
                return messages


def queue_figures(messages: Iterable[Message], departments: Sequence[str]) -> dict[str, QueueFigures]:
    """Per department, the figures from QueueStatus's QueueParams, QueueMember and QueueEntry events."""
    figures = {d: QueueFigures() for d in departments}
    for message in messages:
        queue = figures.get(message.get("Queue", ""))
        if queue is None:
            continue
        event = message.get("Event")
        if event == "QueueParams":
            queue.configured = 1
            queue.completed = _int(message.get("Completed"))
            queue.abandoned = _int(message.get("Abandoned"))
            perf = message.get("ServicelevelPerf")
            queue.service_level_pct = float(perf) if perf not in (None, "") else None
        elif event == "QueueMember":
            status = _int(message.get("Status"))
            if status in DEVICE_NOT_LOGGED_IN:
                continue
            queue.logged_in += 1
            if message.get("Paused") == "1":
                queue.paused += 1
            elif status == DEVICE_NOT_INUSE and message.get("InCall", "0") == "0":
                queue.available += 1
        elif event == "QueueEntry":
            queue.callers += 1
            queue.longest_wait_s = max(queue.longest_wait_s, float(_int(message.get("Wait"))))
    return figures


def trunk_figures(messages: Iterable[Message], trunks: Sequence[str]) -> tuple[dict[str, int], dict[str, int],
                                                                                 dict[str, float]]:
    """Per trunk: its contacts, whether one is Reachable (qualify answered), and the best round trip."""
    contacts = dict.fromkeys(trunks, 0)
    reachable = dict.fromkeys(trunks, 0)
    rtt: dict[str, float] = {}
    for message in messages:
        if message.get("Event") != "ContactList":
            continue
        trunk = message.get("Aor", "").removeprefix("trunk-")
        if trunk not in contacts or not message.get("Aor", "").startswith("trunk-"):
            continue
        contacts[trunk] += 1
        if message.get("Status") == "Reachable":
            reachable[trunk] = 1
            usec = _int(message.get("RoundtripUsec"))
            rtt[trunk] = min(rtt.get(trunk, usec / 1e6), usec / 1e6)
    return contacts, reachable, rtt


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def collect(config: Config, password: str) -> Snapshot:
    """One look at Asterisk over AMI; a snapshot with ami_up 0 if it cannot be reached."""
    started = time.monotonic()
    snapshot = Snapshot(queues={d: QueueFigures() for d in config.departments},
                        trunk_contacts=dict.fromkeys(config.trunks, 0),
                        trunk_reachable=dict.fromkeys(config.trunks, 0))
    try:
        ami = AmiConnection(config.ami_host, config.ami_port)
    except OSError:
        snapshot.duration_s = time.monotonic() - started
        return snapshot
    try:
        login = ami.action("Login", Username=config.ami_user, Secret=password, Events="off")
        if login[0].get("Response") != "Success":
            raise AmiError("AMI refused the login")
        snapshot.queues = queue_figures(ami.action("QueueStatus"), config.departments)
        contacts = ami.action("PJSIPShowContacts")
        snapshot.trunk_contacts, snapshot.trunk_reachable, snapshot.trunk_rtt_s = trunk_figures(
            contacts, config.trunks)
        snapshot.ami_up = 1
        ami.action("Logoff")
    except (OSError, AmiError):
        pass
    finally:
        ami.close()
    snapshot.duration_s = time.monotonic() - started
    return snapshot


def _family(lines: list[str], name: str, kind: str, text: str, samples: Iterable[tuple[str, float]]) -> None:
    lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
    lines += [f"{name}{labels} {value:g}" for labels, value in samples]


def exposition(snapshot: Snapshot) -> str:
    """The snapshot in Prometheus's text format."""
    lines: list[str] = []
    _family(lines, "ekc_ami_up", "gauge", "1 if Asterisk's AMI answered this scrape", [("", snapshot.ami_up)])
    _family(lines, "ekc_ami_scrape_duration_seconds", "gauge", "time taken to ask AMI",
            [("", snapshot.duration_s)])
    queues = sorted(snapshot.queues.items())
    per_queue: list[tuple[str, str, str, str]] = [
        ("ekc_queue_configured", "gauge", "1 if Asterisk knows the department's queue", "configured"),
        ("ekc_queue_callers", "gauge", "callers waiting in the queue now", "callers"),
        ("ekc_queue_longest_wait_seconds", "gauge", "how long the longest-waiting caller has waited",
         "longest_wait_s"),
        ("ekc_queue_members_logged_in", "gauge", "operators of the queue whose phone is registered", "logged_in"),
        ("ekc_queue_members_available", "gauge", "operators free to take a call now", "available"),
        ("ekc_queue_members_paused", "gauge", "operators paused", "paused"),
        ("ekc_queue_completed", "gauge", "calls answered since Asterisk's queue statistics were reset",
         "completed"),
        ("ekc_queue_abandoned", "gauge", "calls abandoned since Asterisk's queue statistics were reset",
         "abandoned"),
    ]
    for name, kind, text, attribute in per_queue:
        _family(lines, name, kind, text,
                [(f'{{department="{d}"}}', float(getattr(q, attribute))) for d, q in queues])
    _family(lines, "ekc_queue_service_level_pct", "gauge",
            "Asterisk's own service level since its statistics were reset, percent",
            [(f'{{department="{d}"}}', q.service_level_pct) for d, q in queues if q.service_level_pct is not None])
    trunks = sorted(snapshot.trunk_reachable)
    _family(lines, "ekc_trunk_reachable", "gauge", "1 if a contact of the trunk answers SIP OPTIONS (qualify)",
            [(f'{{trunk="{t}"}}', snapshot.trunk_reachable[t]) for t in trunks])
    _family(lines, "ekc_trunk_contacts", "gauge", "contacts Asterisk knows for the trunk",
            [(f'{{trunk="{t}"}}', snapshot.trunk_contacts.get(t, 0)) for t in trunks])
    _family(lines, "ekc_trunk_roundtrip_seconds", "gauge", "best qualify round trip to the trunk",
            [(f'{{trunk="{t}"}}', v) for t, v in sorted(snapshot.trunk_rtt_s.items())])
    return "\n".join(lines) + "\n"


class Exporter:
    """Serves /metrics; a scrape asks AMI at most once a second whatever the number of scrapers."""

    def __init__(self, config: Config, password: str) -> None:
        self.config = config
        self._password = password
        self._lock = threading.Lock()
        self._cached: tuple[float, str] = (0.0, "")

    def metrics(self) -> str:
        """The current exposition (from a cache younger than a second, if any)."""
        with self._lock:
            at, text = self._cached
            if time.monotonic() - at > CACHE_S or not text:
                text = exposition(collect(self.config, self._password))
                self._cached = (time.monotonic(), text)
            return text

    def serve(self) -> None:
        """Listen until stopped."""
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                body = exporter.metrics().encode("utf-8")
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        ThreadingHTTPServer((self.config.listen, self.config.port), Handler).serve_forever()


def main(argv: list[str]) -> int:
    """Run the exporter with the configuration named on the command line."""
    if len(argv) != 2:
        print("usage: queue-exporter CONFIG.json", file=sys.stderr)
        return 2
    config = Config.load(Path(argv[1]))
    credentials = os.environ.get("CREDENTIALS_DIRECTORY", "")
    password = (Path(credentials) / "ami-password").read_text(encoding="utf-8").strip()
    Exporter(config, password).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
