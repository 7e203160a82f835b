"""``deploy.py bundle …``: build, check and serve the offline bundle."""

from __future__ import annotations

from pathlib import Path

import click

from ekc.cli.base import Fail, guarded, load_with_secrets, vault_option, verified_bundle
from ekc.spec.load import load_spec


@click.group()
def bundle() -> None:
    """Build and check the offline bundle (signed APT repository, wheels, SBOM, lock)."""


@bundle.command("build")
@click.argument("spec")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), help="Default: bundles/<region>.")
@click.option("--relock", is_flag=True, help="Resolve versions afresh and rewrite inventories/<region>/bundle.lock.")
@vault_option
@guarded
def bundle_build(spec: str, output: Path | None, relock: bool, vault_password_file: Path | None) -> None:
    """Build the bundle on the connected side: every package the region's hosts need, and its closure."""
    from ekc.bundle.region import build_region_bundle  # noqa: PLC0415

    loaded, secrets = load_with_secrets(spec, vault_password_file)
    result = build_region_bundle(loaded, secrets, output or Path("bundles") / loaded.name, relock=relock)
    click.echo(
        f"bundle: {result.out}: {result.debs} packages, {result.wheels} wheels, "
        f"{result.total_bytes / 2**20:.1f} MiB, signed by {result.fingerprint} ({result.seconds} s)"
        + ("; lock written" if result.lock_written else "; reproduced the lock")
    )


@bundle.command("verify")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The region's public bundle key (default: inventories/<region>/bundle-signing-key.asc).")
@guarded
def bundle_verify(directory: Path, key: Path | None) -> None:
    """Check a bundle's signatures and every file's checksum; name each file that does not match."""
    from ekc.bundle.check import verify_bundle  # noqa: PLC0415
    from ekc.bundle.region import trusted_key  # noqa: PLC0415

    problems = verify_bundle(directory, trusted_key(directory, key))
    for problem in problems:
        click.echo(problem, err=True)
    if problems:
        raise Fail(f"{directory}: {len(problems)} problems; do not carry this bundle into the contour", 1)
    click.echo(f"{directory}: signature and every checksum are good")


@bundle.command("serve")
@click.argument("spec")
@click.option("--bundle", "bundle_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Default: bundles/<region>.")
@click.option("--pidfile", type=click.Path(dir_okay=False, path_type=Path), help="Write the server's PID here.")
@guarded
def bundle_serve(spec: str, bundle_dir: Path | None, pidfile: Path | None) -> None:
    """Serve a verified bundle to the nodes at network.deploy_host:bundle_port until stopped (for Ansible
    runs outside deploy.py; `apply` serves it by itself)."""
    import os  # noqa: PLC0415
    import signal  # noqa: PLC0415
    import threading  # noqa: PLC0415

    from ekc.bundle.serve import serve_bundle  # noqa: PLC0415

    loaded = load_spec(spec)
    bundle_dir = verified_bundle(loaded, bundle_dir)
    net = loaded.region.network
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with serve_bundle(bundle_dir, net.deploy_host, net.bundle_port):
        if pidfile is not None:
            pidfile.write_text(f"{os.getpid()}\n", encoding="utf-8")
        click.echo(f"serving {bundle_dir} at http://{net.deploy_host}:{net.bundle_port}/ (stop: SIGTERM or Ctrl-C)")
        stop.wait()
    if pidfile is not None:
        pidfile.unlink(missing_ok=True)


COMMANDS = (bundle,)
