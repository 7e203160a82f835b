"""``deploy.py plan | apply | verify``: the live hosts against the render."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click

from ekc.cli.base import (
    EXIT_CHANGES,
    EXIT_OK,
    Fail,
    default_build_dir,
    default_known_hosts,
    guarded,
    known_hosts_option,
    limit_option,
    load_with_secrets,
    vault_option,
    verified_bundle,
)


@click.command()
@click.argument("spec")
@click.option("--against", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Compare with an older build directory instead of the live hosts.")
@limit_option
@known_hosts_option
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@vault_option
@guarded
def plan(spec: str, against: Path | None, limit: tuple[str, ...], known_hosts: Path | None, as_json: bool,
         vault_password_file: Path | None) -> None:
    """Show what apply would change per host, and the impact of each change. Exit 1 when something would.

    Without --against the hosts are read over SSH: checksums of managed files, package versions, services.
    """
    from ekc.engines.common import deploy_key  # noqa: PLC0415
    from ekc.engines.live import live_plan  # noqa: PLC0415
    from ekc.engines.ssh import LiveError  # noqa: PLC0415
    from ekc.render.manifest import load_manifest  # noqa: PLC0415
    from ekc.render.plan import diff_builds  # noqa: PLC0415
    from ekc.render.plan_text import format_plan, plan_to_json  # noqa: PLC0415
    from ekc.render.region import render_region  # noqa: PLC0415

    loaded, secrets = load_with_secrets(spec, vault_password_file)
    wanted = render_region(loaded, secrets).manifest
    if against is not None:
        try:
            old = load_manifest(against)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise Fail(f"{against} is not an ekc build directory ({exc})") from None
        result = diff_builds(old, wanted)
    else:
        with deploy_key(secrets) as key:
            try:
                result = live_plan(wanted, key, limit=limit or None,
                                   known_hosts=default_known_hosts(loaded, secrets, known_hosts))
            except LiveError as exc:
                raise Fail(str(exc), 1) from None
    click.echo(plan_to_json(result) if as_json else format_plan(result, color=sys.stdout.isatty()))
    sys.exit(EXIT_CHANGES if result.changed else EXIT_OK)


@click.command()
@click.argument("spec")
@click.option("--engine", type=click.Choice(["pyinfra", "ansible"]), default="pyinfra", show_default=True)
@click.option("--bundle", "bundle_dir", type=click.Path(file_okay=False, path_type=Path),
              help="The bundle to serve to the nodes (default: bundles/<region>).")
@limit_option
@known_hosts_option
@click.option("--dry-run", is_flag=True, help="Say what would change; change nothing.")
@click.option("-y", "--yes", is_flag=True, help="Apply without asking.")
@vault_option
@guarded
def apply(spec: str, engine: str, bundle_dir: Path | None, limit: tuple[str, ...], known_hosts: Path | None,
          dry_run: bool, yes: bool, vault_password_file: Path | None) -> None:
    """Converge the hosts to the render: the bundle as the only package source, then packages, files,
    each changed file's reload or restart, and services. Exit 1 if a host failed."""
    import tempfile  # noqa: PLC0415

    from ekc.bundle.serve import serve_bundle  # noqa: PLC0415
    from ekc.engines.common import deploy_key  # noqa: PLC0415
    from ekc.render.build import write_build  # noqa: PLC0415
    from ekc.render.region import render_region  # noqa: PLC0415

    loaded, secrets = load_with_secrets(spec, vault_password_file)
    bundle_dir = verified_bundle(loaded, bundle_dir)
    net = loaded.region.network
    known_hosts = default_known_hosts(loaded, secrets, known_hosts)
    with tempfile.TemporaryDirectory(prefix="ekc-apply-") as tmp, deploy_key(secrets) as key:
        build = Path(tmp) / "build"
        write_build(render_region(loaded, secrets), build)
        if not (dry_run or yes):
            _confirm_plan(build, key, limit, known_hosts)
        with serve_bundle(bundle_dir, net.deploy_host, net.bundle_port):
            result = _run_engine(engine, build, key, limit, known_hosts, dry_run=dry_run)
    click.echo(format_apply(result))
    sys.exit(EXIT_OK if result.ok else EXIT_CHANGES)


