"""Both apply engines against real lab nodes: a fresh apply installs from the bundle only, a second apply
and the other engine change nothing, a hand-edited file is restored and fires its trigger, the files on
the nodes are the build's bytes, and ``limit`` touches only the hosts named.

The region is ``inventories/small`` plus a second node (so ``limit`` has a host to leave alone), copied to
a temporary folder ``applytest`` with a subnet of its own (10.231.7.0/24 on the first xdist worker), so the
lab never collides with other labs on the machine. Each round runs on freshly booted nodes, once with
pyinfra first and once with Ansible first. Building the bundle needs the connected side (Debian's archive).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from ekc.bundle.build import build_bundle
from ekc.bundle.serve import serve_bundle
from ekc.cli.base import load_with_secrets
from ekc.crypto.bundlekey import GpgKey
from ekc.engines.apply import engine
from ekc.engines.common import ApplyResult, deploy_key, wanted_packages
from ekc.lab.model import Lab
from ekc.lab.nodes import lab_down, lab_up, ssh_command
from ekc.lab.region import lab_for
from ekc.render.manifest import BuildManifest, load_manifest
from ekc.spec.load import LoadedSpec
from ekc.spec.secrets import SecretsView

pytestmark = [
    pytest.mark.lab,
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0 or not all(shutil.which(t) for t in ("systemd-nspawn", "debootstrap", "apt-ftparchive")),
        reason="needs root, systemd-nspawn, debootstrap and apt-ftparchive (apt-utils)",
    ),
]

REPO = Path(__file__).resolve().parents[2]
WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
REGION = "applytest" if WORKER == 0 else f"applytest{WORKER}"
NET = f"10.231.{7 + WORKER}."
VAULT_PASSWORD = "applytest-vault-password-not-a-secret-0123456789"
FIRST_NODE = "  - {name: ekc1, address: 10.99.0.10, roles: [asterisk, postgresql, crm, monitoring]}\n"
# Two components that meet (Asterisk writes its call records to PostgreSQL), one per node: both engines must
# converge them and leave each other nothing to do. The full one-node stack is test_contour.py's.
TWO_NODES = ("  - {name: ekc1, address: 10.99.0.10, roles: [asterisk]}\n"
             "  - {name: ekc2, address: 10.99.0.11, roles: [postgresql]}\n")
EDITED = "/etc/nftables.conf"  # its trigger (nft -f /etc/nftables.conf) runs in a container
SKIPPED = "/etc/chrony/chrony.conf"  # its trigger's service is skipped in a container (ConditionVirtualization)
BUNDLE_URI = f"http://{NET}1:8080/apt"
OTHER = {"pyinfra": "ansible", "ansible": "pyinfra"}


@dataclass(frozen=True)
class Built:
    """The test region, rendered, with its bundle and the deploy key on disk."""

    spec: LoadedSpec
    secrets: SecretsView
    build: Path
    bundle: Path
    key: Path

    @property
    def manifest(self) -> BuildManifest:
        """The render's manifest."""
        return load_manifest(self.build)


@dataclass(frozen=True)
class Round:
    """One round on fresh nodes: the engine that applies first, and the other one."""

    lab: Lab
    built: Built
    first: str

    @property
    def other(self) -> str:
        """The engine that follows the first one."""
        return OTHER[self.first]


def deploy(*args: str) -> None:
    """Run ``deploy.py`` as a user would, with the test region's vault password in the environment."""
    env = {**os.environ, "EKC_VAULT_PASSWORD": VAULT_PASSWORD}
    subprocess.run([sys.executable, str(REPO / "deploy.py"), *args], check=True, cwd=REPO, env=env,
                   capture_output=True, text=True)


def run_on(lab: Lab, node: str, command: str) -> str:
    """Run a shell command on a node as root; its stdout."""
    done = subprocess.run([*ssh_command(lab, node), "-o", "BatchMode=yes", command], capture_output=True,
                          text=True, timeout=120, check=True)
    return done.stdout


