"""Live plan and verify against real applied servers: a copy of the small region, applied with pyinfra.

The region is ``inventories/small`` copied as ``verifytest`` on 10.232.9.0/24 (its own subnet, so it never
meets another lab): fresh secrets, a render, a bundle built for exactly its packages, the lab up, the bundle
served from the deploy host while pyinfra applies. Then:

- the live plan of an applied region changes nothing, and says why chrony and auditd are not running;
- verify passes, with the container-only units *skipped* as not provable, never passed;
- a hand edit of a managed file is named by the plan (with its impact) and fails verify (naming the file);
  applying again makes verify pass again;
- an unreachable host is an error that names it.

``applied_region`` is shared with ``test_contour.py``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from ekc.build import write_build
from ekc.bundle import build_bundle
from ekc.bundleflow import LOCK_NAME, region_key
from ekc.cli import load_with_secrets
from ekc.engines.common import ApplyResult, deploy_key
from ekc.engines.pyinfra_engine import apply_pyinfra
from ekc.lab import Lab, lab_down, lab_up, ssh_command
from ekc.labspec import lab_for
from ekc.live import UnreachableHosts, live_plan
from ekc.manifest import BuildManifest, load_manifest
from ekc.plan import Plan, format_plan
from ekc.publish import ServedCounts, serve_bundle
from ekc.render import render_region
from ekc.secrets import init_secrets
from ekc.spec import load_spec
from ekc.verify import VerifyResult, format_verify, run_verify

pytestmark = [pytest.mark.lab, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
VAULT_PASSWORD = "verifytest-vault-password-not-secret"
EDITED = "/etc/chrony/chrony.conf"


@dataclass(frozen=True)
class AppliedRegion:
    """A region copy whose lab is up and applied: where everything is, and what the first apply did."""

    name: str
    build: Path
    bundle: Path
    lock: Path
    key: Path
    lab: Lab
    bundle_port: int
    manifest: BuildManifest
    applied: ApplyResult
    served: ServedCounts

    def apply(self) -> ApplyResult:
        """Apply the build again with pyinfra, the bundle served from the deploy host meanwhile."""
        return _apply(self.bundle, self.build, self.key, self.lab, self.bundle_port)[0]

    def run(self, node: str, command: str) -> subprocess.CompletedProcess[str]:
        """A shell command on a node, as root over SSH."""
        return subprocess.run([*ssh_command(self.lab, node), "-o", "BatchMode=yes", command],
                              capture_output=True, text=True, timeout=120, check=False)


def region_copy(root: Path, name: str, third_octet: int) -> Path:
    """``inventories/small`` as region ``name`` on 10.232.<third_octet>.0/24 (spec only, no secrets)."""
    text = (REPO / "inventories" / "small" / "region.yml").read_text(encoding="utf-8")
    text = text.replace("10.99.0.", f"10.232.{third_octet}.").replace('code: "99"', 'code: "232"')
    region_dir = root / name
    region_dir.mkdir(parents=True)
    (region_dir / "region.yml").write_text(text, encoding="utf-8")
    return region_dir


def _apply(bundle: Path, build: Path, key: Path, lab: Lab, port: int) -> tuple[ApplyResult, ServedCounts]:
    """One pyinfra apply while the deploy host serves the bundle; fail loudly with every host's error."""
    with serve_bundle(bundle, lab.gateway, port) as server:
        result = apply_pyinfra(build, key, known_hosts=lab.known_hosts)
    assert result.ok, [(h.host, h.error) for h in result.hosts]
    return result, server.counts


