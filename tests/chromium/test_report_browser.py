"""The audit report as real headless Chromium shows it: sections, rows and texts after the script ran, and a
screenshot that is not blank."""

from __future__ import annotations

import hashlib
import re
import struct
from pathlib import Path
from typing import Literal

import pytest

from ekc.render.manifest import (
    BuildManifest,
    Flow,
    HostManifest,
    ManagedFile,
    ServiceState,
    Trigger,
    dump_manifest,
    host_file_path,
)
from ekc.render.report import write_report
from tests.support.browser import dump_dom, screenshot

pytestmark = pytest.mark.chromium

SPEC_SHA = "5e" * 32
OLD_SPEC_SHA = "0c" * 32
RELOAD = Trigger("reload", "asterisk", "asterisk -rx 'dialplan reload'", "no calls dropped")
RESTART = Trigger("restart", "asterisk", None, "drops every call on this node", True)
RESTART_PG = Trigger("restart", "postgresql", None, "closes every database session; CDRs are queued")
NODES = {"pbx1": "10.54.0.11", "db1": "10.54.0.21", "crm1": "10.54.0.31", "mon1": "10.54.0.41"}
ROLES = {"pbx1": "asterisk", "db1": "postgresql", "crm1": "crm", "mon1": "monitoring"}
PACKAGES = {"pbx1": "asterisk", "db1": "postgresql-18", "crm1": "nginx", "mon1": "prometheus"}
FLOW_SPECS: tuple[tuple[str, str, int, Literal["tcp", "udp"], str], ...] = (
    ("carrier", "pbx1", 5060, "udp", "SIP signalling from the carrier trunk"),
    ("carrier", "pbx1", 10000, "udp", "RTP media from the carrier"),
    ("pbx1", "db1", 5432, "tcp", "CDR, CEL and queue_log to PostgreSQL"),
    ("crm1", "db1", 5432, "tcp", "Creme CRM database"),
    ("crm1", "pbx1", 8088, "tcp", "ARI for click-to-call"),
    ("mon1", "pbx1", 9100, "tcp", "node exporter scrape"),
    ("mon1", "db1", 9187, "tcp", "postgres exporter scrape"),
)
FLOWS = tuple(
    Flow(source, NODES.get(source, "10.54.0.5") + "/32", target, NODES[target], port, proto, purpose)
    for source, target, port, proto, purpose in FLOW_SPECS
)


def files_of(version: int) -> dict[str, list[tuple[str, str, bool, Trigger]]]:
    """Each host's files as (path, content in the build, secret, trigger); ``version`` 2 adds a queue."""
    queue = "\n[social]\nstrategy=rrmemory\n" if version == 2 else ""
    return {
        "pbx1": [
            ("/etc/asterisk/extensions.conf",
             f"; ekc\n[ivr]\nexten => s,1,Answer()\n same => n,Goto(q{version})\n", False, RELOAD),
            ("/etc/asterisk/queues.conf",
             f"; ekc\n[general]\npersistentmembers=yes\n{queue}", False, RESTART),
            ("/etc/asterisk/pjsip.conf", "[carrier]\ntype=auth\npassword=<redacted>\n", True, RESTART),
        ],
        "db1": [
            ("/etc/postgresql/18/main/pg_hba.conf", "hostssl cdr asterisk 10.54.0.11/32 scram-sha-256\n",
             False, RESTART_PG),
        ],
        "crm1": [("/etc/creme/local_settings.py", "DATABASES = {'default': {'PASSWORD': '<redacted>'}}\n",
                  True, Trigger())],
        "mon1": [("/etc/prometheus/prometheus.yml", "scrape_configs:\n  - job_name: node\n",
                  False, Trigger())],
    }


def write_build(root: Path, version: int, spec_sha256: str) -> Path:
    """A redacted four-host build, as render lays it out."""
    hosts = []
    for name, files in files_of(version).items():
        managed = []
        for path, content, secret, trigger in files:
            real = content.replace("<redacted>", f"real-secret-{version}")
            managed.append(ManagedFile(path, "0640" if secret else "0644", "root", "root",
                                       hashlib.sha256(real.encode()).hexdigest(), name, secret, trigger))
            target = host_file_path(root, name, path)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content, encoding="utf-8")
        hosts.append(HostManifest(name, NODES[name], (ROLES[name],), ("chrony", "nftables", PACKAGES[name]),
                                  tuple(managed), (ServiceState("nftables"), ServiceState("chrony"))))
    manifest = BuildManifest("0.1.0", "inventories/nsk/region.yml", spec_sha256, "54",
                             "Новосибирская область", True, tuple(hosts), FLOWS)
    (root / "manifest.json").write_text(dump_manifest(manifest), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report of version 2 against version 1."""
    root = tmp_path_factory.mktemp("report")
    old = write_build(root / "old", 1, OLD_SPEC_SHA)
    out = root / "report.html"
    write_report(write_build(root / "new", 2, SPEC_SHA), out, against=old)
    return out


@pytest.fixture(scope="module")
def dom(report: Path) -> str:
    """The report's DOM in Chromium after its script ran."""
    return dump_dom(report.as_uri())


def test_script_ran_and_revealed_the_tools(dom: str) -> None:
    assert re.search(r'<body data-testid="report" data-js="ready">', dom)
    assert re.search(r'<div class="tools" id="tools" data-testid="tools">', dom)


def test_every_host_has_its_section(dom: str) -> None:
    sections = re.findall(r'<section class="host" id="(host-[a-z0-9]+)" data-testid="\1"', dom)
    assert sections == ["host-crm1", "host-db1", "host-mon1", "host-pbx1"]


def test_flow_matrix_shows_every_flow(dom: str) -> None:
    assert dom.count('data-testid="flow-row"') == len(FLOWS)


def test_spec_hash_is_shown(dom: str) -> None:
    assert f'<code data-testid="spec-hash">{SPEC_SHA}</code>' in dom


def test_changes_name_the_restart_that_drops_calls(dom: str) -> None:
    summary = re.search(r'data-testid="plan-summary"><strong>([^<]+)</strong>', dom)
    assert summary is not None
    assert summary.group(1) == (
        "Plan: 4 files to change on 2 of 4 hosts; 1 restart that drops calls (pbx1: asterisk)"
    )


def test_no_secret_reaches_the_page(dom: str) -> None:
    assert "real-secret" not in dom
    contents = re.findall(r'<pre data-testid="file-content">(.*?)</pre>', dom, re.S)
    assert len(contents) == 6
    assert sum("&lt;redacted&gt;" in c for c in contents) == 2


def test_screenshot_is_a_real_picture(report: Path, tmp_path: Path) -> None:
    png = screenshot(report.as_uri(), tmp_path / "report.png", width=1280, height=2000)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1280, 2000)
    assert len(data) > 50_000, "a page with tables and text compresses to far more than a blank one"