def apply(round_: Round, engine_name: str, *, limit: tuple[str, ...] = (), dry_run: bool = False) -> ApplyResult:
    """One apply of the round's build, the bundle served meanwhile."""
    built = round_.built
    with serve_bundle(built.bundle, round_.lab.gateway, 8080):
        return engine(engine_name)(built.build, built.key, limit=limit, dry_run=dry_run)


def remote_sha256(lab: Lab, node: str, path: str) -> str:
    """The sha256 of a file on a node."""
    return run_on(lab, node, f"sha256sum {path}").split()[0]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    """``inventories/small`` on two nodes (asterisk; postgresql), on its own subnet: secrets, render, bundle, key."""
    root = tmp_path_factory.mktemp("apply")
    region_dir = root / "inventories" / REGION
    region_dir.mkdir(parents=True)
    text = (REPO / "inventories/small/region.yml").read_text(encoding="utf-8")
    text = text.replace(FIRST_NODE, TWO_NODES).replace("10.99.0.", NET)
    (region_dir / "region.yml").write_text(text, encoding="utf-8")
    deploy("secrets", "init", str(region_dir))
    deploy("render", str(region_dir), "-o", str(root / "build"))
    with pytest.MonkeyPatch.context() as patch, ExitStack() as stack:
        patch.setenv("EKC_VAULT_PASSWORD", VAULT_PASSWORD)
        spec, secrets = load_with_secrets(str(region_dir), None)
        key = GpgKey(*(secrets.get("bundle", "signing_key", part) for part in ("private", "public", "fingerprint")))
        manifest = load_manifest(root / "build")
        build_bundle(manifest.packages(), [], root / "bundle", key, lock=None, region=REGION)
        key_file = stack.enter_context(deploy_key(secrets))
        yield Built(spec, secrets, root / "build", root / "bundle", key_file)


@pytest.fixture(scope="module", params=["pyinfra", "ansible"])
def fresh(request: pytest.FixtureRequest, built: Built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Round]:
    """Freshly booted nodes for one round; the lab is brought down after it."""
    lab = lab_for(built.spec, built.secrets, built.key, state_dir=tmp_path_factory.mktemp("lab") / "state")
    lab_down(lab)
    try:
        lab_up(lab)
        yield Round(lab, built, request.param)
    finally:
        lab_down(lab)


@pytest.fixture(scope="module")
def first_apply(fresh: Round) -> ApplyResult:
    """The first apply on the fresh nodes."""
    return apply(fresh, fresh.first)


@pytest.fixture(scope="module")
def second_apply(fresh: Round, first_apply: ApplyResult) -> ApplyResult:
    """The same engine again, right after."""
    return apply(fresh, fresh.first)


@pytest.fixture(scope="module")
def other_apply(fresh: Round, second_apply: ApplyResult) -> ApplyResult:
    """The other engine, right after."""
    return apply(fresh, fresh.other)


@dataclass(frozen=True)
class Edit:
    """A dry run and an apply after hand edits of two managed files on the first node."""

    dry_run: ApplyResult
    edited_after_dry_run: str
    applied: ApplyResult


@pytest.fixture(scope="module")
def edit(fresh: Round, other_apply: ApplyResult) -> Edit:
    """Hand-edit two managed files, look with a dry run, then apply with the first engine."""
    run_on(fresh.lab, "ekc1", f"echo '# edited by hand' >> {EDITED}; echo '# edited by hand' >> {SKIPPED}")
    dry = apply(fresh, fresh.other, dry_run=True)
    still = remote_sha256(fresh.lab, "ekc1", EDITED)
    return Edit(dry, still, apply(fresh, fresh.first))


@dataclass(frozen=True)
class Limited:
    """An apply limited to the first node after both nodes' /etc/hosts were edited."""

    result: ApplyResult
    first_sha: str
    second_sha: str


