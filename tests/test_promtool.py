"""The monitoring node's rendered configuration passes Prometheus's and Alertmanager's own checkers.

promtool and amtool come from forky's packages (the versions the nodes run), unpacked here, not installed:
``promtool check config`` (with the rule files it names), ``promtool check rules``, ``promtool check
web-config`` (TLS and bcrypt users), ``amtool check-config``, and ``promtool test rules`` with the unit tests
of tests/promtool/ against the rules rendered for the example region. The renders use freshly generated
real secrets (certificates, bcrypt hashes), so the files are what a node gets.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from ekc.render.components.monitoring import monitoring_layer
from ekc.render.flows import flow_matrix
from ekc.render.model import RenderContext
from ekc.render.region import render_host
from ekc.spec.load import load_spec
from tests.support.forky import forky_deb
from tests.support.render import real_secrets

CASES = ("example", "small", "ha")
RULE_TESTS = Path(__file__).parent / "promtool"
PROMETHEUS_DIR = "/etc/prometheus/"


@pytest.fixture(scope="module")
def tools(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """forky's promtool and amtool, unpacked into a temporary directory (their bin directory)."""
    if not shutil.which("dpkg-deb"):
        pytest.skip("dpkg-deb is not available to unpack forky's packages")
    root = tmp_path_factory.mktemp("prometheus-tools")
    for package in ("promtool", "prometheus-alertmanager"):
        subprocess.run(["dpkg-deb", "-x", str(forky_deb(package, root)), str(root / "x")], check=True)
    return root / "x" / "usr" / "bin"


@pytest.fixture(scope="module", params=CASES)
def rendered(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The monitoring node's files (real secrets), with /etc/prometheus/ moved under a temporary root."""
    loaded = load_spec(request.param)
    ctx = RenderContext(loaded, real_secrets(loaded), flow_matrix(loaded.region))
    node = loaded.region.nodes_with("monitoring")[0]
    _, files = render_host(ctx, node, [monitoring_layer])
    root = tmp_path_factory.mktemp(f"mon-{request.param}")
    moved = str(root) + PROMETHEUS_DIR
    for path, data in files.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data.replace(PROMETHEUS_DIR.encode(), moved.encode()))
    return root / PROMETHEUS_DIR.strip("/")


def _check(argv: list[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{' '.join(argv)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def test_prometheus_config_passes_promtool(tools: Path, rendered: Path) -> None:
    out = _check([str(tools / "promtool"), "check", "config", str(rendered / "prometheus.yml")])
    assert "1 rule files found" in out


def test_rules_pass_promtool(tools: Path, rendered: Path) -> None:
    out = _check([str(tools / "promtool"), "check", "rules", str(rendered / "rules" / "ekc.rules.yml")])
    assert "SUCCESS" in out


def test_web_configs_pass_promtool(tools: Path, rendered: Path) -> None:
    for name in ("web.yml", "alertmanager-web.yml"):
        _check([str(tools / "promtool"), "check", "web-config", str(rendered / name)])


def test_alertmanager_config_passes_amtool(tools: Path, rendered: Path) -> None:
    out = _check([str(tools / "amtool"), "check-config", str(rendered / "alertmanager.yml")])
    assert "receivers" in out


def test_alert_rules_unit_tests(tools: Path, tmp_path: Path) -> None:
    """promtool test rules: service level, abandoned, node down, Asterisk down, trunk, disk, backup."""
    loaded = load_spec("example")
    ctx = RenderContext(loaded, real_secrets(loaded), flow_matrix(loaded.region))
    _, files = render_host(ctx, loaded.region.nodes_with("monitoring")[0], [monitoring_layer])
    (tmp_path / "ekc.rules.yml").write_bytes(files[f"{PROMETHEUS_DIR}rules/ekc.rules.yml"])
    tests = sorted(RULE_TESTS.glob("*_test.yml"))
    assert tests, "no rule tests in tests/promtool/"
    for test in tests:
        shutil.copy(test, tmp_path / test.name)
    out = _check([str(tools / "promtool"), "test", "rules", *(str(tmp_path / t.name) for t in tests)])
    assert "SUCCESS" in out


def test_cluster_alert_rules_unit_tests(tools: Path, tmp_path: Path) -> None:
    """promtool test rules for the database cluster and the SIP edge (inventories/ha): no leader, a failover, a
    member down, replication lag, etcd's quorum; a proxy down, no proxy with the virtual address, the address
    moved, an Asterisk node out of the dispatcher."""
    loaded = load_spec("ha")
    ctx = RenderContext(loaded, real_secrets(loaded), flow_matrix(loaded.region))
    _, files = render_host(ctx, loaded.region.nodes_with("monitoring")[0], [monitoring_layer])
    (tmp_path / "ekc.rules.yml").write_bytes(files[f"{PROMETHEUS_DIR}rules/ekc.rules.yml"])
    tests = sorted((RULE_TESTS / "ha").glob("*_test.yml"))
    assert tests, "no rule tests in tests/promtool/ha/"
    for test in tests:
        shutil.copy(test, tmp_path / test.name)
    out = _check([str(tools / "promtool"), "test", "rules", *(str(tmp_path / t.name) for t in tests)])
    assert "SUCCESS" in out


def test_a_broken_rule_test_fails(tools: Path, tmp_path: Path) -> None:
    """The rule tests can fail: the same tests against rules whose service-level target moved fail."""
    loaded = load_spec("example")
    ctx = RenderContext(loaded, real_secrets(loaded), flow_matrix(loaded.region))
    _, files = render_host(ctx, loaded.region.nodes_with("monitoring")[0], [monitoring_layer])
    rules = files[f"{PROMETHEUS_DIR}rules/ekc.rules.yml"].replace(b"< 80\n", b"< 60\n")
    (tmp_path / "ekc.rules.yml").write_bytes(rules)
    shutil.copy(RULE_TESTS / "ekc_rules_test.yml", tmp_path / "ekc_rules_test.yml")
    proc = subprocess.run([str(tools / "promtool"), "test", "rules", str(tmp_path / "ekc_rules_test.yml")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "EkcServiceLevelLow" in proc.stdout + proc.stderr
