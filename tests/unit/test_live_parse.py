"""The pure logic of the live plan and of verify: the remote script's answer in, the observed build, the plan,
the checks and their test ids, the firewall probes, ``ss`` and JUnit parsing out. No host is needed."""

from __future__ import annotations

import grp
import json
import os
import pwd
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from ekc.bundle.lock import BundleLock, DebEntry
from ekc.engines.live import (
    FileState,
    HostObservation,
    observe_script,
    observed_host,
    observed_manifest,
    parse_observation,
    select_hosts,
)
from ekc.engines.ssh import LiveError, SshAccess, UnreachableHosts
from ekc.engines.units import (
    END_MARKER,
    Condition,
    UnitState,
    Virtualization,
    parse_conditions,
    read_unit_probe,
    unit_object_path,
)
from ekc.render.manifest import BuildManifest, HostManifest, ManagedFile, ServiceState, Trigger, load_manifest
from ekc.render.plan import diff_builds
from ekc.render.plan_text import format_plan
from ekc.verify.checks import (
    Listener,
    file_problems,
    firewall_probes,
    parse_listeners,
    probe_command,
    probe_result,
    unexpected_listeners,
    verify_checks,
)
from ekc.verify.run import (
    BUILD_ENV,
    VERIFY_DIR,
    VERIFY_MODULE,
    CheckResult,
    VerifyResult,
    format_verify,
    host_of_test,
    parse_junit,
    pytest_argv,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = load_manifest(REPO / "tests" / "golden" / "example")
SMALL = load_manifest(REPO / "tests" / "golden" / "small")
SHA_A, SHA_B = "a" * 64, "b" * 64
RESTART_CHRONY = Trigger("restart", "chrony", "systemctl restart chrony", "time sync restarts; no calls dropped")
# Debian forky's chrony unit after a daemon-reload: systemd keeps ConditionResult=no but resets each state to 0.
CHRONY_CONDITIONS = (
    '{"type":"a(sbbsi)","data":[["ConditionCapability",false,false,"CAP_SYS_TIME",0],'
    '["ConditionVirtualization",true,false,"wsl",0],["ConditionVirtualization",true,true,"container",0]]}'
)
NSPAWN = Virtualization("systemd-nspawn", "none")

HOST = HostManifest(
    name="ekc1",
    address="10.232.9.10",
    roles=("asterisk",),
    packages=("chrony", "nftables", "python3"),
    files=(
        ManagedFile("/etc/chrony/chrony.conf", "0644", "root", "root", SHA_A, "base", trigger=RESTART_CHRONY),
        ManagedFile("/etc/secret.conf", "0640", "root", "asterisk", SHA_B, "base", secret=True),
        ManagedFile("/etc/new.conf", "0644", "root", "root", SHA_B, "base"),
    ),
    services=(ServiceState("chrony"), ServiceState("ssh"), ServiceState("nftables")),
    absent=("/etc/apt/sources.list.d/debian.sources", "/etc/gone"),
)
WANTED = BuildManifest("0.1.0", "inventories/verifytest/region.yml", "c" * 64, "232", "Test", False, (HOST,), ())

ANSWER = "\n".join([
    "V\tsystemd-nspawn\tnone",
    "F\t0\tok",
    "F\t1\tok",
    "F\t2\tmissing",
    f"H\t{SHA_A}  /etc/chrony/chrony.conf",
    f"H\t{SHA_B}  /etc/secret.conf",
    "M\t644 root root\t/etc/chrony/chrony.conf",
    "M\t600 root asterisk\t/etc/secret.conf",
    "A\t0\tpresent",
    "A\t1\tmissing",
    "P\tchrony\tii \t4.9-2",
    "P\tnftables\tun \t",
    "P\tpython3\trc \t3.14.7-3",
    "P\tpython3\tii \t3.14.7-3",
    f"S\t0\tenabled\tinactive\tno\t2530508482\t{CHRONY_CONDITIONS}",
    "S\t1\tenabled\tactive\tyes\t2530508000\t-",
    "S\t2\tnot-found\tinactive\tno\t0\t-",
    END_MARKER,
]) + "\n"


# --- the script ----------------------------------------------------------------------------------------------


def test_the_script_reads_every_managed_path_package_and_service_in_one_run() -> None:
    script = observe_script(HOST)
    lines = script.splitlines()
    assert [line for line in lines if line.startswith(("f ", "a ", "o_", "units "))] == [
        'f 0 /etc/chrony/chrony.conf && set -- "$@" /etc/chrony/chrony.conf',
        'f 1 /etc/secret.conf && set -- "$@" /etc/secret.conf',
        'f 2 /etc/new.conf && set -- "$@" /etc/new.conf',
        "a 0 /etc/apt/sources.list.d/debian.sources",
        "a 1 /etc/gone",
        "o_0=/org/freedesktop/systemd1/unit/chrony_2eservice",
        "o_1=/org/freedesktop/systemd1/unit/ssh_2eservice",
        "o_2=/org/freedesktop/systemd1/unit/nftables_2eservice",
        "units chrony.service ssh.service nftables.service",
    ]
    assert any(line.startswith("dpkg-query -W") and line.endswith("chrony nftables python3 2>/dev/null || true")
               for line in lines)
    # a fixed number of processes whatever the number of files: one sha256sum and one stat for all of them
    assert script.count("sha256sum") == 1 and script.count("stat --printf") == 1
    assert lines[-1] == "printf 'E\tend\\n'"


def test_the_script_runs_in_a_posix_shell(tmp_path: Path) -> None:
    regular, link, directory = tmp_path / "a file", tmp_path / "link", tmp_path / "dir"
    regular.write_bytes(b"hello\n")
    regular.chmod(0o640)
    link.symlink_to(regular)
    directory.mkdir()
    files = tuple(replace(HOST.files[0], path=str(p)) for p in (regular, link, directory, tmp_path / "none"))
    host = replace(HOST, files=files, packages=(), services=(), absent=(str(link), str(tmp_path / "gone")))
    answer = subprocess.run(["sh", "-s"], input=observe_script(host), capture_output=True, text=True,
                            check=True).stdout
    seen = parse_observation(host, answer)
    user = (os.stat(regular).st_uid, os.stat(regular).st_gid)
    assert [(f.kind, f.sha256[:8], f.mode) for f in seen.files] == [
        ("ok", "5891b5b5", "0640"), ("notfile", "", ""), ("notfile", "", ""), ("missing", "", "")]
    assert (seen.files[0].owner, seen.files[0].group) == (pwd.getpwuid(user[0]).pw_name, grp.getgrgid(user[1]).gr_name)
    assert seen.present_absent == (str(link),)


def test_a_file_answered_under_another_name_is_an_error() -> None:
    swapped = ANSWER.replace("H\t" + SHA_A + "  /etc/chrony/chrony.conf", "H\t" + SHA_A + "  /etc/other")
    with pytest.raises(LiveError, match=r"ekc1: could not read the host.s answer: /etc/chrony/chrony\.conf"):
        parse_observation(HOST, swapped)
    with pytest.raises(LiveError, match="ekc1: the host's answer is incomplete"):
        parse_observation(HOST, ANSWER.replace(f"H\t{SHA_B}  /etc/secret.conf\n", ""))


def test_paths_with_shell_characters_are_quoted() -> None:
    odd = replace(HOST, files=(replace(HOST.files[0], path="/etc/a b;rm -rf x"),), packages=())
    script = observe_script(odd)
    assert "f 0 '/etc/a b;rm -rf x' && set -- \"$@\" '/etc/a b;rm -rf x'" in script
    assert "dpkg-query" not in script  # no packages: a bare dpkg-query would list every package


def test_unit_object_paths_are_escaped_like_systemd() -> None:
    assert unit_object_path("systemd-random-seed") == (
        "/org/freedesktop/systemd1/unit/systemd_2drandom_2dseed_2eservice"
    )
    assert unit_object_path("postgresql@18-main") == "/org/freedesktop/systemd1/unit/postgresql_4018_2dmain_2eservice"
    assert unit_object_path("1x.timer") == "/org/freedesktop/systemd1/unit/_31x_2etimer"


# --- the answer ----------------------------------------------------------------------------------------------


def test_the_answer_becomes_an_observation() -> None:
    seen = parse_observation(HOST, ANSWER)
    assert seen.virtualization == NSPAWN and NSPAWN.in_container
    assert seen.files == (
        FileState("/etc/chrony/chrony.conf", "ok", SHA_A, "0644", "root", "root"),
        FileState("/etc/secret.conf", "ok", SHA_B, "0600", "root", "asterisk"),
        FileState("/etc/new.conf", "missing"),
    )
    assert seen.present_absent == ("/etc/apt/sources.list.d/debian.sources",)
    assert {p.name: p.installed for p in seen.packages} == {"chrony": True, "nftables": False, "python3": True}
    chrony = seen.units[0]
    assert chrony.skipped_by_condition
    assert [str(c) for c in chrony.container_conditions(NSPAWN)] == [
        "ConditionVirtualization=|wsl", "ConditionVirtualization=|!container",
    ]
    assert chrony.unmet(Virtualization()) == ()  # on a real server its trigger condition holds
    assert not seen.units[2].found


def test_an_answer_cut_short_is_an_error_naming_the_host() -> None:
    with pytest.raises(LiveError, match="ekc1: the host's answer was cut short"):
        parse_observation(HOST, ANSWER.replace(END_MARKER, ""))


def test_a_garbled_record_is_an_error_naming_the_host() -> None:
    with pytest.raises(LiveError, match="ekc1: could not read"):
        parse_observation(HOST, "F\tseven\tok\n" + END_MARKER + "\n")


def test_systemds_own_condition_results_are_used_when_it_kept_them() -> None:
    conditions = parse_conditions('{"data":[["ConditionPathExists",false,true,"/etc/initrd-release",1],'
                                  '["ConditionVirtualization",false,true,"container",-1],'
                                  '["ConditionKernelCommandLine",false,false,"x",0]]}')
    unit = UnitState("random-seed", "static", "inactive", "no", True, conditions)
    assert [str(c) for c in unit.unmet(Virtualization())] == ["ConditionVirtualization=!container"]
    assert parse_conditions("-") == ()


def test_auditds_guard_is_evaluated_for_the_host() -> None:
    guard = Condition("ConditionVirtualization", trigger=False, negate=True, parameter="container")
    audit = UnitState("auditd", "enabled", "failed", "no", True, (guard,))
    assert audit.skipped_by_condition  # a failed start before the guard existed leaves it "failed"
    assert audit.container_conditions(NSPAWN) == (guard,)
    assert audit.unmet(Virtualization("none", "kvm")) == ()


def test_virtualization_values() -> None:
    vm = Virtualization("none", "kvm")
    assert (NSPAWN.matches("container"), NSPAWN.matches("systemd-nspawn"), NSPAWN.matches("vm")) == (True, True, False)
    assert (vm.matches("yes"), vm.matches("no"), vm.matches("kvm"), vm.matches("private-users")) == (
        True, False, True, None)


def test_a_unit_never_started_is_not_skipped_by_a_condition() -> None:
    never = UnitState("chrony", "enabled", "inactive", "no", condition_checked=False)
    assert not never.skipped_by_condition


def test_the_single_unit_probe_answer() -> None:
    unit, virt = read_unit_probe(f"V\tnone\tnone\nS\t0\tenabled\tactive\tyes\t1\t-\n{END_MARKER}\n", "ssh")
    assert (unit.is_enabled, unit.is_running, virt.in_container) == (True, True, False)
    with pytest.raises(LiveError, match="no answer about ssh"):
        read_unit_probe("garbage\n", "ssh")


# --- the observed build and the live plan --------------------------------------------------------------------


def observed() -> tuple[HostManifest, tuple[str, ...]]:
    return observed_host(HOST, parse_observation(HOST, ANSWER))


def test_the_observed_host_has_the_renders_shape() -> None:
    host, _ = observed()
    assert host.packages == ("chrony", "python3")
    assert [(f.path, f.mode, f.group, f.sha256) for f in host.files] == [
        ("/etc/chrony/chrony.conf", "0644", "root", SHA_A), ("/etc/secret.conf", "0600", "asterisk", SHA_B),
    ]
    assert host.files[0].trigger == RESTART_CHRONY and host.files[1].secret
    assert host.services == (ServiceState("chrony"), ServiceState("ssh"))  # nftables: no such unit yet
    assert host.absent == ("/etc/gone",)  # debian.sources is still there


def test_a_unit_skipped_by_its_condition_counts_as_satisfied_with_a_note() -> None:
    _, notes = observed()
    assert notes == (
        "chrony is not running: its unit skips itself here, ConditionVirtualization=|wsl, "
        "ConditionVirtualization=|!container not met (this host is a systemd-nspawn container); "
        "apply cannot start it, so it counts as satisfied",
    )


def test_the_live_plan_is_the_ordinary_diff_with_impacts() -> None:
    host, _ = observed()
    plan = diff_builds(observed_manifest(WANTED, [host]), WANTED)
    text = format_plan(plan)
    assert text.splitlines()[0] == "Spec: cccccccccccc (compared with the live hosts)"
    assert "  ~ /etc/secret.conf (mode 0600 → 0640)" in text
    assert "  + /etc/new.conf" in text
    assert "  packages: + nftables" in text
    assert "  services: + nftables" in text
    assert "  delete: - /etc/apt/sources.list.d/debian.sources" in text
    assert "/etc/chrony/chrony.conf" not in text


def test_a_hand_edited_file_is_named_with_its_impact() -> None:
    edited = ANSWER.replace(f"H\t{SHA_A}", f"H\t{'e' * 64}")
    host, _ = observed_host(HOST, parse_observation(HOST, edited))
    plan = diff_builds(observed_manifest(WANTED, [host]), WANTED)
    change = next(f for f in plan.hosts[0].files if f.path == "/etc/chrony/chrony.conf")
    assert (change.change, change.attributes, change.trigger) == ("changed", ("content",), RESTART_CHRONY)
    line = next(line for line in format_plan(plan).splitlines() if "/etc/chrony/chrony.conf" in line)
    assert line.split() == ["~", "/etc/chrony/chrony.conf", "restart:", "systemctl", "restart", "chrony", "—",
                            "time", "sync", "restarts;", "no", "calls", "dropped"]


def test_a_converged_host_plans_nothing() -> None:
    converged = HostObservation(
        host="ekc1", virtualization=Virtualization(),
        files=tuple(FileState(f.path, "ok", f.sha256, f.mode, f.owner, f.group) for f in HOST.files),
        present_absent=(),
        packages=(),
        units=tuple(UnitState(s.name, "enabled", "active") for s in HOST.services),
    )
    host, notes = observed_host(replace(HOST, packages=()), converged)
    assert not diff_builds(observed_manifest(WANTED, [host]), replace(WANTED, hosts=(replace(HOST, packages=()),))
                           ).changed
    assert notes == ()


def test_limit_selects_hosts_and_rejects_unknown_names() -> None:
    assert [h.name for h in select_hosts(EXAMPLE, ["db1", "pbx1"]).hosts] == ["pbx1", "db1"]
    assert select_hosts(EXAMPLE, None) is EXAMPLE
    with pytest.raises(LiveError, match="no host pbx9 in the region"):
        select_hosts(EXAMPLE, ["pbx9"])


def test_unreachable_hosts_are_named() -> None:
    one = UnreachableHosts({"pbx1": "10.54.0.11: Connection timed out"})
    assert str(one) == "cannot reach pbx1 (10.54.0.11: Connection timed out)"
    two = UnreachableHosts({"pbx1": "10.54.0.11: x", "db1": "10.54.0.21: y"})
    assert str(two) == "cannot reach 2 hosts: db1 (10.54.0.21: y); pbx1 (10.54.0.11: x)"


def test_ssh_access_never_uses_passwords_and_pins_host_keys() -> None:
    access = SshAccess(Path("/k/id"), Path("/k/known_hosts"))
    argv = access.argv("10.0.0.1")
    assert argv[-1] == "root@10.0.0.1"
    for option in ("BatchMode=yes", "PasswordAuthentication=no", "StrictHostKeyChecking=accept-new",
                   "UserKnownHostsFile=/k/known_hosts", "IdentityFile=/k/id", "IdentitiesOnly=yes"):
        assert option in argv
    assert "    ControlPath /tmp/cm/%C" in access.config_text(Path("/tmp/cm")).splitlines()


# --- verify: checks and their ids ----------------------------------------------------------------------------


def test_every_check_has_a_readable_id() -> None:
    lock = BundleLock("forky", "amd64", "3.14", ("chrony",), (),
                      (DebEntry("chrony", "4.9-2", "amd64", "0" * 64, 1, "pool/c.deb"),))
    checks = verify_checks(EXAMPLE, ["pbx1"], lock)
    assert "pbx1:/etc/chrony/chrony.conf" in [c.id for c in checks.files]
    assert {c.id for c in checks.services} >= {"pbx1:ssh", "pbx1:nftables", "pbx1:chrony", "pbx1:auditd"}
    assert [c.id for c in checks.absent] == [
        "pbx1:/etc/apt/sources.list.d/debian.sources", "pbx1:/etc/asterisk/users.conf"]
    assert [(c.id, c.version) for c in checks.locked] == [("pbx1:chrony", "4.9-2")]
    assert len(checks.packages) == len(EXAMPLE.hosts[0].packages)
    assert [c.id for c in checks.ports] == ["pbx1"]
    assert [p.id for p in checks.denied] == ["pbx1:tcp/9100 from db1"]
    assert [p.id for p in checks.admitted] == ["pbx1:tcp/22 from db1"]


def test_node_exporter_is_probed_from_a_node_that_is_not_the_monitoring_node() -> None:
    pbx1 = EXAMPLE.host("pbx1")
    assert pbx1 is not None
    denied, admitted = firewall_probes(EXAMPLE, pbx1)
    assert (denied.source, denied.source_host, denied.port, denied.admitted) == ("db1", "db1", 9100, False)
    assert denied.why == ("the flow matrix does not admit tcp/9100 (node_exporter metrics) from db1 (10.54.0.21); "
                          "it admits it only from mon1 (10.54.0.41/32)")
    assert (admitted.port, admitted.admitted) == (22, True)


def test_a_single_node_region_is_probed_from_the_deploy_host() -> None:
    ekc1 = SMALL.host("ekc1")
    assert ekc1 is not None
    denied, admitted = firewall_probes(SMALL, ekc1)
    assert (denied.source, denied.source_address, denied.source_host, denied.port) == (
        "deploy host", "10.99.0.1", None, 9100)
    assert denied.id == "ekc1:tcp/9100 from deploy host"
    assert (admitted.source, admitted.port) == ("deploy host", 22)


def test_the_verify_module_collects_one_test_per_check_from_the_manifest() -> None:
    env = {**os.environ, BUILD_ENV: str(REPO / "tests" / "golden" / "example"), "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", str(VERIFY_MODULE), "--collect-only", "-q", "-p", "no:cacheprovider",
         "-o", "addopts=", "--hosts=ssh://root@10.54.0.11,ssh://root@10.54.0.41"],
        cwd=REPO, env=env, capture_output=True, text=True, check=False,
    )
    ids = [line.split("::", 1)[1] for line in done.stdout.splitlines() if "::" in line]
    assert done.returncode == 0, done.stdout + done.stderr
    assert "test_file_matches_render[pbx1:/etc/chrony/chrony.conf]" in ids
    assert "test_service_running[mon1:chrony]" in ids
    assert "test_firewall_drops_unlisted_connection[mon1:tcp/9100 from pbx1]" in ids
    assert "test_package_at_locked_version[no bundle lock]" in ids
    assert not any(i.startswith("test_file_matches_render[db1:") for i in ids)