@pytest.fixture(scope="module")
def limited(fresh: Round, edit: Edit) -> Limited:
    """Edit /etc/hosts on both nodes, apply to ekc1 only (with the other engine), then converge both again."""
    for node in ("ekc1", "ekc2"):
        run_on(fresh.lab, node, "echo '# edited by hand' >> /etc/hosts")
    result = apply(fresh, fresh.other, limit=("ekc1",))
    seen = Limited(result, remote_sha256(fresh.lab, "ekc1", "/etc/hosts"),
                   remote_sha256(fresh.lab, "ekc2", "/etc/hosts"))
    apply(fresh, fresh.first)
    return seen


def test_the_first_apply_installs_the_packages_from_the_bundle_only(fresh: Round, first_apply: ApplyResult) -> None:
    manifest = fresh.built.manifest
    installed = "dpkg-query -W -f '${Package} ${db:Status-Status}\\n' | awk '$2==\"installed\"{print $1}'"
    missing = {h.name: sorted(set(wanted_packages(h)) - set(run_on(fresh.lab, h.name, installed).split()))
               for h in manifest.hosts}
    sources = {run_on(fresh.lab, h.name, "cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list "
                      "| grep -hoE '^(URIs:|deb) +\\S+' | awk '{print $2}' | sort -u").strip() for h in manifest.hosts}
    assert (first_apply.ok, missing, sources) == (True, {h.name: [] for h in manifest.hosts}, {BUNDLE_URI})


def test_a_second_apply_changes_nothing(second_apply: ApplyResult) -> None:
    assert (second_apply.ok, second_apply.changes, [h.triggers for h in second_apply.hosts]) == (True, 0, [(), ()])


def test_the_other_engine_then_changes_nothing(other_apply: ApplyResult) -> None:
    assert (other_apply.ok, other_apply.changes, [h.files for h in other_apply.hosts]) == (True, 0, [(), ()])


def test_a_dry_run_reports_a_hand_edit_and_changes_nothing(fresh: Round, edit: Edit) -> None:
    expected = fresh.built.manifest.host("ekc1")
    assert expected is not None
    wanted = expected.file(EDITED)
    assert (edit.dry_run.host("ekc1").files, edit.edited_after_dry_run != (wanted.sha256 if wanted else "")) == (
        (SKIPPED, EDITED), True)


def test_a_hand_edited_file_is_restored_and_its_trigger_runs(edit: Edit) -> None:
    host = edit.applied.host("ekc1")
    assert (host.files, host.triggers, host.skipped_triggers) == (
        (SKIPPED, EDITED), ("nft -f /etc/nftables.conf",), ("systemctl restart chrony",))


def test_files_on_the_nodes_are_byte_identical_to_the_build(fresh: Round, limited: Limited) -> None:
    differing = []
    for host in fresh.built.manifest.hosts:
        paths = " ".join(f.path for f in host.files)
        listing = run_on(fresh.lab, host.name, f"for f in {paths}; do echo \"$(sha256sum < $f | cut -d' ' -f1)"
                         f" $(stat -c '%a %U %G' $f) $f\"; done")
        have = set(listing.splitlines())
        differing += [f"{host.name}:{f.path}" for f in host.files
                      if f"{f.sha256} {int(f.mode, 8):o} {f.owner} {f.group} {f.path}" not in have]
    assert differing == []


def test_a_limited_apply_touches_only_the_hosts_named(fresh: Round, limited: Limited) -> None:
    expected = fresh.built.manifest.host("ekc1")
    wanted = expected.file("/etc/hosts") if expected else None
    assert ([h.host for h in limited.result.hosts], limited.first_sha == (wanted.sha256 if wanted else ""),
            limited.second_sha == limited.first_sha) == (["ekc1"], True, False)


def test_services_a_container_cannot_run_are_enabled_and_reported(fresh: Round, first_apply: ApplyResult) -> None:
    enabled = {h.name: run_on(fresh.lab, h.name, "systemctl is-enabled chrony auditd").split()
               for h in fresh.built.manifest.hosts}
    assert ([h.not_running for h in first_apply.hosts], enabled) == (
        [("auditd", "chrony"), ("auditd", "chrony")], {"ekc1": ["enabled", "enabled"], "ekc2": ["enabled", "enabled"]})
