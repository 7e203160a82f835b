"""A call's recording for the CRM's player: ekc-cti's GET /recording/<call id>, and the CRM's nginx in front.

The service script is the rendered file itself, loaded as a module, serving a temporary recordings directory
laid out as MixMonitor writes it; nginx's part is read from the rendered site.
"""

from __future__ import annotations

import json
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import ModuleType

import pytest

from ekc.render.components.addresses import CALL_ID_PATTERN, RECORDINGS_PATH
from ekc.render.components.crm import catalogue
from ekc.render.model import RenderResult
from ekc.spec.load import load_spec
from tests.support.render import placeholder_render, rendered_module

REPO = Path(__file__).resolve().parents[2]
CALL = "pbx1-1765151234.42"
AUDIO = b"RIFF" + bytes(range(256)) * 40


@pytest.fixture(scope="module")
def render() -> RenderResult:
    return placeholder_render(str(REPO / "inventories" / "example"))


@pytest.fixture(scope="module")
def script(render: RenderResult, tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """The rendered ekc-cti of the example's pbx1, loaded as a module."""
    return rendered_module(render.contents[("pbx1", "/usr/local/lib/ekc/ekc-cti")], tmp_path_factory.mktemp("cti"),
                           "ekc_cti_recordings")


@pytest.fixture
def service(script: ModuleType, render: RenderResult, tmp_path: Path) -> Iterator[str]:
    """The service on loopback with the rendered settings, its recordings in ``tmp_path``, the CRM at 127.0.0.1."""
    config = json.loads(render.contents[("pbx1", "/etc/ekc-cti/ekc-cti.json")])
    config["recordings"]["directory"] = str(tmp_path)
    config["trusted_proxies"] = ["127.0.0.1"]
    (tmp_path / "health").mkdir()
    (tmp_path / "health" / f"20271214-101500-{CALL}.wav").write_bytes(AUDIO)
    (tmp_path / "health" / "20271214-101600-pbx1-1765151299.1.wav").write_bytes(b"RIFF other")
    (tmp_path / "secret.wav").write_bytes(b"not a recording of a department")
    script.CONFIG.clear()
    script.CONFIG.update(config)
    http = ThreadingHTTPServer(("127.0.0.1", 0), script.Handler)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{http.server_address[1]}"
    finally:
        http.shutdown()
        http.server_close()


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as reply:
            return reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_the_recording_is_streamed_whole_with_its_type_and_length(service: str) -> None:
    status, headers, body = _get(f"{service}/recording/{CALL}")
    assert (status, body) == (200, AUDIO)
    assert headers["Content-Type"] == "audio/wav" and headers["Content-Length"] == str(len(AUDIO))
    assert headers["Accept-Ranges"] == "bytes" and "no-store" in headers["Cache-Control"]


def test_a_byte_range_is_answered_with_206(service: str) -> None:
    status, headers, body = _get(f"{service}/recording/{CALL}", {"Range": "bytes=4-9"})
    assert (status, body) == (206, AUDIO[4:10])
    assert headers["Content-Range"] == f"bytes 4-9/{len(AUDIO)}"
    assert _get(f"{service}/recording/{CALL}", {"Range": "bytes=0-"})[2] == AUDIO
    assert _get(f"{service}/recording/{CALL}", {"Range": "bytes=-3"})[2] == AUDIO[-3:]
    status, headers, _ = _get(f"{service}/recording/{CALL}", {"Range": f"bytes={len(AUDIO)}-"})
    assert status == 416 and headers["Content-Range"] == f"bytes */{len(AUDIO)}"


@pytest.mark.parametrize("path", [
    "pbx1-1765151234.43",  # a call without a recording
    "..", "..%2F..%2Fsecret", "%2e%2e", "health/..", "*", "pbx1-*", "pbx1-1765151234.4?", "[p]bx1-1765151234.42",
    "secret", "pbx1-1765151234.42/../../secret", "",
])
def test_unknown_and_malformed_call_ids_are_404(service: str, path: str) -> None:
    assert _get(f"{service}/recording/{path}")[0] == 404


def test_recordings_are_for_the_crm_only(service: str, script: ModuleType) -> None:
    script.CONFIG["trusted_proxies"] = ["10.54.0.31"]
    assert _get(f"{service}/recording/{CALL}")[0] == 403


@pytest.mark.parametrize(("call_id", "valid"), [
    ("pbx1-1765151234.42", True), ("1765151234.42", True), ("pbx-a1-1765151234.0", True),
    ("pbx1-1765151234", False), ("pbx1-1765151234.42.1", False), ("../1765151234.42", False),
    ("pbx1-1765151234.42\n", False), ("PBX1-1765151234.42", False), ("pbx1-１２.3", False),
])
def test_the_call_id_pattern(script: ModuleType, call_id: str, valid: bool, tmp_path: Path) -> None:
    """The service's call-id check (a pure function of the id): a channel's UNIQUEID, nothing else."""
    script.CONFIG.clear()
    script.CONFIG["recordings"] = {"call_id": CALL_ID_PATTERN, "directory": str(tmp_path), "departments": ["a"],
                                   "media_types": {"wav": "audio/wav"}}
    (tmp_path / "a").mkdir()
    if "/" not in call_id:  # a file of that very name exists: only the pattern can refuse it
        (tmp_path / "a" / f"20270101-000000-{call_id}.wav").write_bytes(b"RIFF")
    assert (script.recording_file(call_id) is not None) is valid


def test_the_byte_range_rules(script: ModuleType) -> None:
    assert script.byte_range(None, 100) is None and script.byte_range("bytes=-", 100) is None
    assert script.byte_range("bytes=10-", 100) == (10, 99)
    assert script.byte_range("bytes=10-1000", 100) == (10, 99)
    assert script.byte_range("bytes=-1000", 100) == (0, 99)
    assert script.byte_range("items=1-2", 100) is None and script.byte_range("bytes=1-2,4-5", 100) is None
    with pytest.raises(ValueError):
        script.byte_range("bytes=100-", 100)


def test_without_recording_nothing_is_served_nor_readable(tmp_path: Path) -> None:
    """A region that does not record calls: ekc-cti serves no recordings and its unit gets no group asterisk, the
    CRM's nginx has no recordings location and the card no player."""
    text = (REPO / "inventories" / "example" / "region.yml").read_text(encoding="utf-8")
    assert "recording: {enabled: true" in text
    (tmp_path / "region.yml").write_text(text.replace("recording: {enabled: true", "recording: {enabled: false"),
                                         encoding="utf-8")
    render = placeholder_render(str(tmp_path))
    assert json.loads(render.contents[("pbx1", "/etc/ekc-cti/ekc-cti.json")])["recordings"] is None
    unit = render.contents[("pbx1", "/etc/systemd/system/ekc-cti.service")].decode()
    assert "SupplementaryGroups" not in unit and "/var/spool/asterisk" not in unit
    assert RECORDINGS_PATH not in _site(render) and "recording-access" not in _site(render)
    assert catalogue(load_spec(str(tmp_path)).region)["recordings"] is None
    enabled = placeholder_render(str(REPO / "inventories" / "example"))
    unit = enabled.contents[("pbx1", "/etc/systemd/system/ekc-cti.service")].decode()
    assert "SupplementaryGroups=asterisk" in unit and "BindReadOnlyPaths=/var/spool/asterisk/monitor" in unit


def _site(render: RenderResult) -> str:
    return render.contents[("crm1", "/etc/nginx/conf.d/ekc-crm.conf")].decode()


def test_nginx_has_one_recordings_location_per_asterisk_node_and_refuses_the_rest(render: RenderResult) -> None:
    """Each Asterisk node has its own location (the call id as strict as the service's), asked of the CRM first
    and passed to that node's ekc-cti over TLS checked against the node's name; anything else under the prefix
    is a 404, so no other host can be named."""
    site = _site(render)
    locations = re.findall(rf'location ~ "\^{RECORDINGS_PATH}/([a-z0-9-]+)/\((.*)\)\$" \{{', site)
    assert locations == [("pbx1", CALL_ID_PATTERN)], locations
    block = site.split(f'location ~ "^{RECORDINGS_PATH}/pbx1/', 1)[1].split("\n    }", 1)[0]
    assert "auth_request /appeals/recording-access/;" in block
    assert "proxy_pass https://10.54.0.11:8444/recording/$1;" in block
    assert "proxy_ssl_verify on;" in block and "proxy_ssl_name pbx1.ekc.example.local;" in block
    assert f"location {RECORDINGS_PATH}/ {{\n        return 404;" in site
    access = site.split("location = /appeals/recording-access/ {", 1)[1].split("\n    }", 1)[0]
    assert "internal;" in access and "proxy_pass_request_body off;" in access


def test_the_catalogue_tells_the_card_where_recordings_are() -> None:
    data = catalogue(load_spec(str(REPO / "inventories" / "example")).region)
    assert data["recordings"] == {"path": RECORDINGS_PATH}
