"""A stand-in for the SIP proxies' location route (``/ekc/registered``) on loopback, for the scripts that read it.

It answers what Kamailio's ``ul.dump brief`` returns through the route: one domain ``location`` with an AoR per
registered phone and its contacts. Unit tests of pure logic only; the lab tests read the real proxies.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PATH = "/ekc/registered"


def location_dump(phones: dict[str, str]) -> dict[str, object]:
    """The route's JSON for ``phones`` (extension -> contact URI)."""
    aors = [{"Info": {"AoR": extension, "HashID": index,
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
            body = json.dumps(location_dump(phones)).encode() if self.path == PATH else b"{}"
            self.send_response(200 if self.path == PATH else 404)
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
