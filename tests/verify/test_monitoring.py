"""Monitoring checks: every Prometheus target up, TLS and authentication, the wallboard, the queue exporter.

The requests run on the monitoring node itself with forky's python3 (the credentials stay on the node: the
check reads the password file Prometheus uses), verifying TLS against the region CA the node carries.
"""

from __future__ import annotations

import json
import shlex
import time

import pytest

from tests.verify.conftest import MANIFEST, SKIP_REASON, Nodes, fail, parametrize_hosts

if MANIFEST is None:
    pytest.skip(SKIP_REASON, allow_module_level=True)

CA = "/etc/prometheus/ekc/ca.crt"
PASSWORD = "/etc/prometheus/ekc/prometheus_admin.pass"
WAIT_S = 90
# A GET over HTTPS from the node: status and body as JSON on stdout; user "-" sends no credentials.
FETCH = """
import base64, json, ssl, sys, urllib.error, urllib.request
url, user, password_file = sys.argv[1:4]
request = urllib.request.Request(url)
if user != "-":
    token = base64.b64encode((user + ":" + open(password_file).read().strip()).encode()).decode()
    request.add_header("Authorization", "Basic " + token)
context = ssl.create_default_context(cafile=sys.argv[4]) if url.startswith("https") else None
try:
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        print(json.dumps([response.status, response.read().decode()]))
except urllib.error.HTTPError as exc:
    print(json.dumps([exc.code, ""]))
"""


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    parametrize_hosts(metafunc, "mon", "monitoring")
    if MANIFEST is not None and any("monitoring" in h.roles for h in MANIFEST.hosts):
        parametrize_hosts(metafunc, "pbx", "asterisk")
    elif "pbx" in metafunc.fixturenames:  # the queue exporter is rendered only for a region with a monitoring node
        metafunc.parametrize("pbx", [])


def _fetch(nodes: Nodes, host: str, url: str, user: str = "-") -> tuple[int, str]:
    command = shlex.join(["python3", "-c", FETCH, url, user, PASSWORD, CA])
    out = nodes(host).check_output(command)
    status, body = json.loads(out)
    return int(status), str(body)


def _address(host: str) -> str:
    """The node's address (its certificate names it, so TLS verifies against it)."""
    assert MANIFEST is not None
    node = MANIFEST.host(host)
    assert node is not None
    return node.address


def test_every_target_is_up(nodes: Nodes, mon: str) -> None:
    url = f"https://{_address(mon)}:9090/api/v1/targets"
    deadline = time.monotonic() + WAIT_S
    while True:
        status, body = _fetch(nodes, mon, url, "prometheus_admin")
        assert status == 200, f"Prometheus answered {status}"
        down = [f"{t['labels']['job']} {t['scrapeUrl']} ({t['health']}: {t['lastError'] or 'not scraped yet'})"
                for t in json.loads(body)["data"]["activeTargets"] if t["health"] != "up"]
        if not down or time.monotonic() > deadline:
            break
        time.sleep(5)
    fail(down)


def test_prometheus_refuses_requests_without_credentials(nodes: Nodes, mon: str) -> None:
    status, _ = _fetch(nodes, mon, f"https://{_address(mon)}:9090/api/v1/targets")
    assert status == 401


def test_alertmanager_refuses_requests_without_credentials(nodes: Nodes, mon: str) -> None:
    status, _ = _fetch(nodes, mon, f"https://{_address(mon)}:9093/api/v2/status")
    assert status == 401


def test_wallboard_answers_queries_without_a_password(nodes: Nodes, mon: str) -> None:
    status, body = _fetch(nodes, mon, f"https://{_address(mon)}/api/v1/query?query=up")
    assert status == 200 and json.loads(body)["status"] == "success"


def test_wallboard_proxies_nothing_but_queries(nodes: Nodes, mon: str) -> None:
    status, _ = _fetch(nodes, mon, f"https://{_address(mon)}/api/v1/targets")
    assert status == 404


def test_queue_exporter_reads_asterisk(nodes: Nodes, pbx: str) -> None:
    status, body = _fetch(nodes, pbx, "http://127.0.0.1:9250/metrics")
    assert status == 200 and "\nekc_ami_up 1\n" in body, "the queue exporter cannot log in to AMI"
