"""Live plan and verify against real applied servers: a copy of the small region, applied with pyinfra.

The region is ``inventories/small`` copied as ``verifytest`` on 10.232.9.0/24 (its own subnet, so it never
meets another lab): fresh secrets, a render, a bundle built for exactly its packages, the lab up, the bundle
served from the deploy host while pyinfra applies. Then:

- the live plan of an applied region changes nothing, and says why chrony and auditd are not running;
- verify passes, with the container-only units *skipped* as not provable, never passed;
- a hand edit of a managed file is named by the plan (with its impact) and fails verify (naming the file);
  applying again makes verify pass again;
- an unreachable host is an error that names it.

``applied_region`` (``tests/support/labregion.py``) is shared with the other lab modules.
"""

from __future__ import annotations

import os
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from ekc.engines.common import ApplyResult
from ekc.engines.live import live_plan
from ekc.engines.ssh import UnreachableHosts
from ekc.render.plan import Plan
from ekc.render.plan_text import format_plan
from ekc.verify.run import VerifyResult, format_verify, run_verify
from tests.support.labregion import AppliedRegion, applied_region

pytestmark = [pytest.mark.lab, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
VAULT_PASSWORD = "verifytest-vault-password-not-secret"
EDITED = "/etc/chrony/chrony.conf"


def asterisk_only(text: str) -> str:
    """The small region's node with the asterisk role only (the full stack is test_contour.py's)."""
    return text.replace("roles: [asterisk, postgresql, crm, monitoring]", "roles: [asterisk]")


# --- fixtures: the applied region, then a hand edit and a second apply ---------------------------------------


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppliedRegion]:
    """``verifytest`` applied on its own lab."""
    name = "verifytest" if WORKER == 0 else f"verifytest{WORKER}"
    with applied_region(tmp_path_factory.mktemp("verifytest"), name, prefix=f"10.232.{9 + 20 * WORKER}.",
                        edit=asterisk_only) as applied:
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
