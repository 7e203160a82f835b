"""A region copy applied on its own lab, for lab tests: secrets, render, bundle, lab up, apply.

Every lab test module takes a copy of an inventory (``small`` or ``example``) under its own name and on its
own addresses, so labs never meet on this machine, and each xdist worker gets a subnet of its own:

    with applied_region(tmp, "callstest", source="example", prefix="10.236.") as region:
        region.run("pbx1", "asterisk -rx 'core show version'")

``prefix`` replaces the source's address prefix (``10.99.0.`` for ``small``, ``10.54.`` for ``example``) in
the whole spec, so subnets, nodes, trunk peers and the deploy host move together. ``edit`` changes the spec's
text further (roles, a schedule) before secrets are made.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

import pytest

from ekc.bundle.build import build_bundle
from ekc.bundle.region import LOCK_NAME, region_key, write_public_key
from ekc.bundle.serve import ServedCounts, serve_bundle
from ekc.cli.base import load_with_secrets
from ekc.engines.common import ApplyResult, deploy_key
from ekc.engines.pyinfra_engine import apply_pyinfra
from ekc.lab.model import Lab
from ekc.lab.nodes import lab_down, lab_up, ssh_command
from ekc.lab.region import lab_for
from ekc.render.build import write_build
from ekc.render.manifest import BuildManifest, load_manifest
from ekc.render.region import render_region
from ekc.spec.load import LoadedSpec, load_spec
from ekc.spec.secrets import SecretsView, init_secrets

REPO = Path(__file__).resolve().parents[2]
WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
VAULT_PASSWORD = "labtest-vault-password-not-a-secret-0123456789"
SOURCE_PREFIX = {"small": "10.99.0.", "example": "10.54.", "ha": "10.56."}


def worker_name(name: str) -> str:
    """``name`` on the first xdist worker, ``name<N>`` on worker N (a lab per worker)."""
    return name if WORKER == 0 else f"{name}{WORKER}"


@dataclass(frozen=True)
class AppliedRegion:
    """A region copy whose lab is up and applied: where everything is, and what the first apply did."""

    name: str
    region_dir: Path
    build: Path
    bundle: Path
    lock: Path
    key: Path
    lab: Lab
    bundle_port: int
    manifest: BuildManifest
    applied: ApplyResult
    served: ServedCounts
    spec: LoadedSpec
    secrets: SecretsView

    def apply(self) -> ApplyResult:
        """Apply the build again with pyinfra, the bundle served from the deploy host meanwhile."""
        return apply_build(self.bundle, self.build, self.key, self.lab, self.bundle_port)[0]

    def rerender(self, edit: Callable[[str], str]) -> BuildManifest:
        """Change the spec's text with ``edit`` and render again into ``build`` (same secrets, same bundle)."""
        spec_file = self.region_dir / "region.yml"
        spec_file.write_text(edit(spec_file.read_text(encoding="utf-8")), encoding="utf-8")
        with pytest.MonkeyPatch.context() as env:
            env.setenv("EKC_VAULT_PASSWORD", VAULT_PASSWORD)
            loaded, secrets = load_with_secrets(str(self.region_dir), None)
        write_build(render_region(loaded, secrets), self.build)
        return load_manifest(self.build)

    def deploy(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        """``deploy.py <args>`` as an operator runs it, with the region's vault password in the environment."""
        return subprocess.run([sys.executable, str(REPO / "deploy.py"), *args], capture_output=True, text=True,
                              timeout=timeout, check=False, cwd=REPO, env=self._deploy_env())

    def _deploy_env(self) -> dict[str, str]:
        return {**os.environ, "EKC_VAULT_PASSWORD": VAULT_PASSWORD}

    def _apply_args(self, records: Path, *args: str) -> list[str]:
        """``apply <region> -y`` with the lab's bundle, host keys and ``records``; the region's public bundle key
        is exported beside the spec first, as ``secrets init`` does."""
        write_public_key(self.region_dir, self.secrets)
        return ["apply", str(self.region_dir), "-y", "--bundle", str(self.bundle), "--known-hosts",
                str(self.lab.known_hosts), "--record-dir", str(records), *args]

    def cli_apply(self, records: Path, *args: str) -> tuple[dict[str, Any], str]:
        """``deploy.py apply <region> -y`` as an operator runs it: its apply record and its output (it must
        succeed)."""
        done = self.deploy(*self._apply_args(records, *args))
        assert done.returncode == 0, done.stdout + done.stderr
        record = max(records.glob("*.json"), key=lambda path: path.stat().st_mtime)
        return json.loads(record.read_text(encoding="utf-8")), done.stdout

    def start_apply(self, records: Path, output: IO[bytes], *args: str) -> subprocess.Popen[bytes]:
        """``deploy.py apply <region> -y`` started in a session of its own (so its whole process group, the
        engine's children with it, can be killed at once), its output going to ``output``."""
        return subprocess.Popen([sys.executable, str(REPO / "deploy.py"), *self._apply_args(records, *args)],
                                stdout=output, stderr=subprocess.STDOUT, cwd=REPO, env=self._deploy_env(),
                                start_new_session=True)

    def plan(self) -> str:
        """``deploy.py plan <region>`` as an operator runs it against the lab's hosts: its output (exit 0 when
        nothing would change, 1 when something would; anything else fails)."""
        done = self.deploy("plan", str(self.region_dir), "--known-hosts", str(self.lab.known_hosts))
        assert done.returncode in (0, 1), done.stdout + done.stderr
        return done.stdout

    def changed(self, edit: Callable[[str], str]) -> AppliedRegion:
        """The region with its spec changed by ``edit`` (a node added, drained) as a region's engineer does it:
        ``secrets init`` (a new node's certificate and keys), and the lab up for every node of the new spec.
        Nothing is applied; the same bundle serves."""
        spec_file = self.region_dir / "region.yml"
        spec_file.write_text(edit(spec_file.read_text(encoding="utf-8")), encoding="utf-8")
        done = self.deploy("secrets", "init", str(self.region_dir))
        assert done.returncode == 0, done.stdout + done.stderr
        with pytest.MonkeyPatch.context() as env:
            env.setenv("EKC_VAULT_PASSWORD", VAULT_PASSWORD)
            loaded, secrets = load_with_secrets(str(self.region_dir), None)
        lab = lab_for(loaded, secrets, self.key, state_dir=self.lab.state_dir)
        lab_up(lab)
        return replace(self, lab=lab, spec=loaded, secrets=secrets)

    def run(self, node: str, command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """A shell command on a node, as root over SSH."""
        return subprocess.run([*ssh_command(self.lab, node), "-o", "BatchMode=yes", command],
                              capture_output=True, text=True, timeout=timeout, check=False)

    def address(self, node: str) -> str:
        """The node's address."""
        return self.lab.node(node).address


def node_state(name: str, state: str) -> Callable[[str], str]:
    """An edit of a spec's text: node ``name`` in ``state`` (active, drain, absent)."""
    def edit(text: str) -> str:
        changed, count = re.subn(rf"(\{{name: {name}, [^}}]*?)(, state: \w+)?\}}", rf"\1, state: {state}}}", text)
        assert count == 1, f"no single entry for {name}"
        return changed
    return edit


def without_crm_and_monitoring(text: str, nodes: int) -> str:
    """A spec without its crm1 and mon1 nodes and without the ``security.flows`` to their roles (the last
    section of inventories/example and inventories/ha); ``nodes`` is how many node lines remain."""
    trimmed = re.sub(r"\n  - \{name: (crm1|mon1),[^\n]*", "", text)
    assert trimmed.count("\n  - {name: ") == nodes, "the spec's node lines changed shape"
    head, flows, rest = trimmed.partition("\nsecurity:\n  flows:\n")
    assert flows and "role:crm" in rest and "role:monitoring" in rest, "the spec's flows changed shape"
    return head + "\n"


def with_asterisk_nodes(text: str, keep: int) -> str:
    """A spec (inventories/ha) with only its first ``keep`` asterisk nodes (pbx1...), and without the pool's
    comment when one remains."""
    for n in range(keep + 1, 10):
        text = re.sub(rf"\n  - \{{name: pbx{n},[^\n]*roles: \[asterisk\]\}}", "", text)
    if keep == 1:
        text = re.sub(r"\n  # The Asterisk pool:[^\n]*\n  # [^\n]*", "", text)
    return text


def edge_and_asterisk_only(text: str, asterisk_nodes: int) -> str:
    """A spec (inventories/ha) with its proxies and its first ``asterisk_nodes`` Asterisk nodes only: no database
    node (nor etcd) and no CRM or monitoring node, so the lab holds the SIP edge and the pool and nothing else."""
    text = re.sub(r"\n  - \{name: db[123],[^\n]*", "", text)
    text = re.sub(r"\n  # [^\n]*(\n  # [^\n]*)*(?=\n  - \{name: crm1)", "", text)  # the cluster's comment
    text = with_asterisk_nodes(text, asterisk_nodes)
    text = re.sub(r"\ndatabase:\n(  [^\n]*\n)+", "\n", text)
    return without_crm_and_monitoring(text, 2 + asterisk_nodes)


def without_sip_edge(text: str) -> str:
    """A spec without its SIP edge (inventories/ha): the sip-proxy node lines, their comment and
    ``telephony.edge`` go, so trunks and phones talk to Asterisk directly again."""
    trimmed = re.sub(r"\n  # The SIP edge:[^\n]*|\n  - \{name: edge[0-9]+,[^\n]*roles: \[sip-proxy\]\}", "", text)
    trimmed = re.sub(r"\n  # Trunks and phones use this address[^\n]*\n  edge: \{[^\n]*\}", "", trimmed)
    assert "sip-proxy" not in trimmed and "\n  edge:" not in trimmed, "the spec's SIP edge changed shape"
    return trimmed


def region_copy(root: Path, name: str, *, source: str = "small", prefix: str,
                edit: Callable[[str], str] | None = None) -> Path:
    """``inventories/<source>`` as region ``name`` with its addresses moved to ``prefix`` (spec only)."""
    text = (REPO / "inventories" / source / "region.yml").read_text(encoding="utf-8")
    text = text.replace(SOURCE_PREFIX[source], prefix)
    if edit is not None:
        text = edit(text)
    region_dir = root / name
    region_dir.mkdir(parents=True)
    (region_dir / "region.yml").write_text(text, encoding="utf-8")
    return region_dir


def apply_build(bundle: Path, build: Path, key: Path, lab: Lab, port: int) -> tuple[ApplyResult, ServedCounts]:
    """One pyinfra apply while the deploy host serves the bundle; fail loudly with every host's error."""
    with serve_bundle(bundle, lab.gateway, port) as server:
        result = apply_pyinfra(build, key, known_hosts=lab.known_hosts)
    assert result.ok, [(h.host, h.error) for h in result.hosts]
    return result, server.counts


@contextmanager
def applied_region(root: Path, name: str, *, source: str = "small", prefix: str,
                   edit: Callable[[str], str] | None = None) -> Iterator[AppliedRegion]:
    """Secrets, render, bundle, lab up, apply; the lab goes down when the block ends, whatever happened."""
    region_dir = region_copy(root, name, source=source, prefix=prefix, edit=edit)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("EKC_VAULT_PASSWORD", VAULT_PASSWORD)
        init_secrets(load_spec(region_dir).region, region_dir, VAULT_PASSWORD.encode())
        loaded, secrets = load_with_secrets(str(region_dir), None)
    build, bundle = root / "build" / name, root / "bundles" / name
    write_build(render_region(loaded, secrets), build)
    manifest = load_manifest(build)
    lock = region_dir / LOCK_NAME
    build_bundle(manifest.packages(), manifest.python_requirements(), bundle, region_key(secrets), lock=lock,
                 region=name)
    with deploy_key(secrets) as key:
        lab = lab_for(loaded, secrets, key, state_dir=root / "lab")
        try:
            lab_up(lab)
            port = loaded.region.network.bundle_port
            applied, served = apply_build(bundle, build, key, lab, port)
            yield AppliedRegion(name, region_dir, build, bundle, lock, key, lab, port, manifest, applied, served,
                                loaded, secrets)
        finally:
            lab_down(lab)