def test_kinds_with_nothing_to_check_are_left_out(tmp_path: Path) -> None:
    raw = json.loads((REPO / "tests" / "golden" / "small" / "manifest.json").read_text(encoding="utf-8"))
    for host in raw["hosts"]:
        host["absent"] = []
    (tmp_path / "manifest.json").write_text(json.dumps(raw), encoding="utf-8")
    assert load_manifest(tmp_path).hosts[0].absent == ()
    env = {**os.environ, BUILD_ENV: str(tmp_path), "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", str(VERIFY_MODULE), "--collect-only", "-q", "-p", "no:cacheprovider",
         "-o", "addopts=", "--hosts=ssh://root@10.99.0.10"],
        cwd=REPO, env=env, capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "test_file_matches_render[ekc1:/etc/hostname]" in done.stdout
    assert "NOTSET" not in done.stdout and "test_path_absent" not in done.stdout
    assert "test_cluster_member" not in done.stdout  # a region with one database node has no cluster to check
    assert "2 deselected" in done.stdout


def test_the_verify_module_is_skipped_in_a_plain_test_run() -> None:
    env = {k: v for k, v in os.environ.items() if k != BUILD_ENV}
    done = subprocess.run([sys.executable, "-m", "pytest", str(VERIFY_MODULE), "-q", "-p", "no:cacheprovider",
                           "-o", "addopts="], cwd=REPO, env=env, capture_output=True, text=True, check=False)
    assert "1 skipped" in done.stdout, done.stdout  # exit 5: nothing ran, which is the point


