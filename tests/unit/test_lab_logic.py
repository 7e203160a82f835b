"""The lab's and the rootfs cache's pure logic: names, file contents, validation, mirror discovery."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ekc.bundle.mirror import DEFAULT_MIRROR, deb822_uris, host_mirror, is_debian_archive, one_line_uris
from ekc.bundle.rootfs import (
    BASE_PACKAGES,
    KEYGEN_UNIT_NAME,
    RootfsError,
    RootfsInfo,
    build_rootfs,
    clean_identity,
    copy_tree,
    enable_archive,
    install_keygen_unit,
    package_set,
    rootfs_key,
)
from ekc.lab import nodes as labmod
from ekc.lab.model import (
    REPO_ROOT,
    Lab,
    LabError,
    LabNode,
    bridge_name,
    hosts_file,
    lab_problems,
    machine_name,
    network_file,
    nft_ruleset,
    nft_table_name,
)
from ekc.lab.nodes import console_tail, node_pid, ssh_command


def a_lab(**changes: object) -> Lab:
    """A valid two-node lab, with ``changes`` applied."""
    fields: dict[str, object] = {
        "region": "54",
        "cidr": "10.54.0.0/24",
        "gateway": "10.54.0.1",
        "nodes": (LabNode("pbx1", "10.54.0.11"), LabNode("db1", "10.54.0.21")),
        "authorized_keys": "ssh-ed25519 AAAA test",
        "state_dir": Path("/tmp/ekc-lab-unit"),
    }
    fields.update(changes)
    return Lab(**fields)  # type: ignore[arg-type]


# --- names -------------------------------------------------------------------------------------------


def test_bridge_name_is_prefixed_region() -> None:
    assert bridge_name("54") == "ekc-54"


def test_bridge_name_fits_an_interface_name() -> None:
    assert len(bridge_name("a-very-long-region-name")) == 15


def test_long_bridge_names_of_different_regions_differ() -> None:
    assert bridge_name("novosibirsk-oblast") != bridge_name("novosibirsk-okrug")


def test_nft_table_name_is_an_identifier() -> None:
    assert nft_table_name("nsk-54") == "ekc_lab_nsk_54"


def test_machine_name_is_region_prefixed() -> None:
    assert machine_name("54", "pbx1") == "54-pbx1"


# --- file contents -----------------------------------------------------------------------------------


def test_network_file_sets_the_static_address_and_nothing_else() -> None:
    assert network_file("10.54.0.11", "10.54.0.0/24") == (
        "# Written by the ekc lab: the node's address on the lab bridge. No gateway, so no default route.\n"
        "[Match]\n"
        "Name=host0\n"
        "\n"
        "[Network]\n"
        "Address=10.54.0.11/24\n"
        "DHCP=no\n"
        "IPv6AcceptRA=no\n"
        "LinkLocalAddressing=no\n"
    )


def test_network_file_takes_the_prefix_from_the_cidr() -> None:
    assert "Address=10.1.2.3/16\n" in network_file("10.1.2.3", "10.1.0.0/16")


def test_hosts_file_names_the_node_itself() -> None:
    assert hosts_file("pbx1", "10.54.0.11").splitlines()[-1] == "10.54.0.11\tpbx1"


def test_nft_ruleset_drops_forwarding_from_and_to_the_bridge_only() -> None:
    assert nft_ruleset("54") == (
        "table inet ekc_lab_54 {\n"
        '\tcomment "ekc lab 54: nothing is forwarded from or to ekc-54"\n'
        "\tchain forward {\n"
        "\t\ttype filter hook forward priority filter - 10; policy accept;\n"
        '\t\tiifname "ekc-54" oifname != "ekc-54" counter drop\n'
        '\t\toifname "ekc-54" iifname != "ekc-54" counter drop\n'
        "\t}\n"
        "}\n"
    )


# --- validation --------------------------------------------------------------------------------------


def test_a_valid_lab_has_no_problems() -> None:
    assert lab_problems(a_lab()) == []


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"region": "Bad_Region"}, "region 'Bad_Region': lowercase letters, digits and '-' only, at most 32"),
        ({"cidr": "10.54.0.1/24"}, "cidr '10.54.0.1/24': 10.54.0.1/24 has host bits set"),
        ({"gateway": "10.55.0.1"}, "gateway: 10.55.0.1 is not a host address of 10.54.0.0/24"),
        ({"nodes": (LabNode("pbx1", "10.54.0.255"),)}, "node pbx1: 10.54.0.255 is not a host address of 10.54.0.0/24"),
        ({"nodes": (LabNode("pbx1", "10.54.0.1"),)}, "node pbx1: 10.54.0.1 is already used in the lab"),
        ({"nodes": (LabNode("Pbx_1", "10.54.0.11"),)}, "node 'Pbx_1': not a hostname (lowercase letters, digits, '-')"),
        ({"nodes": (LabNode("a", "10.54.0.11"), LabNode("a", "10.54.0.12"))}, "node 'a': name used twice"),
        ({"nodes": (LabNode("a", "not-an-ip"),)}, "node a: 'not-an-ip' does not appear to be an IPv4 or IPv6 address"),
        ({"nodes": ()}, "the lab has no nodes"),
    ],
)
def test_lab_problems_name_each_mistake(changes: dict[str, object], expected: str) -> None:
    assert lab_problems(a_lab(**changes)) == [expected]


def test_default_state_dir_is_under_the_repository() -> None:
    assert a_lab(state_dir=None).state_path == REPO_ROOT / ".lab" / "54"


def test_unknown_node_is_an_error() -> None:
    with pytest.raises(LabError, match="no node 'web1'"):
        a_lab().node("web1")


# --- ssh, pids, console ------------------------------------------------------------------------------


def test_ssh_command_uses_the_labs_known_hosts_and_key() -> None:
    assert ssh_command(a_lab(ssh_private_key=Path("/k/id")), "db1") == [
        "ssh",
        "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/tmp/ekc-lab-unit/known_hosts",
        "-o", "LogLevel=ERROR",
        "-o", "ConnectTimeout=5",
        "-i", "/k/id", "-o", "IdentitiesOnly=yes",
        "root@10.54.0.21",
    ]


def test_a_pid_that_is_not_our_nspawn_is_not_a_running_node(tmp_path: Path) -> None:
    lab = a_lab(state_dir=tmp_path)
    node = lab.nodes[0]
    (tmp_path / "nodes" / node.name).mkdir(parents=True)
    (tmp_path / "nodes" / node.name / "pid").write_text(f"{os.getpid()}\n", encoding="utf-8")
    assert node_pid(lab, node) is None


def test_console_tail_strips_terminal_escapes(tmp_path: Path) -> None:
    lab = a_lab(state_dir=tmp_path)
    home = tmp_path / "nodes" / "pbx1"
    home.mkdir(parents=True)
    (home / "console.log").write_text("\x1b[0;32m  OK  \x1b[0m] Started ssh\r\nlast\n", encoding="utf-8")
    assert console_tail(lab, lab.nodes[0]) == "  OK  ] Started ssh\nlast"


def test_lab_up_refuses_an_invalid_lab(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(labmod, "preflight", list)
    with pytest.raises(LabError, match="the lab has no nodes"):
        labmod.lab_up(a_lab(nodes=()))


# --- rootfs: mirror, key, identity -------------------------------------------------------------------


def test_host_mirror_is_the_debian_archive_of_the_hosts_apt(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text("deb https://packages.example.com/apt cloud-sdk main\n")
    parts = tmp_path / "sources.list.d"
    parts.mkdir()
    (parts / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\nComponents: main\n"
    )
    assert host_mirror(tmp_path) == "http://mirror.example/debian"


def test_host_mirror_defaults_to_deb_debian_org(tmp_path: Path) -> None:
    assert host_mirror(tmp_path) == DEFAULT_MIRROR


def test_one_line_uris_skip_options_and_deb_src() -> None:
    text = "# c\ndeb [signed-by=/k.gpg arch=amd64] http://m/debian bookworm main\ndeb-src http://s/debian x\n"
    assert one_line_uris(text) == ["http://m/debian"]


def test_deb822_uris_skip_disabled_and_source_stanzas() -> None:
    text = ("Types: deb\nURIs: http://a/debian\nEnabled: no\n\nTypes: deb-src\nURIs: http://b/debian\n\n"
            "Types: deb deb-src\nURIs: http://c/debian http://d/debian\n")
    assert deb822_uris(text) == ["http://c/debian", "http://d/debian"]


@pytest.mark.parametrize(
    ("uri", "expected"),
    [("http://deb.debian.org/debian", True), ("https://m.example/debian/", True),
     ("http://deb.debian.org/debian-security", False), ("https://deb.nodesource.com/node_20.x", False)],
)
def test_is_debian_archive(uri: str, expected: bool) -> None:
    assert is_debian_archive(uri) is expected


def test_package_set_adds_the_base_sorted_and_unique() -> None:
    assert package_set(["python3", "nftables"]) == tuple(sorted({*BASE_PACKAGES, "nftables"}))


def test_rootfs_key_ignores_package_order_and_trailing_slash() -> None:
    assert rootfs_key("forky", ["b", "a"], "http://m/debian/") == rootfs_key("forky", ["a", "b"], "http://m/debian")


def test_rootfs_key_changes_with_the_suite() -> None:
    assert rootfs_key("forky", [], DEFAULT_MIRROR) != rootfs_key("trixie", [], DEFAULT_MIRROR)


def test_rootfs_info_round_trips() -> None:
    info = RootfsInfo("k", "forky", ("a", "b"), DEFAULT_MIRROR, 61.5, 2**28, "2026-01-01T00:00:00Z")
    assert RootfsInfo.from_json(info.to_json()) == info


def a_tree(root: Path) -> Path:
    """A fake just-bootstrapped tree carrying the builder's identity."""
    for path, text in {
        "etc/machine-id": "0123456789abcdef0123456789abcdef\n", "etc/hostname": "builder\n",
        "etc/resolv.conf": "nameserver 10.255.255.53\n", "etc/ssh/ssh_host_ed25519_key": "secret",
        "etc/ssh/ssh_host_ed25519_key.pub": "pub", "etc/ssh/sshd_config": "", "etc/apt/sources.list": "deb x",
        "etc/apt/sources.list.d/extra.sources": "Types: deb", "var/lib/apt/lists/m_debian_InRelease": "x",
        "var/cache/apt/archives/bash_5_amd64.deb": "x", "var/lib/dbus/machine-id": "0123", "usr/sbin/sshd": "",
    }.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text, encoding="utf-8")
    return root


