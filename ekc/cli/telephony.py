"""``deploy.py incident …``: switch a department's incident announcement on or off in seconds, no reload.

The dialplan plays the prompt stored in AstDB ``ekc/incident/<department>`` before the queue while the key
exists; this command sets or deletes it on every asterisk node over SSH.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click

from ekc.cli.base import EXIT_USAGE, Fail, guarded, known_hosts_option, load_with_secrets, vault_option
from ekc.spec.load import load_spec
from schemas.types import PROMPT_PATTERN

INCIDENT_FAMILY = "ekc/incident"


def incident_command(action: str, department: str, message: str) -> str:
    """The Asterisk CLI command that switches the incident on (``put``) or off (``del``)."""
    if action == "on":
        return f"database put {INCIDENT_FAMILY} {department} {message}"
    return f"database del {INCIDENT_FAMILY} {department}"


@click.command()
@click.argument("action", type=click.Choice(["on", "off"]))
@click.argument("spec")
@click.argument("department")
@click.option("--message", help="The prompt to play (default: the department's incident.default_message).")
@known_hosts_option
@vault_option
@guarded
def incident(action: str, spec: str, department: str, message: str | None, known_hosts: Path | None,
             vault_password_file: Path | None) -> None:
    """Switch DEPARTMENT's incident announcement ACTION (on|off) on every asterisk node, without a reload."""
    from ekc.cli.base import default_known_hosts  # noqa: PLC0415
    from ekc.engines.common import deploy_key  # noqa: PLC0415
    from ekc.engines.ssh import SshAccess, UnreachableHosts, run_on_host  # noqa: PLC0415

    region = load_spec(spec).region  # a wrong department is refused before the vault is opened
    departments = {d.id: d for d in region.telephony.departments}
    if department not in departments:
        raise Fail(f"no department '{department}' (defined: {', '.join(sorted(departments))})", EXIT_USAGE)
    prompt = message or departments[department].incident.default_message
    if not re.match(PROMPT_PATTERN, prompt):
        raise Fail(f"'{prompt}' is not a prompt name (expected e.g. ekc/incident)", EXIT_USAGE)
    loaded, secrets = load_with_secrets(spec, vault_password_file)
    command = incident_command(action, department, prompt)
    script = f"asterisk -rx {shlex.quote(command)}\n"
    failed = []
    with deploy_key(secrets) as key:
        access = SshAccess(key, default_known_hosts(loaded, secrets, known_hosts))
        for node in region.nodes_with("asterisk"):
            try:
                out = run_on_host(access, node.name, node.address, script, timeout=30).strip()
            except UnreachableHosts as exc:
                failed.append(str(exc))
                continue
            click.echo(f"{node.name}: {out or 'done'}")
    if failed:
        raise Fail("; ".join(failed), 1)
    state = f"on ({prompt})" if action == "on" else "off"
    click.echo(f"incident for {department}: {state}")


COMMANDS = (incident,)
