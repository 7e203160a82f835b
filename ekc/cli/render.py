"""``deploy.py validate | render | report | secrets | endpoints | schema``: the spec and what is rendered from it."""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from ekc.cli.base import EXIT_CHANGES, Fail, default_build_dir, guarded, load_with_secrets, vault_option
from ekc.spec.load import load_spec, message_path

F = TypeVar("F", bound=Callable[..., Any])


def region_sized(command: F) -> F:
    """Keep the cyclic garbage collector out of a command that builds a whole region's objects, then exits.

    They make no garbage cycles, and scanning them is all the collector would do: a 10,000-operator render
    spent 0.15 s in it, and the interpreter's last collection at exit 0.2 s more. What the command built is
    frozen when it ends, so that last collection passes over it.
    """

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return command(*args, **kwargs)
        finally:
            gc.freeze()
            if was_enabled:
                gc.enable()

    return wrapper  # type: ignore[return-value]


@click.command()
@click.argument("spec")
@click.option("--skip-secrets", is_flag=True, help="Check the spec only, not its vault.")
@vault_option
@guarded
@region_sized
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


@click.command()
@click.argument("spec")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), help="Default: build/<region>.")
@click.option("--redact", is_flag=True, help="Replace every secret with <redacted> (for auditors).")
@vault_option
@guarded
@region_sized
def render(spec: str, output: Path | None, redact: bool, vault_password_file: Path | None) -> None:
    """Render every host's files, the manifest, the Ansible inventory and SHA256SUMS."""
    from ekc.render.build import write_build  # noqa: PLC0415
    from ekc.render.region import render_region  # noqa: PLC0415

    loaded, secrets = load_with_secrets(spec, vault_password_file)
    result = render_region(loaded, secrets.redact() if redact else secrets)
    out = output or default_build_dir(loaded)
    write_build(result, out)
    files = sum(len(h.files) for h in result.manifest.hosts)
    note = " (redacted)" if redact else " (contains secrets: keep it private)"
    click.echo(f"rendered {files} files for {len(result.manifest.hosts)} hosts into {out}{note}")


@click.command()
@click.argument("spec")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path),
              help="Default: build/<region>/audit.")
@click.option("--against", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="An older build (or audit/rendered) to show the changes since.")
@vault_option
@guarded
@region_sized
def report(spec: str, output: Path | None, against: Path | None, vault_password_file: Path | None) -> None:
    """Write the auditors' HTML report (always redacted)."""
    from ekc.render.build import write_build  # noqa: PLC0415
    from ekc.render.region import render_region  # noqa: PLC0415
    from ekc.render.report import write_report  # noqa: PLC0415

    loaded, secrets = load_with_secrets(spec, vault_password_file)
    out = output or default_build_dir(loaded) / "audit"
    rendered = out / "rendered"
    write_build(render_region(loaded, secrets.redact()), rendered)
    write_report(rendered, out / "index.html", against)
    click.echo(f"audit report: {out / 'index.html'}")


@click.group()
def secrets() -> None:
    """Manage the region's vault-encrypted secrets."""


@secrets.command("init")
@click.argument("region")
@vault_option
@guarded
@region_sized
def secrets_init(region: str, vault_password_file: Path | None) -> None:
    """Generate every missing credential (and the region's CA) into secrets.yml; keep existing ones."""
    from ekc.bundle.region import write_public_key  # noqa: PLC0415
    from ekc.spec.secrets import init_secrets, load_secrets, secrets_path  # noqa: PLC0415
    from ekc.spec.vault import VaultPasswordMissing, create_password_file, resolve_vault_password  # noqa: PLC0415

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


@click.command()
@click.argument("spec")
@guarded
def endpoints(spec: str) -> None:
    """Where people reach the region (CRM, wallboard, Prometheus, SIP) and where each password is kept."""
    from ekc.render.endpoints import endpoints as region_endpoints  # noqa: PLC0415
    from ekc.render.endpoints import format_endpoints  # noqa: PLC0415
    from ekc.spec.secrets import secrets_path  # noqa: PLC0415

    loaded = load_spec(spec)
    click.echo(format_endpoints(region_endpoints(loaded.region), message_path(secrets_path(loaded.region_dir))),
               nl=False)


@click.command()
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


COMMANDS = (validate, render, report, secrets, endpoints, schema)
