"""The click-to-call service: its HTTP rules and its AMI dialogue, against a scripted AMI on loopback.

The service script is the rendered file itself, loaded as a module; the AMI peer is a real TCP server that
speaks the manager protocol's framing and records every action it receives.
"""

from __future__ import annotations

import json
import socketserver
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.location import CONTACTS, location_server
from tests.support.render import placeholder_render, rendered_module

REPO = Path(__file__).resolve().parents[2]
ORIGIN = "https://crm.ekc.example.local"


class ScriptedAmi(socketserver.ThreadingTCPServer):
    """An AMI peer: accepts one login, lists ``contacts`` for PJSIPShowContacts, accepts Originate."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, contacts: list[dict[str, str]]) -> None:
        super().__init__(("127.0.0.1", 0), AmiHandler)
        self.contacts = contacts
        self.actions: list[dict[str, str]] = []


class AmiHandler(socketserver.StreamRequestHandler):
    """One manager session: a banner, then one response per action."""

    server: ScriptedAmi

    def _send(self, fields: dict[str, str]) -> None:
        self.wfile.write("".join(f"{k}: {v}\r\n" for k, v in fields.items()).encode() + b"\r\n")

    def handle(self) -> None:
        self.wfile.write(b"Asterisk Call Manager/11.0.0\r\n")
        action: dict[str, str] = {}
        for raw in self.rfile:
            line = raw.decode().rstrip("\r\n")
            if line:
                key, value = line.split(": ", 1)
                action[key] = value
                continue
            self.server.actions.append(action)
            self._answer(action)
            if action.get("Action") == "Logoff":
                return
            action = {}

    def _answer(self, action: dict[str, str]) -> None:
        ident = {"ActionID": action.get("ActionID", "")}
        name = action.get("Action")
        if name == "Login":
            ok = action.get("Username") == "ekc_cti" and action.get("Secret") == "pw"
            self._send({"Response": "Success" if ok else "Error", **ident})
        elif name == "PJSIPShowContacts":
            self._send({"Response": "Success", "EventList": "start", **ident})
            for contact in self.server.contacts:
                self._send({"Event": "ContactList", **contact, **ident})
            self._send({"Event": "ContactListComplete", "EventList": "Complete", **ident})
        elif name == "Logoff":
            self._send({"Response": "Goodbye", **ident})
        else:
            self._send({"Response": "Success", "Message": "Originate successfully queued", **ident})


@pytest.fixture(scope="module")
def script(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """The rendered ekc-cti of the example's pbx1, loaded as a module."""
    render = placeholder_render(str(REPO / "inventories" / "example"))
    return rendered_module(render.contents[("pbx1", "/usr/local/lib/ekc/ekc-cti")], tmp_path_factory.mktemp("cti"),
                           "ekc_cti")


@pytest.fixture
def service(script: ModuleType) -> Iterator[tuple[str, ScriptedAmi]]:
    """The service's handler on loopback (plain HTTP: TLS is the unit's business) and its AMI peer."""
    ami = ScriptedAmi([
        {"ObjectName": "2001;@abc", "Endpoint": "2001", "ViaAddr": "127.0.0.1", "Uri": "sip:2001@127.0.0.1:5062"},
        {"ObjectName": "2002;@def", "Endpoint": "2002", "ViaAddr": "10.54.10.7", "Uri": "sip:2002@10.54.10.7"},
    ])
    threading.Thread(target=ami.serve_forever, daemon=True).start()
    script.CONFIG.clear()
    script.CONFIG.update({"ami_host": "127.0.0.1", "ami_port": ami.server_address[1], "ami_user": "ekc_cti",
                          "ami_password": "pw", "origin": ORIGIN, "context": "ekc-operators",
                          "extensions": ["2001", "2002"], "path": "/ekc-cti/dial", "trusted_proxies": []})
    http = ThreadingHTTPServer(("127.0.0.1", 0), script.Handler)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{http.server_address[1]}", ami
    finally:
        http.shutdown()
        ami.shutdown()
        http.server_close()
        ami.server_close()


def _get(url: str, origin: str | None = ORIGIN,
         forwarded: str | None = None) -> tuple[int, dict[str, str], dict[str, object]]:
    headers = {"Origin": origin} if origin else {}
    if forwarded:
        headers["X-Forwarded-For"] = forwarded
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, dict(reply.headers), json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read() or b"{}")


def test_click_rings_the_phone_registered_from_the_callers_address(service: tuple[str, ScriptedAmi]) -> None:
    """A click from 127.0.0.1 rings 2001 (registered from there) and dials the number in the phones' context."""
    base, ami = service
    status, headers, body = _get(f"{base}/dial?n_tel=%2B79130000001")
    assert status == 200, body
    assert body == {"status": "calling", "extension": "2001", "number": "+79130000001"}
    assert headers["Access-Control-Allow-Origin"] == ORIGIN
    originate = next(a for a in ami.actions if a.get("Action") == "Originate")
    assert originate["Channel"] == "PJSIP/2001"
    assert (originate["Context"], originate["Exten"], originate["Priority"]) == ("ekc-operators", "+79130000001", "1")


