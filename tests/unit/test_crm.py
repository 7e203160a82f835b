"""The CRM node's render (Creme settings, setup unit, hardened gunicorn, nginx) and the flows it needs."""

from __future__ import annotations

import ast
import re
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from ekc.render.components.addresses import crm_hostname
from ekc.render.components.crm import CREME_APPS, PYTHON, server_names
from ekc.render.model import RenderResult
from ekc.render.region import render_region
from ekc.spec.load import load_spec
from ekc.spec.secrets import SecretsView, required_secrets
from schemas.region import Region
from tests.support.render import placeholder_render, placeholder_tree

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "inventories" / "example"
HA = REPO / "inventories" / "ha" / "region.yml"
SETTINGS = "/etc/ekc-crm/ekc_crm_settings.py"


@pytest.fixture(scope="module")
def example() -> RenderResult:
    """The example region rendered with placeholder secrets."""
    return placeholder_render(str(EXAMPLE))


def _text(render: RenderResult, host: str, path: str) -> str:
    return render.contents[(host, path)].decode()


def _files(render: RenderResult, host: str) -> dict[str, object]:
    manifest = next(h for h in render.manifest.hosts if h.name == host)
    return {f.path: f for f in manifest.files}


def test_settings_are_python_with_the_regions_values(example: RenderResult) -> None:
    """Settings: valid Python; database over TLS verified against the CA; language, zone, hosts, apps."""
    text = _text(example, "crm1", SETTINGS)
    ast.parse(text)
    assert '"HOST": "db1.ekc.example.local"' in text
    assert '"sslmode": "verify-full", "sslrootcert": "/etc/ekc-crm/region-ca.crt"}' in text
    assert 'LANGUAGE_CODE = "ru"' in text
    assert 'TIME_ZONE = "Asia/Novosibirsk"' in text
    assert 'ALLOWED_HOSTS = ["crm.ekc.example.local", "crm1.ekc.example.local", "crm1", "10.54.0.31"]' in text
    assert 'ABCTI_URL = "https://crm.ekc.example.local/ekc-cti/dial"' in text
    for app in ("creme.persons", "creme.activities", "creme.tickets", "creme.cti"):
        assert app in CREME_APPS and f'"{app}"' in text


def test_database_on_the_same_node_is_reached_on_loopback() -> None:
    """With the database on the CRM's own node (PostgreSQL then listens on loopback only), libpq connects to
    127.0.0.1 and still checks the certificate against the node's name."""
    text = _text(placeholder_render(str(REPO / "inventories" / "small")), "ekc1", SETTINGS)
    assert '"HOST": "ekc1.' in text
    options = '"OPTIONS": {"hostaddr": "127.0.0.1", "sslmode": "verify-full", "sslrootcert": "/etc/ekc-crm/region-ca'
    assert options in text


def test_secret_files_are_private_and_redacted() -> None:
    """Settings, the admin password and the TLS key are secret 0600 files; the auditors' render hides them."""
    loaded = load_spec(EXAMPLE)
    real = SecretsView(placeholder_tree(required_secrets(loaded.region)))
    redacted = render_region(loaded, real.redact())
    files = _files(redacted, "crm1")
    for path in (SETTINGS, "/etc/ekc-crm/admin-password", "/etc/ekc-crm/tls/crm.key"):
        entry = files[path]
        assert entry.secret and entry.mode == "0600" and entry.owner == "root", path  # type: ignore[attr-defined]
    settings = _text(redacted, "crm1", SETTINGS)
    assert "postgresql.crm" not in settings and "crm.secret_key" not in settings
    assert 'SECRET_KEY = "\\u003credacted\\u003e"' in settings


def test_setup_unit_installs_from_the_bundle_only(example: RenderResult) -> None:
    """The venv comes from the bundle's wheels with --no-index, pinned; the manifest asks the bundle for them."""
    script = _text(example, "crm1", "/usr/local/lib/ekc/crm-setup")
    assert "--no-index" in script and '--find-links "$WHEELS"' in script
    assert "python3 - http://10.54.0.1:8080 \"$WHEELS\"" in script and 'wheel["sha256"]' in script
    assert "systemctl restart --no-block ekc-crm-migrate.service" in script
    requirements = _text(example, "crm1", "/etc/ekc-crm/requirements.txt")
    assert all(pin in requirements for pin in PYTHON)
    crm1 = next(h for h in example.manifest.hosts if h.name == "crm1")
    assert set(PYTHON) <= set(crm1.python)
    names = {s.name for s in crm1.services}
    assert {"ekc-crm-setup", "ekc-crm", "nginx"} <= names


def test_database_part_never_blocks_an_apply(example: RenderResult) -> None:
    """Migrations run in a unit the apply does not wait for, retried until the database answers."""
    script = _text(example, "crm1", "/usr/local/lib/ekc/crm-migrate")
    for step in ("migrate --noinput", "creme_populate", "generatemedia", "runpy.run_path"):
        assert step in script
    unit = _text(example, "crm1", "/etc/systemd/system/ekc-crm-migrate.service")
    assert "Restart=on-failure" in unit and "StartLimitIntervalSec=0" in unit
    assert "Requires=" not in unit  # a restart of the setup must not wait for the database
    crm1 = next(h for h in example.manifest.hosts if h.name == "crm1")
    assert "ekc-crm-migrate" not in {s.name for s in crm1.services}


