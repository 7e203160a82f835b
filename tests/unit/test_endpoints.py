"""``deploy.py endpoints``: every place people reach, from the spec's nodes and roles; no secret ever printed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ekc.render.endpoints import endpoints
from ekc.spec.load import load_spec

REPO = Path(__file__).resolve().parents[2]


def test_the_example_region_lists_each_service_on_its_node() -> None:
    found = {(e.service, e.node): e for e in endpoints(load_spec("inventories/example").region)}
    assert found[("CRM", "crm1")].address == "https://crm.ekc.example.local/ (10.54.0.31)"
    assert found[("wallboard", "mon1")].address == "https://10.54.0.41/"
    assert found[("Prometheus", "mon1")].address == "https://10.54.0.41:9090/"
    assert found[("SIP registrar (phones)", "pbx1")].address == "sip:10.54.0.11:5060"
    assert "vault crm.admin" in found[("CRM", "crm1")].login


def test_a_region_without_a_crm_has_no_click_to_call(tmp_path: Path) -> None:
    text = (REPO / "inventories/example/region.yml").read_text(encoding="utf-8")
    text = text.replace("roles: [crm]", "roles: [monitoring]")
    text = text.replace("targets: [role:crm]", "targets: [role:monitoring]")
    (tmp_path / "region.yml").write_text(text, encoding="utf-8")
    services = {e.service for e in endpoints(load_spec(str(tmp_path)).region)}
    assert "CRM" not in services and "click-to-call (ABCTI_URL)" not in services
    assert "wallboard" in services


def test_the_command_prints_vault_paths_never_values() -> None:
    done = subprocess.run([sys.executable, "deploy.py", "endpoints", "small"], cwd=REPO, capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "ansible-vault view inventories/small/secrets.yml" in done.stdout
    assert "https://crm.ekc.small.local/" in done.stdout