def test_pytest_runs_the_module_with_one_testinfra_host_per_host() -> None:
    argv = pytest_argv(EXAMPLE, Path("/t/ssh_config"), Path("/t/key"), Path("/t/junit.xml"))
    assert str(VERIFY_DIR) in argv
    assert "--hosts=ssh://root@10.54.0.11,ssh://root@10.54.0.21,ssh://root@10.54.0.31,ssh://root@10.54.0.41" in argv
    assert {"--ssh-config=/t/ssh_config", "--ssh-identity-file=/t/key", "--junitxml=/t/junit.xml"} <= set(argv)


# --- verify: what the hosts answer ---------------------------------------------------------------------------


SS = """\
udp   UNCONN 0      0          127.0.0.1:323        0.0.0.0:*
udp   UNCONN 0      0              [::1]:323           [::]:*
udp   UNCONN 0      0     127.0.0.53%lo:53         0.0.0.0:*
udp   UNCONN 0      0            0.0.0.0:5060       0.0.0.0:*
tcp   LISTEN 0      128          0.0.0.0:22         0.0.0.0:*
tcp   LISTEN 0      128             [::]:22            [::]:*
tcp   LISTEN 0      4096               *:8080             *:*
tcp   LISTEN 0      4096   [::ffff:127.0.0.1]:5038       *:*
"""


