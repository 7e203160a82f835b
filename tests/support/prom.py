"""Prometheus' and Alertmanager's HTTP APIs on a lab region's monitoring node, over TLS (region CA) with the
vault's credentials: what the lab tests ask them."""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request

from tests.support.labregion import AppliedRegion

PROMETHEUS_PORT, ALERTMANAGER_PORT = 9090, 9093


def tls(region: AppliedRegion) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=region.secrets.get("ca", "cert"))


def get(region: AppliedRegion, url: str, user: str | None = None, method: str = "GET") -> tuple[int, bytes]:
    """The status and body of one request, as ``user`` (a monitoring login of the vault) or anonymous."""
    request = urllib.request.Request(url, method=method)
    if user is not None:
        token = base64.b64encode(f"{user}:{region.secrets.get('monitoring', user)}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, context=tls(region), timeout=15) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def query(region: AppliedRegion, expr: str, node: str = "mon1") -> list[dict[str, object]]:
    """An instant query's result vector."""
    status, body = get(region, f"https://{region.address(node)}:{PROMETHEUS_PORT}/api/v1/query?"
                               f"query={urllib.parse.quote(expr)}", "prometheus_admin")
    assert status == 200, body
    result: list[dict[str, object]] = json.loads(body)["data"]["result"]
    return result


def alerts(region: AppliedRegion, node: str = "mon1") -> list[dict[str, dict[str, str]]]:
    """The alerts active in Alertmanager."""
    status, body = get(region, f"https://{region.address(node)}:{ALERTMANAGER_PORT}/api/v2/alerts?active=true",
                       "alertmanager_admin")
    assert status == 200, body
    found: list[dict[str, dict[str, str]]] = json.loads(body)
    return found
