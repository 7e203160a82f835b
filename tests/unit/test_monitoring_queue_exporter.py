"""The queue exporter's logic: AMI messages in, per-department figures and Prometheus text out.

The AMI side is a scripted socket speaking AMI's framing (a fake of pure protocol logic); the real Asterisk
answers in the lab tests.
"""

from __future__ import annotations

import socket
import threading

from ekc.render.components.queue_exporter_main import Config, collect, exposition, queue_figures, trunk_figures

QUEUE_STATUS = [
    {"Event": "QueueParams", "Queue": "social", "Completed": "12", "Abandoned": "3", "ServicelevelPerf": "75.0"},
    {"Event": "QueueMember", "Queue": "social", "Status": "1", "Paused": "0", "InCall": "0"},  # available
    {"Event": "QueueMember", "Queue": "social", "Status": "2", "Paused": "0", "InCall": "1"},  # on a call
    {"Event": "QueueMember", "Queue": "social", "Status": "1", "Paused": "1", "InCall": "0"},  # paused
    {"Event": "QueueMember", "Queue": "social", "Status": "5", "Paused": "0", "InCall": "0"},  # not registered
    {"Event": "QueueEntry", "Queue": "social", "Wait": "42"},
    {"Event": "QueueEntry", "Queue": "social", "Wait": "7"},
    {"Event": "QueueEntry", "Queue": "unknown", "Wait": "99"},
]


def test_queue_figures_per_department() -> None:
    figures = queue_figures(QUEUE_STATUS, ["social", "health"])
    social, health = figures["social"], figures["health"]
    assert (social.callers, social.longest_wait_s) == (2, 42.0)
    assert (social.logged_in, social.available, social.paused) == (3, 1, 1)
    assert (social.completed, social.abandoned, social.service_level_pct) == (12, 3, 75.0)
    assert (health.configured, health.callers) == (0, 0)


def test_trunk_reachable_only_when_its_aor_answers_qualify() -> None:
    contacts = [
        {"Event": "ContactList", "Aor": "trunk-carrier", "Status": "Reachable", "RoundtripUsec": "1500"},
        {"Event": "ContactList", "Aor": "trunk-backup", "Status": "Unreachable", "RoundtripUsec": "0"},
        {"Event": "ContactList", "Aor": "2001", "Status": "Reachable", "RoundtripUsec": "100"},
    ]
    count, reachable, rtt = trunk_figures(contacts, ["carrier", "backup", "spare"])
    assert reachable == {"carrier": 1, "backup": 0, "spare": 0}
    assert count == {"carrier": 1, "backup": 1, "spare": 0}
    assert rtt == {"carrier": 0.0015}


def _fake_ami(password: str) -> tuple[socket.socket, int]:
    server = socket.create_server(("127.0.0.1", 0))

    def frame(**fields: str) -> bytes:
        return ("".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n").encode()

    def serve() -> None:
        conn, _ = server.accept()
        reader = conn.makefile("rb")
        conn.sendall(b"Asterisk Call Manager/9.0.0\r\n")
        while True:
            message: dict[str, str] = {}
            for raw in reader:
                line = raw.decode().strip()
                if not line:
                    break
                key, _, value = line.partition(": ")
                message[key] = value
            if not message:
                break
            aid = message["ActionID"]
            if message["Action"] == "Login":
                ok = message.get("Secret") == password
                conn.sendall(frame(Response="Success" if ok else "Error", ActionID=aid))
            elif message["Action"] == "QueueStatus":
                conn.sendall(frame(Response="Success", ActionID=aid, EventList="start"))
                for event in QUEUE_STATUS:
                    conn.sendall(frame(**event, ActionID=aid))
                conn.sendall(frame(Event="QueueStatusComplete", ActionID=aid, EventList="Complete"))
            elif message["Action"] == "PJSIPShowContacts":
                conn.sendall(frame(Response="Success", ActionID=aid, EventList="start"))
                conn.sendall(frame(Event="ContactList", Aor="trunk-carrier", Status="Unreachable", ActionID=aid))
                conn.sendall(frame(Event="ContactListComplete", ActionID=aid, EventList="Complete"))
            else:
                conn.sendall(frame(Response="Goodbye", ActionID=aid))
                break
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return server, server.getsockname()[1]


def _config(port: int) -> Config:
    return Config("127.0.0.1", 0, "127.0.0.1", port, "ekc_exporter", ("social", "health"), ("carrier",))


def test_collect_over_ami_and_expose() -> None:
    server, port = _fake_ami("right")
    try:
        snapshot = collect(_config(port), "right")
    finally:
        server.close()
    text = exposition(snapshot)
    assert "ekc_ami_up 1" in text
    assert 'ekc_queue_callers{department="social"} 2' in text
    assert 'ekc_queue_longest_wait_seconds{department="social"} 42' in text
    assert 'ekc_queue_members_available{department="social"} 1' in text
    assert 'ekc_queue_callers{department="health"} 0' in text
    assert 'ekc_trunk_reachable{trunk="carrier"} 0' in text


def test_wrong_password_or_no_asterisk_means_ami_down() -> None:
    server, port = _fake_ami("right")
    try:
        refused = collect(_config(port), "wrong")
    finally:
        server.close()
    assert refused.ami_up == 0
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    text = exposition(collect(_config(port), "right"))
    assert "ekc_ami_up 0" in text and 'ekc_queue_callers{department="social"} 0' in text
