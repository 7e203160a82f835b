"""The ekc command line: ``./deploy.py <verb> …``.

Exit codes: 0 ok (or nothing to do), 1 changes pending or a host failed, 2 bad usage or a bad spec.
A user's mistake never shows a traceback; ``--debug`` shows one for ekc's own defects.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from ekc import __version__
from ekc.diagnostics import SpecErrors
from ekc.spec import LoadedSpec, load_spec, message_path
from ekc.vault import VaultError

F = TypeVar("F", bound=Callable[..., Any])
EXIT_OK, EXIT_CHANGES, EXIT_USAGE = 0, 1, 2
BUILD_ROOT = Path("build")


class Fail(Exception):
    """A clear, one-line failure with a chosen exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code


def guarded(func: F) -> F:
    """Turn every known failure into its message and exit code; a traceback only with --debug."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except Fail as exc:
            _exit(str(exc), exc.code)
        except SpecErrors as exc:
            for error in exc.errors:
                click.echo(str(error), err=True)
            noun = "error" if len(exc.errors) == 1 else "errors"
            _exit(f"{len(exc.errors)} {noun}; nothing was changed", EXIT_USAGE)
        except VaultError as exc:
            _exit(str(exc), EXIT_USAGE)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            if click.get_current_context().find_root().params.get("debug"):
                raise
            if isinstance(exc, _operational_errors()):
                _exit(str(exc), 1)
            _exit(f"internal error: {type(exc).__name__}: {exc} (run with --debug for details)", 1)

    return wrapper  # type: ignore[return-value]


def _operational_errors() -> tuple[type[Exception], ...]:
    """Failures of the world, not of ekc or the spec: a tool, a host, a bundle. Their message says it all."""
    from ekc.build import BuildDirError  # noqa: PLC0415
    from ekc.bundlekey import GpgError  # noqa: PLC0415
    from ekc.bundlelock import BundleError  # noqa: PLC0415
    from ekc.engines.common import EngineError  # noqa: PLC0415
    from ekc.lab import LabError  # noqa: PLC0415
    from ekc.live import LiveError  # noqa: PLC0415
    from ekc.publish import PublishError  # noqa: PLC0415
    from ekc.report import ReportError  # noqa: PLC0415
    from ekc.rootfs import RootfsError  # noqa: PLC0415

    return (BuildDirError, BundleError, EngineError, GpgError, LabError, LiveError, PublishError, ReportError,
            RootfsError)


def _exit(message: str, code: int) -> NoReturn:
    click.echo(f"ekc: {message}", err=True)
    sys.exit(code)


vault_option = click.option(
    "--vault-password-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File with the vault password (else $EKC_VAULT_PASSWORD, $EKC_VAULT_PASSWORD_FILE, "
    "inventories/<region>/.vault_pass).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="ekc")
@click.option("--debug", is_flag=True, help="Show tracebacks of internal errors.")
def main(debug: bool) -> None:
    """ekc: a region's unified contact center (ЕКЦ) as code.

    \b
    Exit codes: 0 ok or nothing to do; 1 changes pending or a host failed; 2 bad usage or bad spec.
    SPEC is a region.yml, its folder, or a region name under inventories/.
    """


def load_with_secrets(spec_arg: str, vault_file: Path | None) -> tuple[LoadedSpec, Any]:
    """The validated spec and a view of its checked secrets."""
    from ekc.secrets import load_secrets  # noqa: PLC0415 - keeps `--help` fast
    from ekc.vault import resolve_vault_password  # noqa: PLC0415

    spec = load_spec(spec_arg)
    password = resolve_vault_password(vault_file, spec.region_dir)
    shown_dir = message_path(spec.region_dir)
    return spec, load_secrets(spec.region, spec.region_dir, shown_dir, password)


@main.command()
@click.argument("spec")
@click.option("--skip-secrets", is_flag=True, help="Check the spec only, not its vault.")
@vault_option
@guarded
def validate(spec: str, skip_secrets: bool, vault_password_file: Path | None) -> None:
    """Check a region spec (and its secrets); print every error at once."""
    loaded = load_spec(spec) if skip_secrets else load_with_secrets(spec, vault_password_file)[0]
    region = loaded.region
    click.echo(
        f"ok: {loaded.display_path}: region {region.region.code} ({region.region.name}), "
        f"{len(region.nodes)} nodes, {len(region.telephony.departments)} departments, "
        f"{len(region.telephony.operators)} operators"
        + ("" if skip_secrets else ", secrets complete")
    )


def default_build_dir(loaded: LoadedSpec) -> Path:
    """``build/<region>`` for a spec at ``inventories/<region>/region.yml``."""
    return BUILD_ROOT / loaded.name


@main.command()
@click.argument("spec")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), help="Default: build/<region>.")
@click.option("--redact", is_flag=True, help="Replace every secret with <redacted> (for auditors).")
@vault_option
@guarded
def render(spec: str, output: Path | None, redact: bool, vault_password_file: Path | None) -> None:
    """Render every host's files, the manifest, the Ansible inventory and SHA256SUMS."""
    from ekc.build import write_build  # noqa: PLC0415
    from ekc.render import render_region  # noqa: PLC0415

    loaded, secrets = load_with_secrets(spec, vault_password_file)
    result = render_region(loaded, secrets.redact() if redact else secrets)
    out = output or default_build_dir(loaded)
    write_build(result, out)
    files = sum(len(h.files) for h in result.manifest.hosts)
    note = " (redacted)" if redact else " (contains secrets: keep it private)"
    click.echo(f"rendered {files} files for {len(result.manifest.hosts)} hosts into {out}{note}")