def test_refusals(service: tuple[str, ScriptedAmi], script: ModuleType) -> None:
    """Another site's origin, a malformed number, and a workstation with no registered phone are refused."""
    base, ami = service
    assert _get(f"{base}/dial?n_tel=%2B79130000001", origin="https://evil.example")[0] == 403
    assert _get(f"{base}/dial?n_tel=1;Action:%20Command")[0] == 400
    assert _get(f"{base}/elsewhere?n_tel=123")[0] == 404
    assert not any(a.get("Action") == "Originate" for a in ami.actions)
    ami.contacts[:] = [c for c in ami.contacts if c["Endpoint"] != "2001"]
    status, _, body = _get(f"{base}/dial?n_tel=2002")
    assert status == 404 and "127.0.0.1" in str(body["error"])


def test_unknown_endpoints_are_not_operators(service: tuple[str, ScriptedAmi], script: ModuleType) -> None:
    """A contact of an endpoint that is not an operator's (a trunk, a supervisor) is never rung."""
    base, ami = service
    ami.contacts[:] = [{"Endpoint": "trunk-carrier", "ViaAddr": "127.0.0.1"}]
    assert _get(f"{base}/dial?n_tel=2002")[0] == 404


def test_contact_address_falls_back_to_the_uri(script: ModuleType) -> None:
    """Without a Via address, the contact URI's host is the phone's address."""
    assert script.contact_address({"Uri": "sip:2001@10.54.10.5:5060;transport=udp"}) == "10.54.10.5"
    assert script.contact_address({"ViaAddr": "10.54.10.6", "Uri": "sip:2001@10.0.0.1"}) == "10.54.10.6"
    assert script.contact_address({"Uri": "garbage"}) == ""


def test_behind_the_edge_the_phone_is_found_in_the_proxies_location(
        service: tuple[str, ScriptedAmi], script: ModuleType) -> None:
    """Behind the SIP edge the phone is looked up in the proxies' location (the first proxy does not answer, the
    second does) and rung through the edge; Asterisk's own contacts are not asked."""
    base, ami = service
    phones = {"2001": "sip:2001@127.0.0.1:5062", "2002": "sip:2002@10.54.10.7:5060"}
    with location_server(phones) as port:
        script.CONFIG.update({"edge": {"proxies": ["127.0.0.2", "127.0.0.1"], "port": port, "path": CONTACTS},
                              "channel_suffix": "@edge"})
        status, _, body = _get(f"{base}/dial?n_tel=2002")
        assert status == 200 and body["extension"] == "2001", body
        del phones["2001"]
        assert _get(f"{base}/dial?n_tel=2002")[0] == 404
    originate = next(a for a in ami.actions if a.get("Action") == "Originate")
    assert originate["Channel"] == "PJSIP/2001@edge"
    assert not any(a.get("Action") == "PJSIPShowContacts" for a in ami.actions)


def test_the_ha_render_points_click_to_call_at_the_edge() -> None:
    """In inventories/ha the service reads both proxies' location and rings phones through the edge."""
    render = placeholder_render(str(REPO / "inventories" / "ha"))
    config = json.loads(render.contents[("pbx1", "/etc/ekc-cti/ekc-cti.json")])
    assert config["edge"] == {"proxies": ["10.56.0.51", "10.56.0.52"], "port": 9494, "path": CONTACTS}
    assert config["channel_suffix"] == "@edge"
    example = placeholder_render(str(REPO / "inventories" / "example"))
    assert json.loads(example.contents[("pbx1", "/etc/ekc-cti/ekc-cti.json")])["edge"] is None


def test_the_crm_passes_the_workstations_address_and_only_the_crm_is_believed(
        service: tuple[str, ScriptedAmi], script: ModuleType) -> None:
    """Through the CRM's nginx (its path, X-Forwarded-For) the phone of the workstation named in the header is
    rung; the same header from anyone but the CRM's nodes is ignored (its own address decides)."""
    base, ami = service
    assert _get(f"{base}/ekc-cti/dial?n_tel=601", forwarded="10.54.10.7")[2].get("extension") == "2001"
    script.CONFIG["trusted_proxies"] = ["127.0.0.1"]
    try:
        status, _, body = _get(f"{base}/ekc-cti/dial?n_tel=601", forwarded="10.54.10.7")
        assert (status, body.get("extension")) == (200, "2002"), body
        assert _get(f"{base}/ekc-cti/dial?n_tel=601", forwarded="10.54.10.99")[0] == 404
    finally:
        script.CONFIG["trusted_proxies"] = []
    channels = [a["Channel"] for a in ami.actions if a.get("Action") == "Originate"]
    assert channels == ["PJSIP/2001", "PJSIP/2002"]


def test_asterisk_unreachable_is_a_503_so_the_crm_tries_the_next_node(
        service: tuple[str, ScriptedAmi], script: ModuleType) -> None:
    """No AMI to ask: nothing was dialled, and the answer (503) sends the CRM's nginx on to the next node."""
    base, _ = service
    script.CONFIG["ami_port"] = 1  # nothing listens there
    status, _, body = _get(f"{base}/dial?n_tel=601")
    assert status == 503 and "Asterisk unavailable" in str(body["error"]), body