def test_gunicorn_unit_is_hardened(example: RenderResult) -> None:
    """gunicorn: dynamic user, no capabilities, read-only system, loopback and the database's address only."""
    unit = _text(example, "crm1", "/etc/systemd/system/ekc-crm.service")
    for line in ("DynamicUser=yes", "ProtectSystem=strict", "PrivateTmp=yes", "NoNewPrivileges=yes",
                 "CapabilityBoundingSet=\n", "SystemCallFilter=@system-service", "IPAddressDeny=any",
                 "IPAddressAllow=localhost 10.54.0.21", "--bind 127.0.0.1:8001", "PartOf=ekc-crm-setup.service"):
        assert line in unit, line


def test_nginx_serves_tls_and_redirects(example: RenderResult) -> None:
    """nginx: 443 with the node's certificate; port 80 answers with a permanent redirect to https."""
    site = _text(example, "crm1", "/etc/nginx/conf.d/ekc-crm.conf")
    assert "listen 443 ssl;" in site and "ssl_certificate /etc/ekc-crm/tls/crm.crt;" in site
    assert "return 301 https://$host$request_uri;" in site
    crm1 = next(h for h in example.manifest.hosts if h.name == "crm1")
    assert "/etc/nginx/sites-enabled/default" in crm1.absent


def test_hostname_override_and_shared_node() -> None:
    """``crm.hostname`` replaces crm.<domain>; on a node with the wallboard the CRM claims its own name only."""
    loaded = load_spec(EXAMPLE)
    region = loaded.region.model_copy(update={"crm": loaded.region.crm.model_copy(update={"hostname": "crm.gov.test"})})
    assert crm_hostname(region) == "crm.gov.test"
    crm1 = next(n for n in region.nodes if n.name == "crm1")
    assert server_names(region, crm1)[0] == "crm.gov.test"
    shared = crm1.model_copy(update={"roles": ["crm", "monitoring"]})
    assert server_names(region, shared) == ["crm.gov.test"]


def test_flows_admit_the_crm_and_click_to_call(example: RenderResult) -> None:
    """The operators reach the CRM (443, 80), and the CRM alone the click-to-call service on the Asterisk node
    (8444): a click goes through the CRM's nginx."""
    flows = example.manifest.flows
    crm = {(f.port, f.source_cidr) for f in flows if f.target == "crm1"}
    assert (443, "10.54.10.0/24") in crm and (80, "10.54.10.0/24") in crm
    cti = {(f.target, f.source_cidr) for f in flows if f.port == 8444}
    assert cti == {("pbx1", "10.54.0.31/32")}


def test_nginx_passes_a_click_to_the_next_asterisk_node_only_when_nothing_was_dialled() -> None:
    """Behind the edge every active Asterisk node can take a click: nginx tries them in the spec's order, each
    checked against its own certificate's name, and goes on to the next one on its own 502 or 504 (unreachable)
    or the service's 503 (no Asterisk to ask) only; the last one's answer is final. A drained node is left out."""
    site = placeholder_render("ha").contents[("crm1", "/etc/nginx/conf.d/ekc-crm.conf")].decode()
    blocks = re.findall(r"location (= /ekc-cti/dial|@cti-\w+) \{(.*?)\n    \}", site, re.S)
    assert [name for name, _ in blocks] == ["= /ekc-cti/dial", "@cti-pbx2", "@cti-pbx3"]
    for (name, body), node, address, nxt in zip(blocks, ("pbx1", "pbx2", "pbx3"), (11, 12, 13),
                                                  ("@cti-pbx2", "@cti-pbx3", None), strict=True):
        assert f"proxy_pass https://10.56.0.{address}:8444;" in body, name
        assert f"proxy_ssl_name {node}.ekc.example.local;" in body and "proxy_ssl_verify on;" in body, name
        assert "proxy_set_header X-Forwarded-For $remote_addr;" in body
        assert (f"error_page 502 503 504 = {nxt};" in body) == (nxt is not None), name
    data = yaml.safe_load(HA.read_text(encoding="utf-8"))
    for node in data["nodes"]:
        if node["name"] == "pbx1":
            node["state"] = "drain"
    drained = render_region(replace(load_spec("ha"), region=Region.model_validate(data)),
                            SecretsView(placeholder_tree(required_secrets(Region.model_validate(data)))))
    site = drained.contents[("crm1", "/etc/nginx/conf.d/ekc-crm.conf")].decode()
    assert "proxy_pass https://10.56.0.11:8444;" not in site and "location = /ekc-cti/dial" in site


def test_scripts_parse(example: RenderResult, tmp_path: Path) -> None:
    """The rendered shell scripts pass ``sh -n``; the Python ones compile (the settings, the admin, the URLs)."""
    for path in ("/usr/local/lib/ekc/crm-setup", "/usr/local/lib/ekc/crm-migrate"):
        done = subprocess.run(["sh", "-n"], input=_text(example, "crm1", path), capture_output=True, text=True,
                              check=False)
        assert done.returncode == 0, (path, done.stderr)
    for path in (SETTINGS, "/usr/local/lib/ekc/crm-admin.py", "/usr/local/lib/ekc/crm/ekc_crm_urls.py"):
        compile(_text(example, "crm1", path), path, "exec")
    fetch = re.search(r"<<'PYTHON'\n(.*?)\nPYTHON\n", _text(example, "crm1", "/usr/local/lib/ekc/crm-setup"), re.S)
    assert fetch is not None
    compile(fetch.group(1), "crm-setup (wheel fetch)", "exec")