def test_clean_identity_empties_the_machine_id(tmp_path: Path) -> None:
    clean_identity(a_tree(tmp_path))
    assert (tmp_path / "etc/machine-id").read_text(encoding="utf-8") == ""


@pytest.mark.parametrize(
    "gone",
    ["etc/hostname", "etc/resolv.conf", "etc/ssh/ssh_host_ed25519_key", "etc/ssh/ssh_host_ed25519_key.pub",
     "etc/apt/sources.list", "etc/apt/sources.list.d/extra.sources", "var/lib/apt/lists/m_debian_InRelease",
     "var/cache/apt/archives/bash_5_amd64.deb", "var/lib/dbus/machine-id"],
)
def test_clean_identity_removes_what_belongs_to_the_builder(tmp_path: Path, gone: str) -> None:
    clean_identity(a_tree(tmp_path))
    assert not (tmp_path / gone).exists()


def test_clean_identity_keeps_sshd_config(tmp_path: Path) -> None:
    clean_identity(a_tree(tmp_path))
    assert (tmp_path / "etc/ssh/sshd_config").exists()


@pytest.mark.parametrize("unit", ["ssh.service", "sshd@.service", "ssh.socket"])
def test_keygen_unit_is_wanted_by_every_sshd_unit(tmp_path: Path, unit: str) -> None:
    install_keygen_unit(a_tree(tmp_path))
    link = tmp_path / f"etc/systemd/system/{unit}.wants/{KEYGEN_UNIT_NAME}"
    assert os.readlink(link) == f"/etc/systemd/system/{KEYGEN_UNIT_NAME}"