def test_ss_output_is_parsed_and_loopback_is_ignored() -> None:
    listeners = parse_listeners(SS)
    assert Listener("tcp", "::", 22) in listeners and Listener("tcp", "*", 8080) in listeners
    assert [item.loopback for item in listeners] == [True, True, True, False, False, False, False, True]
    ekc1 = [f for f in SMALL.flows if f.target == "ekc1"]
    assert unexpected_listeners(listeners, ekc1) == ["tcp/8080 on *"]


def test_rtp_ranges_count_as_listed() -> None:
    ekc1 = [f for f in SMALL.flows if f.target == "ekc1"]
    assert unexpected_listeners([Listener("udp", "0.0.0.0", 10500)], ekc1) == []
    assert unexpected_listeners([Listener("udp", "0.0.0.0", 11000)], ekc1) == ["udp/11000 on 0.0.0.0"]


def test_udp_client_sockets_on_ephemeral_ports_are_not_listeners() -> None:
    pbx1 = [f for f in EXAMPLE.flows if f.target == "pbx1"]
    seen = [Listener("udp", "0.0.0.0", 41064), Listener("udp", "::", 41415), Listener("tcp", "*", 41000),
            Listener("udp", "0.0.0.0", 20000)]
    assert unexpected_listeners(seen, pbx1, ephemeral=(32768, 60999)) == ["tcp/41000 on *", "udp/20000 on 0.0.0.0"]
    assert len(unexpected_listeners(seen, pbx1)) == 4