@contextmanager
def applied_region(root: Path, name: str, third_octet: int) -> Iterator[AppliedRegion]:
    """Secrets, render, bundle, lab up, apply; the lab goes down when the block ends, whatever happened."""
    region_dir = region_copy(root, name, third_octet)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("EKC_VAULT_PASSWORD", VAULT_PASSWORD)
        init_secrets(load_spec(region_dir).region, region_dir, VAULT_PASSWORD.encode())
        loaded, secrets = load_with_secrets(str(region_dir), None)
    build, bundle = root / "build" / name, root / "bundles" / name
    write_build(render_region(loaded, secrets), build)
    manifest = load_manifest(build)
    lock = region_dir / LOCK_NAME
    build_bundle(manifest.packages(), [], bundle, region_key(secrets), lock=lock, region=name)
    with deploy_key(secrets) as key:
        lab = lab_for(loaded, secrets, key, state_dir=root / "lab")
        try:
            lab_up(lab)
            port = loaded.region.network.bundle_port
            applied, served = _apply(bundle, build, key, lab, port)
            yield AppliedRegion(name, build, bundle, lock, key, lab, port, manifest, applied, served)
        finally:
            lab_down(lab)


# --- fixtures: the applied region, then a hand edit and a second apply ---------------------------------------


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppliedRegion]:
    """``verifytest`` applied on its own lab."""
    name = "verifytest" if WORKER == 0 else f"verifytest{WORKER}"
    with applied_region(tmp_path_factory.mktemp("verifytest"), name, 9 + 20 * WORKER) as applied:
        yield applied


@dataclass(frozen=True)
class Run:
    """A plan and a verify run, taken at one moment."""

    plan: Plan
    verify: VerifyResult


def plan_and_verify(region: AppliedRegion, junit: Path) -> Run:
    """The live plan and a verify run (with the bundle lock) of the region as it is now."""
    plan = live_plan(region.manifest, region.key, known_hosts=region.lab.known_hosts)
    verify = run_verify(region.build, region.key, junit=junit, bundle_lock=region.lock,
                        known_hosts=region.lab.known_hosts)
    return Run(plan, verify)


@dataclass(frozen=True)
class Cycle:
    """After the apply; after a hand edit; after applying again."""

    applied: Run
    edited: Run
    reapplied: Run
    reapply: ApplyResult


@pytest.fixture(scope="module")
def cycle(region: AppliedRegion, tmp_path_factory: pytest.TempPathFactory) -> Cycle:
    """Plan and verify after the apply, after editing chrony.conf on the node by hand, and after re-applying."""
    out = tmp_path_factory.mktemp("junit")
    applied = plan_and_verify(region, out / "applied.xml")
    node = region.manifest.hosts[0].name
    edit = region.run(node, f"echo '# edited by hand' >> {EDITED}")
    assert edit.returncode == 0, edit.stderr
    edited = plan_and_verify(region, out / "edited.xml")
    reapply = region.apply()
    return Cycle(applied, edited, plan_and_verify(region, out / "reapplied.xml"), reapply)


# --- after the apply -----------------------------------------------------------------------------------------


def test_the_first_apply_installed_from_the_bundle(region: AppliedRegion) -> None:
    assert region.served.files > 0
    assert set(region.applied.hosts[0].packages) >= {"chrony", "nftables", "auditd"}


def test_the_live_plan_after_apply_changes_nothing(cycle: Cycle) -> None:
    plan = cycle.applied.plan
    assert not plan.changed, format_plan(plan)
    assert format_plan(plan).splitlines()[-1] == "Plan: no changes on 1 host"


def test_the_live_plan_says_why_container_units_count_as_satisfied(cycle: Cycle) -> None:
    notes = cycle.applied.plan.hosts[0].notes
    assert {n.split(" ", 1)[0] for n in notes} == {"chrony", "auditd"}
    assert all("ConditionVirtualization=" in n and "counts as satisfied" in n for n in notes), notes


def test_verify_after_apply_passes(cycle: Cycle) -> None:
    result = cycle.applied.verify
    assert result.ok, format_verify(result)
    assert result.exit_code == 0


def test_container_units_are_skipped_as_not_provable_never_passed(cycle: Cycle, region: AppliedRegion) -> None:
    host = region.manifest.hosts[0].name
    outcomes = {c.test: c for c in cycle.applied.verify.checks}
    for unit in ("chrony", "auditd"):
        check = outcomes[f"test_service_running[{host}:{unit}]"]
        assert check.outcome == "skipped"
        assert check.reason.startswith(f"not provable in a container: {unit} has ConditionVirtualization=")
    assert outcomes[f"test_service_running[{host}:ssh]"].outcome == "passed"


