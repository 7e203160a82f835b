"""Atomic writes (``ekc.engines.atomic``): what the pyinfra engine does for each managed file given what the host
has (facts in, steps out), and the steps themselves, run here in a POSIX shell on a scratch directory: the staged
file has its owner and mode before it has content, a wrong upload changes nothing, the rename leaves no staged
file, and the files an interrupted apply staged are found and removed, nothing else."""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import subprocess
from pathlib import Path

import pytest
import yaml

from ekc.engines.atomic import (
    TEMP_GLOB,
    Upload,
    commit_command,
    put_steps,
    stage_command,
    stale_temps_command,
    temp_path,
)
from ekc.render.manifest import ManagedFile

REPO = Path(__file__).resolve().parents[2]
OWNER, GROUP = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
NEW = b"secret = new\n"
WANTED = ManagedFile("/etc/asterisk/pjsip.conf", "0640", OWNER, GROUP, hashlib.sha256(NEW).hexdigest(), "asterisk",
                     secret=True)
MATCHING = {"user": OWNER, "group": GROUP, "mode": 640}


def sh(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30, check=False)


def scratch(tmp_path: Path, name: str = "pjsip.conf") -> ManagedFile:
    return ManagedFile(str(tmp_path / name), WANTED.mode, OWNER, GROUP, WANTED.sha256, "asterisk", secret=True)


def test_a_file_is_staged_beside_its_target_hidden_and_named_after_it() -> None:
    assert temp_path("/etc/asterisk/pjsip.conf", "a1b2") == "/etc/asterisk/.pjsip.conf.ekc-tmp.a1b2"


@pytest.mark.parametrize("remote", [None, False, MATCHING], ids=["missing", "not-a-regular-file", "other-content"])
def test_other_content_is_staged_uploaded_and_committed(remote: dict[str, object] | bool | None) -> None:
    temp = "/etc/asterisk/.pjsip.conf.ekc-tmp.s1"
    sha = None if remote is None else "0" * 64
    assert put_steps(WANTED, remote, sha, "s1") == [stage_command(WANTED, temp), Upload(temp),
                                                    commit_command(WANTED, temp)]


def test_a_file_that_matches_in_every_way_needs_no_step() -> None:
    assert put_steps(WANTED, MATCHING, WANTED.sha256, "s1") == []


def test_matching_content_with_another_mode_or_owner_is_fixed_in_place_never_rewritten() -> None:
    steps = put_steps(WANTED, {"user": "nobody", "group": "nogroup", "mode": 644}, WANTED.sha256, "s1")
    assert steps == ["chmod -- 0640 /etc/asterisk/pjsip.conf", f"chown -- {OWNER}:{GROUP} /etc/asterisk/pjsip.conf"]


def test_the_staged_file_has_its_mode_and_owner_before_any_content(tmp_path: Path) -> None:
    file = scratch(tmp_path)
    temp = Path(temp_path(file.path, "s1"))
    done = sh(stage_command(file, str(temp)))
    assert done.returncode == 0, done.stderr
    status = temp.stat()
    assert (oct(status.st_mode & 0o7777), status.st_size, status.st_uid, status.st_gid) == (
        "0o640", 0, os.getuid(), os.getgid())


def test_a_staged_file_with_the_render_s_content_replaces_the_target_and_leaves_nothing_beside_it(
        tmp_path: Path) -> None:
    file = scratch(tmp_path)
    (tmp_path / "pjsip.conf").write_bytes(b"secret = old\n")
    temp = Path(temp_path(file.path, "s1"))
    assert sh(stage_command(file, str(temp))).returncode == 0
    temp.write_bytes(NEW)  # the upload: into the staged file, which keeps its mode
    done = sh(commit_command(file, str(temp)))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "pjsip.conf").read_bytes() == NEW
    assert oct((tmp_path / "pjsip.conf").stat().st_mode & 0o7777) == "0o640"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pjsip.conf"]


def test_an_upload_cut_short_fails_and_leaves_the_target_untouched(tmp_path: Path) -> None:
    file = scratch(tmp_path)
    (tmp_path / "pjsip.conf").write_bytes(b"secret = old\n")
    temp = Path(temp_path(file.path, "s1"))
    assert sh(stage_command(file, str(temp))).returncode == 0
    temp.write_bytes(NEW[:5])
    done = sh(commit_command(file, str(temp)))
    assert (done.returncode, done.stderr.strip()) == (
        1, f"{file.path}: the uploaded content has another sha256 than the render's")
    assert (tmp_path / "pjsip.conf").read_bytes() == b"secret = old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pjsip.conf"]


def test_the_rename_replaces_a_symbolic_link_itself_not_the_file_it_points_to(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").write_bytes(b"not managed\n")
    (tmp_path / "pjsip.conf").symlink_to(tmp_path / "elsewhere")
    file = scratch(tmp_path)
    temp = Path(temp_path(file.path, "s1"))
    assert sh(stage_command(file, str(temp))).returncode == 0
    temp.write_bytes(NEW)
    assert sh(commit_command(file, str(temp))).returncode == 0
    assert ((tmp_path / "pjsip.conf").is_symlink(), (tmp_path / "elsewhere").read_bytes()) == (False, b"not managed\n")


def test_staged_files_left_by_an_interrupted_apply_are_listed_and_removed_nothing_else(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    left = [tmp_path / "a" / ".x.conf.ekc-tmp.k1ll3d", tmp_path / ".y.conf.ekc-tmp.0badc0de"]
    kept = [tmp_path / "a" / "x.conf", tmp_path / "a" / ".x.conf", tmp_path / "ekc-tmp.z", tmp_path / "a" / "deeper"]
    for path in left + kept[:3]:
        path.write_text("partial")
    kept[3].mkdir()
    (kept[3] / ".w.ekc-tmp.1").write_text("below a managed directory: not ekc's to look at")
    directories = [str(tmp_path / "a"), str(tmp_path), str(tmp_path / "not-yet")]
    listed = sh(stale_temps_command(directories))
    assert (listed.returncode, sorted(listed.stdout.split())) == (0, sorted(map(str, left)))
    assert sh(stale_temps_command(directories, delete=True)).returncode == 0
    assert ([p.exists() for p in left], [p.exists() for p in kept]) == ([False, False], [True] * 4)


def test_the_ansible_role_removes_staged_files_by_the_same_name() -> None:
    defaults = yaml.safe_load((REPO / "roles/common/defaults/main.yml").read_text(encoding="utf-8"))
    specs = yaml.safe_load((REPO / "roles/common/meta/argument_specs.yml").read_text(encoding="utf-8"))
    options = specs["argument_specs"]["main"]["options"]
    assert (defaults["common__staged_glob"], options["common__staged_glob"]["default"]) == (TEMP_GLOB, TEMP_GLOB)