def test_file_problems_name_every_difference() -> None:
    want = HOST.files[1]
    assert file_problems(want, FileState(want.path, "ok", SHA_B, "0640", "root", "asterisk")) == []
    assert file_problems(want, FileState(want.path, "ok", SHA_A, "0644", "asterisk", "asterisk")) == [
        f"content differs from the render (sha256 {SHA_A[:12]}…, rendered {SHA_B[:12]}…)",
        "mode 0644, rendered 0640",
        "owner asterisk, rendered root",
    ]
    assert file_problems(want, FileState(want.path, "missing")) == ["/etc/secret.conf is missing"]


def test_the_tcp_probe_tells_connected_from_refused() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        connected = subprocess.run(probe_command("127.0.0.1", "127.0.0.1", port), shell=True,
                                   capture_output=True, text=True, check=False).stdout
    refused = subprocess.run(probe_command("127.0.0.1", "127.0.0.1", port), shell=True,
                             capture_output=True, text=True, check=False).stdout
    unbindable = subprocess.run(probe_command("192.0.2.254", "127.0.0.1", port), shell=True,
                                capture_output=True, text=True, check=False).stdout
    assert (probe_result(connected)[0], probe_result(refused)[0], probe_result(unbindable)[0]) == (
        "connected", "refused", "nobind")
    assert probe_result("") == ("error", "no output")


