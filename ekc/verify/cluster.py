"""verify's checks of a database cluster: each Patroni member in the cluster, one leader, each etcd member healthy.

A host whose render has the ``patroni`` component must be a running member of a cluster that has exactly one
leader (the member itself runs, or streams from the leader); a host with the ``etcd`` component must answer as a
healthy member over TLS with its own certificate. The commands run on the host; what they print is judged here,
so the judgement is unit tested without hosts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ekc.render.components.dbcluster import ETCD_CLIENT_PORT, PATRONI_CONFIG, PATRONI_UNIT
from ekc.render.components.etcd import CA, CERT, KEY
from ekc.render.manifest import HostManifest

ClusterKind = Literal["patroni", "etcd"]
MEMBER_STATES = ("running", "streaming")


@dataclass(frozen=True)
class ClusterCheck:
    """One member of the database cluster or of etcd, checked on its own host."""

    host: str
    address: str
    kind: ClusterKind

    @property
    def id(self) -> str:
        return f"{self.host}:{self.kind}"

    @property
    def command(self) -> str:
        """What runs on the host; it prints JSON."""
        if self.kind == "patroni":
            return f"patronictl -c {PATRONI_CONFIG} list -f json"
        return (f"ETCDCTL_API=3 etcdctl --endpoints https://{self.address}:{ETCD_CLIENT_PORT} --cacert {CA} "
                f"--cert {CERT} --key {KEY} endpoint health -w json")


def cluster_checks(hosts: Sequence[HostManifest]) -> tuple[ClusterCheck, ...]:
    """The cluster checks of ``hosts``, from the components their renders carry; a drained database node, whose
    Patroni is wanted stopped, has left the cluster and is not checked as a member."""
    checks: list[ClusterCheck] = []
    for host in hosts:
        components = {f.component for f in host.files}
        if any(s.name == PATRONI_UNIT and not s.running for s in host.services):
            components.discard("patroni")
        checks += [ClusterCheck(host.name, host.address, kind) for kind in ("patroni", "etcd") if kind in components]
    return tuple(checks)


def cluster_problems(check: ClusterCheck, output: str) -> list[str]:
    """What is wrong, judged from the command's output (an empty list: the member is sound)."""
    try:
        data = json.loads(output)
    except json.JSONDecodeError:
        return [f"{check.kind} did not answer: {output.strip()[:300] or 'no output'}"]
    if check.kind == "etcd":
        healthy = isinstance(data, list) and data and all(isinstance(e, dict) and e.get("health") for e in data)
        return [] if healthy else [f"etcd on {check.host} is not healthy: {output.strip()[:300]}"]
    members = {m.get("Member"): m for m in data if isinstance(m, dict)} if isinstance(data, list) else {}
    problems = []
    leaders = sorted(str(name) for name, m in members.items() if m.get("Role") == "Leader")
    if len(leaders) != 1:
        problems.append(f"the cluster has {len(leaders)} leaders ({', '.join(leaders) or 'none'}); it needs one")
    me = members.get(check.host)
    if me is None:
        problems.append(f"{check.host} is not a member of the cluster (members: {', '.join(map(str, members))})")
    elif me.get("State") not in MEMBER_STATES:
        problems.append(f"{check.host} is {me.get('State')} as {me.get('Role')}; a member runs or streams")
    return problems