@main.command()
@click.argument("spec")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path),
              help="Default: build/<region>/audit.")
@click.option("--against", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="An older build (or audit/rendered) to show the changes since.")
@vault_option
@guarded
def report(spec: str, output: Path | None, against: Path | None, vault_password_file: Path | None) -> None:
    """Write the auditors' HTML report (always redacted)."""
    from ekc.build import write_build  # noqa: PLC0415
    from ekc.render import render_region  # noqa: PLC0415
    from ekc.report import write_report  # noqa: PLC0415

    loaded, secrets = load_with_secrets(spec, vault_password_file)
    out = output or default_build_dir(loaded) / "audit"
    rendered = out / "rendered"
    write_build(render_region(loaded, secrets.redact()), rendered)
    write_report(rendered, out / "index.html", against)
    click.echo(f"audit report: {out / 'index.html'}")


limit_option = click.option("--limit", multiple=True, metavar="HOST", help="Only this host (repeatable).")
known_hosts_option = click.option(
    "--known-hosts", type=click.Path(dir_okay=False, path_type=Path),
    help="SSH known_hosts file: new hosts are accepted, changed keys refused (default: the lab's own file "
    "while the region's lab is up, else inventories/<region>/known_hosts).",
)


def default_known_hosts(loaded: LoadedSpec, secrets: Any, given: Path | None) -> Path:
    """Pin host keys per region: the lab's file for lab nodes (they get new keys each time the lab is made),
    else ``known_hosts`` beside the spec, which a ministry keeps with its inventory."""
    from ekc.labspec import lab_for  # noqa: PLC0415

    if given is not None:
        return given
    lab_ = lab_for(loaded, secrets)
    return lab_.known_hosts if lab_.state_path.is_dir() else loaded.region_dir / "known_hosts"


@main.command()
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
    from ekc.live import LiveError, live_plan  # noqa: PLC0415
    from ekc.manifest import load_manifest  # noqa: PLC0415
    from ekc.plan import diff_builds, format_plan, plan_to_json  # noqa: PLC0415
    from ekc.render import render_region  # noqa: PLC0415

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


@main.command()
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

    from ekc.build import write_build  # noqa: PLC0415
    from ekc.engines.common import deploy_key  # noqa: PLC0415
    from ekc.publish import serve_bundle  # noqa: PLC0415
    from ekc.render import render_region  # noqa: PLC0415

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


def verified_bundle(loaded: LoadedSpec, bundle_dir: Path | None) -> Path:
    """The region's bundle (default bundles/<region>), refused unless it verifies against the region's key."""
    from ekc.bundle import verify_bundle  # noqa: PLC0415
    from ekc.bundleflow import trusted_key  # noqa: PLC0415

    bundle_dir = bundle_dir or Path("bundles") / loaded.name
    if not bundle_dir.is_dir():
        raise Fail(f"no bundle at {bundle_dir}: run ./deploy.py bundle build on the connected side")
    problems = verify_bundle(bundle_dir, trusted_key(bundle_dir, None, loaded.region_dir))
    if problems:
        raise Fail(f"{bundle_dir} is refused, it does not verify:\n  " + "\n  ".join(problems), 1)
    return bundle_dir


