"""CRM nodes: HTTPS with the region CA's certificate, HTTP redirecting to it, the database reached over verified
TLS, Creme's well-known first login gone; the click-to-call service on Asterisk nodes refuses foreign pages.

The HTTP checks run on the node itself (Python's standard library against the node's own address), so they
prove the service, not the firewall, which ``test_hosts.py`` covers.
"""

from __future__ import annotations

import pytest

from tests.verify.conftest import MANIFEST, SKIP_REASON, Host, Nodes, fail, parametrize_hosts

if MANIFEST is None:
    pytest.skip(SKIP_REASON, allow_module_level=True)

CA = "/etc/ekc-crm/region-ca.crt"
DONE = "/var/lib/ekc-crm/setup-complete"
CREME = ("cd /var/lib/ekc-crm && PYTHONPATH=/etc/ekc-crm DJANGO_SETTINGS_MODULE=ekc_crm_settings "
         "PYTHONWARNINGS=ignore /opt/ekc-crm/bin/creme shell -c")

# GET a URL without following redirects: prints the status and the Location header.
FETCH = r"""
import ssl, sys, urllib.error, urllib.request
class Keep(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None
context = ssl.create_default_context(cafile=sys.argv[2])
opener = urllib.request.build_opener(Keep(), urllib.request.HTTPSHandler(context=context))
request = urllib.request.Request(sys.argv[1], headers=dict(h.split(": ", 1) for h in sys.argv[3:]))
try:
    reply = opener.open(request, timeout=30)
    print(reply.status, reply.headers.get("Location", ""))
except urllib.error.HTTPError as exc:
    print(exc.code, exc.headers.get("Location", ""))
"""


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    parametrize_hosts(metafunc, "crm", "crm")
    parametrize_hosts(metafunc, "pbx", "asterisk")


def _fetch(host: Host, url: str, ca: str, *headers: str) -> tuple[int, str]:
    quoted = " ".join(f"'{h}'" for h in headers)
    out = host.run(f"python3 -c '{FETCH}' '{url}' {ca} {quoted}")
    assert out.rc == 0, out.stderr
    status, _, location = str(out.stdout).strip().partition(" ")
    return int(status), location


def _address(name: str) -> str:
    host = MANIFEST.host(name) if MANIFEST else None
    assert host is not None
    return host.address


def test_setup_finished(nodes: Nodes, crm: str) -> None:
    """The database part of the setup (retried until the database answers) has finished: wait up to 5 minutes."""
    host = nodes(crm)
    out = host.run(f"for i in $(seq 60); do test -f {DONE} && exit 0; sleep 5; done; "
                   "journalctl -u ekc-crm-migrate --no-pager | tail -5; exit 1")
    assert out.rc == 0, f"ekc-crm-migrate has not finished: {out.stdout}"


def test_https_answers_with_the_region_certificate(nodes: Nodes, crm: str) -> None:
    """The login page over HTTPS, the certificate verified against the region CA for the node's address."""
    status, location = _fetch(nodes(crm), f"https://{_address(crm)}/creme_login", CA)
    assert status == 200, (status, location)


def test_plain_http_redirects_to_https(nodes: Nodes, crm: str) -> None:
    """Port 80 answers every path with a permanent redirect to the same path over HTTPS."""
    address = _address(crm)
    assert _fetch(nodes(crm), f"http://{address}/cti/respond_to_a_call", CA) == (
        301, f"https://{address}/cti/respond_to_a_call")


def test_database_is_reached_over_verified_tls(nodes: Nodes, crm: str) -> None:
    """Creme's own connection to PostgreSQL is TLS, with the server verified (verify-full) against the CA."""
    code = ("from django.db import connection; c = connection.cursor(); "
            "c.execute('SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()'); "
            "print(c.fetchone()[0], connection.settings_dict['OPTIONS']['sslmode'])")
    out = nodes(crm).run(f'{CREME} "{code}"')
    assert out.rc == 0, out.stderr
    assert str(out.stdout).split()[-2:] == ["True", "verify-full"], out.stdout


def test_no_default_login_and_an_administrator(nodes: Nodes, crm: str) -> None:
    """Creme's first user (root/root) is the spec's administrator now; no active account takes 'root'."""
    code = ("from django.contrib.auth import get_user_model; U = get_user_model().objects; "
            "print(sum(u.check_password('root') for u in U.filter(is_active=True)), "
            "U.filter(is_superuser=True, is_active=True).count())")
    out = nodes(crm).run(f'{CREME} "{code}"')
    assert out.rc == 0, out.stderr
    weak, admins = (int(v) for v in str(out.stdout).split()[-2:])
    problems = []
    if weak:
        problems.append(f"{weak} active account(s) accept the password 'root'")
    if not admins:
        problems.append("no active administrator")
    fail(problems)


def test_click_to_call_refuses_other_sites(nodes: Nodes, pbx: str, manifest: object) -> None:
    """The click-to-call service answers over TLS and refuses a page of any origin but the CRM's."""
    host_manifest = MANIFEST.host(pbx) if MANIFEST else None
    assert host_manifest is not None
    if not any(s.name == "ekc-cti" for s in host_manifest.services):
        pytest.skip("no click-to-call service on this node (the region has no CRM)")
    status, _ = _fetch(nodes(pbx), f"https://{_address(pbx)}:8444/dial?n_tel=100", "/etc/ekc-cti/region-ca.crt",
                       "Origin: https://elsewhere.example")
    assert status == 403
