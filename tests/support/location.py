"""A stand-in for the SIP proxies' location route (``/ekc/registered``) on loopback, for the scripts that read it.

It answers what Kamailio's ``ul.dump`` returns through the routes (the shape read from Kamailio 6.1 in the lab): one
domain ``location`` with an AoR per registered phone, bare (``brief``, ``/ekc/registered``) or with its contacts
(``/ekc/contacts``). Unit tests of pure logic only; the lab tests read the real proxies.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REGISTERED = "/ekc/registered"
CONTACTS = "/ekc/contacts"


def location_dump(phones: dict[str, str], *, brief: bool) -> dict[str, object]:
    """A route's JSON for ``phones`` (extension -> contact URI)."""
    aors: list[dict[str, object]] = [
        {"AoR": extension} if brief else
        {"Info": {"AoR": extension, "HashID": index,
                  "Contacts": [{"Contact": {"Address": uri, "Expires": 300, "Received": "[not set]"}}]}}
        for index, (extension, uri) in enumerate(sorted(phones.items()))]
    return {"jsonrpc": "2.0", "id": 1,
            "result": {"Domains": [{"Domain": {"Domain": "location", "Size": 1024, "AoRs": aors,
                                               "Stats": {"Records": len(aors), "Max-Slots": 1}}}]}}


@contextmanager
def location_server(phones: dict[str, str]) -> Iterator[int]:
    """Serve ``phones`` on 127.0.0.1 (the dict may change while it runs); yields the port."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            known = self.path in (REGISTERED, CONTACTS)
            body = json.dumps(location_dump(phones, brief=self.path == REGISTERED)).encode() if known else b"{}"
            self.send_response(200 if known else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