def test_verify_checks_versions_ports_and_the_firewall(cycle: Cycle, region: AppliedRegion) -> None:
    host = region.manifest.hosts[0].name
    passed = {c.test for c in cycle.applied.verify.checks if c.outcome == "passed"}
    assert f"test_package_at_locked_version[{host}:chrony]" in passed
    assert f"test_only_flow_matrix_ports_listen[{host}]" in passed
    assert f"test_firewall_drops_unlisted_connection[{host}:tcp/9100 from deploy host]" in passed
    assert f"test_firewall_admits_listed_connection[{host}:tcp/22 from deploy host]" in passed


def test_the_junit_xml_matches_the_summary(cycle: Cycle) -> None:
    result = cycle.applied.verify
    suite = next(ET.parse(result.junit).getroot().iter("testsuite"))
    assert int(suite.get("tests", "0")) == len(result.checks)
    assert int(suite.get("skipped", "0")) == sum(c.outcome == "skipped" for c in result.checks)
    assert int(suite.get("failures", "0")) + int(suite.get("errors", "0")) == result.failed == 0
    summary = result.summaries()[0]
    assert summary.passed + summary.skipped == len(result.checks)


# --- a hand edit, then apply again ---------------------------------------------------------------------------


def test_the_plan_names_the_hand_edited_file_with_its_impact(cycle: Cycle) -> None:
    plan = cycle.edited.plan
    assert plan.changed
    [change] = [f for h in plan.hosts for f in h.files]
    assert (change.path, change.change, change.attributes) == (EDITED, "changed", ("content",))
    assert change.trigger.action == "restart" and change.trigger.service == "chrony"
    line = next(line for line in format_plan(plan).splitlines() if EDITED in line)
    assert "restart: systemctl restart chrony — time sync restarts; no calls dropped" in line


def test_verify_fails_naming_the_hand_edited_file(cycle: Cycle, region: AppliedRegion) -> None:
    result = cycle.edited.verify
    host = region.manifest.hosts[0].name
    assert not result.ok and result.exit_code == 1
    failed = [c for c in result.checks if c.outcome in ("failed", "error")]
    assert [c.test for c in failed] == [f"test_file_matches_render[{host}:{EDITED}]"]
    assert failed[0].reason.startswith("content differs from the render")
    assert f"FAILED test_file_matches_render[{host}:{EDITED}]: content differs" in format_verify(result)


def test_applying_again_restores_the_file_and_verify_passes(cycle: Cycle) -> None:
    assert EDITED in cycle.reapply.hosts[0].files
    assert cycle.reapplied.verify.ok, format_verify(cycle.reapplied.verify)
    assert not cycle.reapplied.plan.changed, format_plan(cycle.reapplied.plan)


def test_an_unreachable_host_is_an_error_naming_it(region: AppliedRegion, tmp_path: Path) -> None:
    host = region.manifest.hosts[0]
    nowhere = host.address.rsplit(".", 1)[0] + ".250"  # in the lab's subnet, no node there
    moved = replace(region.manifest, hosts=(replace(host, address=nowhere),))
    with pytest.raises(UnreachableHosts, match=rf"cannot reach {host.name} \({nowhere}: "):
        live_plan(moved, region.key, known_hosts=region.lab.known_hosts)


def test_verify_of_an_unreachable_host_fails_before_any_test(region: AppliedRegion, tmp_path: Path) -> None:
    build = Path(shutil.copytree(region.build, tmp_path / "build"))
    manifest = (build / "manifest.json").read_text(encoding="utf-8")
    host = region.manifest.hosts[0]
    nowhere = host.address.rsplit(".", 1)[0] + ".250"
    (build / "manifest.json").write_text(manifest.replace(f'"{host.address}"', f'"{nowhere}"'), encoding="utf-8")
    with pytest.raises(UnreachableHosts, match=host.name):
        run_verify(build, region.key, junit=tmp_path / "junit.xml", known_hosts=region.lab.known_hosts)
    assert not (tmp_path / "junit.xml").exists()
