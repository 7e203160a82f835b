"""Checking a bundle: its signatures and checksums against the region's key (never the key it carries),
and an offline install of its packages in a networkless build root.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from ekc.bundle.buildroot import build_root, run_in_root, shell_quote
from ekc.bundle.lock import (
    NODE_KEYRING,
    REPO_SUITE,
    SUITE,
    SUMS_NAME,
    SUMS_SIGNATURE,
    bundle_files,
    file_sha256,
    node_sources,
    parse_sha256sums,
    signed_release_hashes,
)
from ekc.crypto import bundlekey

# Succeeds once the bundle's HTTP server in a networkless root answers on loopback.
_PORT_PROBE = 'import socket; socket.create_connection(("127.0.0.1", 8080))'


def _sums_problems(out: Path, entries: dict[str, str]) -> list[str]:
    """Files listed but missing, changed or not plain files, and files present but not listed."""
    problems: list[str] = []
    for rel, digest in sorted(entries.items()):
        path = out / rel
        if path.is_symlink():
            problems.append(f"{rel}: a symbolic link, not a file")
        elif not path.is_file():
            problems.append(f"{rel}: listed in {SUMS_NAME} but missing")
        elif file_sha256(path) != digest:
            problems.append(f"{rel}: sha256 does not match {SUMS_NAME} (changed after signing)")
    problems += [f"{rel}: not listed in {SUMS_NAME}" for rel in bundle_files(out) if rel not in entries]
    return problems


def _repository_problems(out: Path, public_key_armored: str, fingerprint: str) -> list[str]:
    """Whether APT would accept the repository: InRelease and Release.gpg signed by the region key, and
    every index file as the signed Release describes it."""
    dists = out / "apt" / "dists" / REPO_SUITE
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="ekc-release-") as tmp:
        signed = Path(tmp) / "Release"
        inrelease = bundlekey.check_signature(public_key_armored, dists / "InRelease", signed_text=signed)
        if not inrelease.good:
            problems.append(
                f"apt/dists/{REPO_SUITE}/InRelease: not signed by the region key {fingerprint}: {inrelease.message}"
            )
            return problems
        hashes = signed_release_hashes(signed.read_text(encoding="utf-8", errors="replace"))
    detached = bundlekey.check_signature(public_key_armored, dists / "Release.gpg", dists / "Release")
    if not detached.good:
        problems.append(f"apt/dists/{REPO_SUITE}/Release.gpg: not a signature of Release by the region key")
    for rel, digest in sorted(hashes.items()):
        path = dists / rel
        if not path.is_file() or file_sha256(path) != digest:
            problems.append(f"apt/dists/{REPO_SUITE}/{rel}: does not match the signed InRelease")
    return problems


def verify_bundle(out: Path, public_key_armored: str) -> list[str]:
    """Problems of the bundle at ``out`` checked against the region's public key; empty means good.

    ``public_key_armored`` must come from the region (its vault or inventory), never from the bundle:
    a forged bundle carries its own matching key. Checks the signature of SHA256SUMS, every file against
    it, that nothing unlisted was added, and the APT repository's own signatures.
    """
    try:
        with bundlekey.gpg_home() as home:
            keys = bundlekey.import_key(home, public_key_armored)
    except bundlekey.GpgError:
        return ["the region key given is not an armored OpenPGP public key"]
    fingerprint = keys[0].fingerprint if len(keys) == 1 else "(several keys)"
    sums, signature = out / SUMS_NAME, out / SUMS_SIGNATURE
    if not sums.is_file():
        return [f"{SUMS_NAME}: missing: nothing in {out} can be checked"]
    problems: list[str] = []
    if not signature.is_file():
        problems.append(f"{SUMS_SIGNATURE}: missing")
    else:
        check = bundlekey.check_signature(public_key_armored, signature, sums)
        if not check.good:
            problems.append(
                f"{SUMS_SIGNATURE}: not a valid signature of {SUMS_NAME} by the region key "
                f"{fingerprint}: {check.message}"
            )
    entries, line_problems = parse_sha256sums(sums.read_text(encoding="utf-8", errors="replace"))
    problems += line_problems + _sums_problems(out, entries)
    if (out / "apt" / "dists" / REPO_SUITE / "InRelease").is_file():
        problems += _repository_problems(out, public_key_armored, fingerprint)
    else:
        problems.append(f"apt/dists/{REPO_SUITE}/InRelease: missing")
    return problems


def offline_install_check(out: Path, public_key_armored: str, packages: Sequence[str], *, suite: str = SUITE) -> str:
    """Install ``packages`` from the bundle alone in a fresh, networkless copy of the build root.

    The copy has no APT source but the bundle, served over HTTP on its own loopback as the deploy host
    serves it to the nodes, trusted through ``Signed-By`` with ``public_key_armored`` only; it has no
    network at all. This is the target's own APT (and signature verifier), so a pass means a node accepts
    the bundle. Returns APT's output; raises :class:`BundleError` on failure.
    """
    with build_root(suite=suite, archive=False) as build:
        keyring = build.root / NODE_KEYRING.lstrip("/")
        keyring.parent.mkdir(parents=True, exist_ok=True)
        keyring.write_text(public_key_armored, encoding="utf-8")
        sources = build.root / "etc/apt/sources.list.d/ekc-bundle.sources"
        sources.write_text(node_sources("http://127.0.0.1:8080/apt"), encoding="utf-8")
        names = " ".join(shell_quote(p) for p in packages)
        script = "\n".join(
            [
                "python3 -m http.server --bind 127.0.0.1 --directory /srv/bundle 8080 >/dev/null 2>&1 &",
                f"for i in $(seq 100); do python3 -c '{_PORT_PROBE}' 2>/dev/null && break; sleep 0.1; done",
                "apt-get update -q --error-on=any",
                f"apt-get install -y -q --no-install-recommends {names}",
                f"dpkg-query -W {names}",
            ]
        )
        return run_in_root(
            build,
            script,
            what="install from the bundle alone",
            network=False,
            extra_binds=[f"--bind-ro={out.resolve()}:/srv/bundle"],
        )