def _run_engine(engine: str, build: Path, key: Path, limit: tuple[str, ...], known_hosts: Path | None, *,
                dry_run: bool) -> Any:
    from ekc.engines.ansible_engine import apply_ansible  # noqa: PLC0415
    from ekc.engines.pyinfra_engine import apply_pyinfra  # noqa: PLC0415

    logging.getLogger("pyinfra").setLevel(logging.ERROR)  # its host-key notices are not the user's business
    run = apply_pyinfra if engine == "pyinfra" else apply_ansible
    return run(build, key, limit=limit, dry_run=dry_run, known_hosts=known_hosts)


def _confirm_plan(build: Path, key: Path, limit: tuple[str, ...], known_hosts: Path | None) -> None:
    """Show the live plan and ask before changing anything (``-y`` skips this)."""
    from ekc.live import LiveError, live_plan  # noqa: PLC0415
    from ekc.manifest import load_manifest  # noqa: PLC0415
    from ekc.plan import format_plan  # noqa: PLC0415

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


@main.command()
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

    from ekc.build import write_build  # noqa: PLC0415
    from ekc.bundleflow import LOCK_NAME  # noqa: PLC0415
    from ekc.engines.common import deploy_key  # noqa: PLC0415
    from ekc.live import LiveError  # noqa: PLC0415
    from ekc.render import render_region  # noqa: PLC0415
    from ekc.verify import format_verify, run_verify  # noqa: PLC0415

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


@main.group()
def secrets() -> None:
    """Manage the region's vault-encrypted secrets."""


@secrets.command("init")
@click.argument("region")
@vault_option
@guarded
def secrets_init(region: str, vault_password_file: Path | None) -> None:
    """Generate every missing credential (and the region's CA) into secrets.yml; keep existing ones."""
    from ekc.bundleflow import write_public_key  # noqa: PLC0415
    from ekc.secrets import init_secrets, load_secrets, secrets_path  # noqa: PLC0415
    from ekc.vault import VaultPasswordMissing, create_password_file, resolve_vault_password  # noqa: PLC0415

    loaded = load_spec(region)
    try:
        password = resolve_vault_password(vault_password_file, loaded.region_dir)
    except VaultPasswordMissing:
        pass_file = loaded.region_dir / ".vault_pass"
        password = create_password_file(pass_file)
        click.echo(f"created vault password file {pass_file} (mode 0600; keep it out of git)")
    for line in init_secrets(loaded.region, loaded.region_dir, password):
        click.echo(f"  {line}")
    click.echo(f"secrets: {secrets_path(loaded.region_dir)} (ansible-vault encrypted)")
    shown_dir = message_path(loaded.region_dir)
    key = write_public_key(loaded.region_dir, load_secrets(loaded.region, loaded.region_dir, shown_dir, password))
    click.echo(f"public bundle key: {key} (public; bundle verify trusts it)")


@main.command()
@click.argument("spec")
@guarded
def endpoints(spec: str) -> None:
    """Where people reach the region (CRM, wallboard, Prometheus, SIP) and where each password is kept."""
    from ekc.endpoints import endpoints as region_endpoints  # noqa: PLC0415
    from ekc.endpoints import format_endpoints  # noqa: PLC0415
    from ekc.secrets import secrets_path  # noqa: PLC0415

    loaded = load_spec(spec)
    click.echo(format_endpoints(region_endpoints(loaded.region), message_path(secrets_path(loaded.region_dir))),
               nl=False)


@main.command()
@click.option("--check", is_flag=True, help="Exit 1 if the exported schema or the README's reference is stale.")
@guarded
def schema(check: bool) -> None:
    """Export the spec's JSON Schema (schemas/region.schema.json) and the README's spec reference."""
    from schemas.export import SCHEMA_FILE, schema_text  # noqa: PLC0415
    from schemas.reference import README, readme_with_reference  # noqa: PLC0415

    readme = README.read_text(encoding="utf-8")
    wanted = {SCHEMA_FILE: schema_text(), README: readme_with_reference(readme)}
    stale = [p for p, text in wanted.items() if not p.exists() or p.read_text(encoding="utf-8") != text]
    if check:
        if stale:
            names = ", ".join(p.name for p in stale)
            raise Fail(f"{names} out of date with schemas/: run ./deploy.py schema", EXIT_CHANGES)
        click.echo("schema and spec reference are up to date")
        return
    for path in stale:
        path.write_text(wanted[path], encoding="utf-8")
        click.echo(f"wrote {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")


# The command groups in their own modules add themselves to ``main`` when imported.
from ekc import cli_bundle, cli_db, cli_lab, cli_telephony  # noqa: E402, F401
