"""The lab's SMTP sink receives what a real SMTP client (Python's smtplib) sends."""

from __future__ import annotations

import smtplib
import socket
from email.message import EmailMessage

from tests.support.smtpsink import SmtpSink


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_sink_receives_a_message() -> None:
    port = _free_port()
    with SmtpSink("127.0.0.1", port) as sink:
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = "a@example.local", "b@example.local", "[54] FIRING x"
        message.set_content("line one\n.leading dot\n")
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.send_message(message)
        got = sink.wait_for(lambda m: "FIRING" in m.subject, timeout=10)
        assert got is not None and got.recipients == ("b@example.local",)
        assert ".leading dot" in got.text
        assert sink.wait_for(lambda m: "RESOLVED" in m.subject, timeout=0.2) is None
