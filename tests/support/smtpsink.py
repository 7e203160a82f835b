"""A small SMTP server for lab tests: it stands in for the ministry's mail relay on the deploy host.

It speaks enough of RFC 5321 for Alertmanager's Go client (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT;
no TLS, no AUTH) and keeps every message it receives, with the time it arrived, for the test to look at::

    with SmtpSink("10.240.50.1", 25) as sink:
        message = sink.wait_for(lambda m: "EkcAsteriskDown" in m.subject, timeout=180)
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from types import TracebackType


@dataclass(frozen=True)
class ReceivedMail:
    """One message as the sink received it."""

    received_at: float  # time.time()
    sender: str
    recipients: tuple[str, ...]
    message: EmailMessage

    @property
    def subject(self) -> str:
        """The decoded Subject header."""
        return str(self.message.get("Subject", ""))

    @property
    def text(self) -> str:
        """The whole message as text (headers and every part)."""
        return self.message.as_string()


class SmtpSink:
    """An SMTP server in a background thread; ``messages`` grows as mail arrives."""

    def __init__(self, host: str, port: int = 25) -> None:
        self.host, self.port = host, port
        self.messages: list[ReceivedMail] = []
        self._arrived = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> SmtpSink:
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._session, self.host, self.port, reuse_address=True))
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        async def stop() -> None:
            assert self._server is not None
            self._server.close()
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def wait_for(self, match: Callable[[ReceivedMail], bool], timeout: float) -> ReceivedMail | None:
        """The first message (already received or arriving within ``timeout`` seconds) that ``match`` accepts."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                found = next((m for m in self.messages if match(m)), None)
                left = deadline - time.monotonic()
                if found is not None or left <= 0:
                    return found
                self._arrived.wait(left)

    def _store(self, sender: str, recipients: list[str], data: bytes) -> None:
        parsed = email.message_from_bytes(data, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        with self._arrived:
            self.messages.append(ReceivedMail(time.time(), sender, tuple(recipients), parsed))
            self._arrived.notify_all()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def reply(line: str) -> None:
            writer.write(f"{line}\r\n".encode())

        sender, recipients = "", []
        reply("220 ekc-smtp-sink ESMTP")
        try:
            while raw := await reader.readline():
                command = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                verb = command[:4].upper()
                if verb == "EHLO":
                    reply("250-ekc-smtp-sink")
                    reply("250-8BITMIME")
                    reply("250 SMTPUTF8")
                elif verb == "HELO":
                    reply("250 ekc-smtp-sink")
                elif verb == "MAIL":
                    sender, recipients = command.partition(":")[2].strip().strip("<>").split(">")[0], []
                    reply("250 OK")
                elif verb == "RCPT":
                    recipients.append(command.partition(":")[2].strip().strip("<>").split(">")[0])
                    reply("250 OK")
                elif verb == "DATA":
                    reply("354 end with <CRLF>.<CRLF>")
                    await writer.drain()
                    lines: list[bytes] = []
                    while (line := await reader.readline()) not in (b".\r\n", b".\n", b""):
                        lines.append(line[1:] if line.startswith(b"..") else line)
                    self._store(sender, recipients, b"".join(lines))
                    reply("250 OK queued")
                elif verb == "RSET":
                    sender, recipients = "", []
                    reply("250 OK")
                elif verb == "NOOP":
                    reply("250 OK")
                elif verb == "QUIT":
                    reply("221 bye")
                    await writer.drain()
                    break
                else:
                    reply("502 command not implemented")
                await writer.drain()
        finally:
            writer.close()