def _run_engine(engine: str, build: Path, key: Path, limit: tuple[str, ...], known_hosts: Path | None, *,
                dry_run: bool) -> Any:
    from ekc.engines.ansible_engine import apply_ansible  # noqa: PLC0415
    from ekc.engines.pyinfra_engine import apply_pyinfra  # noqa: PLC0415

    logging.getLogger("pyinfra").setLevel(logging.ERROR)  # its host-key notices are not the user's business
    run = apply_pyinfra if engine == "pyinfra" else apply_ansible
    return run(build, key, limit=limit, dry_run=dry_run, known_hosts=known_hosts)


def _confirm_plan(build: Path, key: Path, limit: tuple[str, ...], known_hosts: Path | None) -> None:
    """Show the live plan and ask before changing anything (``-y`` skips this)."""
    from ekc.engines.live import live_plan  # noqa: PLC0415
    from ekc.engines.ssh import LiveError  # noqa: PLC0415
    from ekc.render.manifest import load_manifest  # noqa: PLC0415
    from ekc.render.plan_text import format_plan  # noqa: PLC0415

    try:
        result = live_plan(load_manifest(build), key, limit=limit or None, known_hosts=known_hosts)
    except LiveError as exc:
        raise Fail(str(exc), 1) from None
    click.echo(format_plan(result, color=sys.stdout.isatty()))
    if not result.changed:
        click.echo("nothing to change")
        sys.exit(EXIT_OK)
    if not click.confirm("Apply these changes?", default=False):
        raise Fail("not applied", 1)


def format_apply(result: Any) -> str:
    """Per host: what changed (or would), the triggers run, services that cannot run here; then totals."""
    verb = "would change" if result.dry_run else "changed"
    lines = []
    for host in result.hosts:
        if not host.ok:
            lines.append(f"{host.host}: FAILED: {host.error}")
            continue
        parts = [f"{len(host.files)} files", f"{len(host.packages)} packages", f"{len(host.services)} services"]
        touched = host.files or host.packages or host.services
        lines.append(f"{host.host}: {verb} {', '.join(parts)}" if touched else f"{host.host}: no changes")
        lines += [f"  ran: {command}" for command in host.triggers]
        lines += [f"  not running here (a unit condition skips it): {name}" for name in host.not_running]
    failed = sum(not h.ok for h in result.hosts)
    changed = sum(len(h.files) + len(h.packages) + len(h.services) for h in result.hosts)
    lines.append(f"{result.engine}: {changed} files, packages and services {verb} on {len(result.hosts)} hosts"
                 f"{f', {failed} failed' if failed else ''} in {result.seconds} s")
    return "\n".join(lines)


@click.command()
@click.argument("spec")
@limit_option
@known_hosts_option
@click.option("--junit", type=click.Path(dir_okay=False, path_type=Path),
              help="JUnit XML report (default: build/<region>/verify/junit.xml).")
@vault_option
@guarded
def verify(spec: str, limit: tuple[str, ...], known_hosts: Path | None, junit: Path | None,
           vault_password_file: Path | None) -> None:
    """Prove the hosts match the render: packages, files, services, listening ports, firewall (testinfra)."""
    import tempfile  # noqa: PLC0415

    from ekc.bundle.region import LOCK_NAME  # noqa: PLC0415
    from ekc.engines.common import deploy_key  # noqa: PLC0415
    from ekc.engines.ssh import LiveError  # noqa: PLC0415
    from ekc.render.build import write_build  # noqa: PLC0415
    from ekc.render.region import render_region  # noqa: PLC0415
    from ekc.verify.run import format_verify, run_verify  # noqa: PLC0415

    loaded, secrets = load_with_secrets(spec, vault_password_file)
    junit = junit or default_build_dir(loaded) / "verify" / "junit.xml"
    lock = loaded.region_dir / LOCK_NAME
    with tempfile.TemporaryDirectory(prefix="ekc-verify-") as tmp, deploy_key(secrets) as key:
        write_build(render_region(loaded, secrets), Path(tmp) / "build")
        try:
            result = run_verify(Path(tmp) / "build", key, limit=limit or None, junit=junit,
                                bundle_lock=lock if lock.exists() else None,
                                known_hosts=default_known_hosts(loaded, secrets, known_hosts))
        except LiveError as exc:
            raise Fail(str(exc), 1) from None
    click.echo(format_verify(result))
    sys.exit(result.exit_code)


COMMANDS = (plan, apply, verify)