# --- verify: the report --------------------------------------------------------------------------------------


JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="ekc-verify" errors="0" failures="1" skipped="2" tests="5">
<testcase classname="test_hosts" name="test_package_installed[ekc1:chrony]" time="0.1"/>
<testcase classname="test_hosts" name="test_file_matches_render[ekc1:/etc/chrony/chrony.conf]" time="0.1">
<failure message="content differs from the render (sha256 eeee…, rendered aaaa…)">details</failure></testcase>
<testcase classname="test_hosts" name="test_service_running[ekc1:chrony]" time="0.1">
<skipped type="pytest.skip" message="not provable in a container: chrony has ConditionVirtualization=|!container">
</skipped></testcase>
<testcase classname="test_hosts" name="test_only_flow_matrix_ports_listen[ekc1]" time="0.1"/>
<testcase classname="test_hosts" name="test_package_at_locked_version[no bundle lock]" time="0.0">
<skipped type="pytest.skip" message="no bundle lock given: package versions not checked"/></testcase>
</testsuite></testsuites>
"""


def test_junit_is_read_back_per_check() -> None:
    checks = parse_junit(JUNIT)
    assert [(c.host, c.outcome) for c in checks] == [
        ("ekc1", "passed"), ("ekc1", "failed"), ("ekc1", "skipped"), ("ekc1", "passed"), ("", "skipped"),
    ]
    assert checks[2].reason == "not provable in a container: chrony has ConditionVirtualization=|!container"


def test_host_of_a_test_id() -> None:
    assert host_of_test("test_firewall_drops_unlisted_connection[pbx1:tcp/9100 from db1]") == "pbx1"
    assert host_of_test("test_only_flow_matrix_ports_listen[pbx1]") == "pbx1"
    assert host_of_test("test_package_at_locked_version[no bundle lock]") == ""
    assert host_of_test("test_x") == ""


def test_the_summary_counts_per_host_and_gives_reasons() -> None:
    result = VerifyResult(("ekc1",), parse_junit(JUNIT), Path("/t/junit.xml"), 4.2, 1, "")
    assert not result.ok and result.exit_code == 1
    assert format_verify(result) == (
        "ekc1: 2 passed, 1 failed, 1 skipped\n"
        "  FAILED test_file_matches_render[ekc1:/etc/chrony/chrony.conf]: content differs from the render "
        "(sha256 eeee…, rendered aaaa…)\n"
        "  skipped test_service_running[ekc1:chrony]: not provable in a container: chrony has "
        "ConditionVirtualization=|!container\n"
        "(no host): 0 passed, 0 failed, 1 skipped\n"
        "  skipped test_package_at_locked_version[no bundle lock]: no bundle lock given: package versions not "
        "checked\n"
        "Verify FAILED: 2 passed, 1 failed, 2 skipped on 1 host in 4.2 s; JUnit XML: /t/junit.xml\n"
    )


def test_skips_alone_pass_but_an_empty_run_does_not() -> None:
    skipped = (CheckResult("ekc1", "test_service_running[ekc1:chrony]", "skipped", "not provable"),)
    assert VerifyResult(("ekc1",), skipped, Path("j"), 1.0, 0, "").ok
    assert not VerifyResult(("ekc1",), (), Path("j"), 1.0, 5, "no tests ran").ok