def test_keygen_unit_runs_on_every_boot_not_only_the_first(tmp_path: Path) -> None:
    install_keygen_unit(a_tree(tmp_path))
    unit = (tmp_path / f"etc/systemd/system/{KEYGEN_UNIT_NAME}").read_text(encoding="utf-8")
    assert [line for line in unit.splitlines() if line.startswith("ConditionFirstBoot")] == []


def test_keygen_unit_is_not_installed_without_sshd(tmp_path: Path) -> None:
    install_keygen_unit(tmp_path)
    assert not (tmp_path / "etc/systemd/system" / KEYGEN_UNIT_NAME).exists()


def test_copy_tree_keeps_the_root_directory_mode(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "etc").mkdir(parents=True)
    src.chmod(0o755)
    copy_tree(src, tmp_path / "dest")
    assert (tmp_path / "dest").stat().st_mode & 0o777 == 0o755


def test_build_rootfs_refuses_an_existing_destination(tmp_path: Path) -> None:
    with pytest.raises(RootfsError, match="already exists"):
        build_rootfs(tmp_path)


def test_enable_archive_writes_a_signed_source_for_the_suite(tmp_path: Path) -> None:
    (tmp_path / "usr/share/keyrings").mkdir(parents=True)
    (tmp_path / "usr/share/keyrings/debian-archive-keyring.pgp").write_bytes(b"")
    enable_archive(tmp_path, suite="forky", mirror="http://m.example/debian/")
    assert (tmp_path / "etc/apt/sources.list.d/debian.sources").read_text(encoding="utf-8") == (
        "Types: deb\nURIs: http://m.example/debian\nSuites: forky\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.pgp\n"
    )


def test_enable_archive_turns_off_the_valid_until_check(tmp_path: Path) -> None:
    (tmp_path / "etc/apt/apt.conf.d").mkdir(parents=True)
    enable_archive(tmp_path, mirror="http://m.example/debian")
    assert (tmp_path / "etc/apt/apt.conf.d/99ekc-snapshot").read_text() == 'Acquire::Check-Valid-Until "false";\n'
