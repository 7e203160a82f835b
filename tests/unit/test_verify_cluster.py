"""verify's judgement of a database cluster's members, from what patronictl and etcdctl print."""

from __future__ import annotations

import json

from ekc.verify.checks import verify_checks
from ekc.verify.cluster import ClusterCheck, cluster_problems
from tests.support.render import placeholder_render

PATRONI = ClusterCheck("db2", "10.56.0.22", "patroni")
ETCD = ClusterCheck("db2", "10.56.0.22", "etcd")


def _members(*rows: tuple[str, str, str]) -> str:
    return json.dumps([{"Member": m, "Role": r, "State": s, "Cluster": "ekc-54"} for m, r, s in rows])


def test_a_streaming_member_of_a_cluster_with_one_leader_is_sound() -> None:
    out = _members(("db1", "Leader", "running"), ("db2", "Sync Standby", "streaming"), ("db3", "Replica", "streaming"))
    assert cluster_problems(PATRONI, out) == []


def test_no_leader_two_leaders_a_stopped_or_missing_member_are_reported() -> None:
    none = _members(("db1", "Replica", "running"), ("db2", "Replica", "streaming"))
    assert cluster_problems(PATRONI, none) == ["the cluster has 0 leaders (none); it needs one"]
    two = _members(("db1", "Leader", "running"), ("db2", "Leader", "running"))
    assert "the cluster has 2 leaders (db1, db2); it needs one" in cluster_problems(PATRONI, two)
    stopped = _members(("db1", "Leader", "running"), ("db2", "Replica", "stopped"))
    assert cluster_problems(PATRONI, stopped) == ["db2 is stopped as Replica; a member runs or streams"]
    missing = _members(("db1", "Leader", "running"))
    assert cluster_problems(PATRONI, missing) == ["db2 is not a member of the cluster (members: db1)"]
    assert cluster_problems(PATRONI, "Error: etcd unreachable")[0].startswith("patroni did not answer")


def test_etcd_health_is_read_from_etcdctl_json() -> None:
    assert cluster_problems(ETCD, '[{"endpoint": "https://10.56.0.22:2379", "health": true}]') == []
    assert cluster_problems(ETCD, '[{"endpoint": "https://10.56.0.22:2379", "health": false}]')
    assert cluster_problems(ETCD, "")


def test_verify_checks_every_member_of_the_ha_region_and_nothing_in_the_example() -> None:
    manifest = placeholder_render("ha").manifest
    found = verify_checks(manifest, [h.name for h in manifest.hosts]).clusters
    assert sorted(c.id for c in found) == ["db1:etcd", "db1:patroni", "db2:etcd", "db2:patroni", "db3:etcd",
                                           "db3:patroni"]
    assert "--endpoints https://10.56.0.21:2379" in next(c for c in found if c.id == "db1:etcd").command
    example = placeholder_render("example").manifest
    assert verify_checks(example, [h.name for h in example.hosts]).clusters == ()
