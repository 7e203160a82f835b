"""``deploy.py lab …``: the built-in lab of real forky servers."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from ekc.cli.base import EXIT_CHANGES, EXIT_OK, Fail, guarded, load_with_secrets, vault_option
from ekc.spec.load import load_spec


@click.group()
def lab() -> None:
    """A lab of real forky servers (systemd-nspawn) at the spec's addresses, with no route out."""


def _lab(spec: str, vault_password_file: Path | None) -> Any:
    """The spec's lab, with the deploy key kept beside its state directory (0600) for logins."""
    import os  # noqa: PLC0415

    from ekc.lab.model import lab_problems, preflight  # noqa: PLC0415
    from ekc.lab.region import lab_for  # noqa: PLC0415

    missing = preflight()
    if missing:
        raise Fail("the lab cannot run here:\n  " + "\n  ".join(missing))
    loaded, secrets = load_with_secrets(spec, vault_password_file)
    lab_ = lab_for(loaded, secrets)
    key = lab_.state_path.parent / "keys" / lab_.region
    key.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not key.exists():
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(secrets.get("ssh", "deploy", "private").strip() + "\n")
    lab_ = lab_for(loaded, secrets, key)
    problems = lab_problems(lab_)
    if problems:
        raise Fail("\n".join(problems))
    return lab_


def _print_status(status: Any, spec: str) -> None:
    """What runs where: each node, its roles from the spec, and whether it is up."""
    roles = {node.name: ", ".join(node.roles) for node in load_spec(spec).region.nodes}
    click.echo(f"lab {status.region}: bridge {status.bridge} {'up' if status.bridge_present else 'absent'}, "
               f"firewall {'on' if status.firewall_present else 'absent'}")
    for node in status.nodes:
        state = "running" if node.running else "stopped"
        ssh = "ssh ok" if node.ssh_reachable else "no ssh"
        memory = f", {node.memory_kib / 1024:.0f} MiB" if node.memory_kib else ""
        click.echo(f"  {node.name:<10} {node.address:<15} {roles.get(node.name, ''):<40} {state}, {ssh}{memory}")


@lab.command("up")
@click.argument("spec")
@vault_option
@guarded
def lab_up_command(spec: str, vault_password_file: Path | None) -> None:
    """Boot one server per spec node (idempotent: running nodes are left alone)."""
    from ekc.lab.nodes import lab_up  # noqa: PLC0415

    _print_status(lab_up(_lab(spec, vault_password_file)), spec)


@lab.command("down")
@click.argument("spec")
@vault_option
@guarded
def lab_down_command(spec: str, vault_password_file: Path | None) -> None:
    """Stop the nodes and remove everything the lab made (processes, bridge, firewall table, node trees)."""
    from ekc.lab.nodes import lab_down  # noqa: PLC0415

    target = _lab(spec, vault_password_file)
    lab_down(target)
    click.echo(f"lab {target.region}: down")


@lab.command("status")
@click.argument("spec")
@vault_option
@guarded
def lab_status_command(spec: str, vault_password_file: Path | None) -> None:
    """Show each node: running, address, SSH, memory. Exit 1 unless every node is up."""
    from ekc.lab.nodes import lab_status  # noqa: PLC0415

    status = lab_status(_lab(spec, vault_password_file))
    _print_status(status, spec)
    sys.exit(EXIT_OK if status.ready else EXIT_CHANGES)


@lab.command("ssh", context_settings={"ignore_unknown_options": True})
@click.argument("spec")
@click.argument("node")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@vault_option
@guarded
def lab_ssh_command(spec: str, node: str, command: tuple[str, ...], vault_password_file: Path | None) -> None:
    """Log in to NODE as root (or run COMMAND there)."""
    import os  # noqa: PLC0415

    from ekc.lab.nodes import ssh_command  # noqa: PLC0415

    target = _lab(spec, vault_password_file)
    if node not in {n.name for n in target.nodes}:
        raise Fail(f"no node '{node}' in the lab (nodes: {', '.join(n.name for n in target.nodes)})")
    argv = [*ssh_command(target, node), *command]
    os.execvp(argv[0], argv)


@lab.command("call")
@click.argument("spec")
@click.option("--department", help="the department to call (default: the first the main menu reaches)")
@click.option("--digit", help="the main menu's key to press (default: the department's key)")
@click.option("--rating", default="5", show_default=True, help="the digit the caller rates the call with")
@vault_option
@guarded
def lab_call_command(spec: str, department: str | None, digit: str | None, rating: str,
                     vault_password_file: Path | None) -> None:
    """A real test call through the lab of a region that is up and applied.

    SIPp plays the carrier (from the trunk peer's address) and one operator of the department (registered
    with the operator's SIP password from the vault, never printed): the call goes through the IVR, the
    queue and the operator, who hangs up; the caller rates it. Prints the call's queue_log lines, CDR rows
    and rating, and (with a CRM) the number and address of the call's card. Exit 0 only when the call reached an
    operator through the IVR (and got its card), 1 otherwise.
    """
    import subprocess  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    from ekc.lab.call import LabCallError, call_plan, place_test_call, report_lines  # noqa: PLC0415
    from ekc.lab.nodes import ssh_command  # noqa: PLC0415
    from ekc.lab.region import lab_call_network  # noqa: PLC0415
    from ekc.lab.sipp import SippError, sipp_path  # noqa: PLC0415

    target = _lab(spec, vault_password_file)
    loaded, secrets = load_with_secrets(spec, vault_password_file)
    try:
        sipp_path()
        plan = call_plan(loaded.region, lab_call_network(loaded), department=department, digit=digit)
    except (LabCallError, SippError) as exc:
        raise Fail(str(exc)) from exc

    def run(command: str) -> str:
        argv = [*ssh_command(target, plan.node), "-o", "BatchMode=yes", command]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False).stdout

    with tempfile.TemporaryDirectory(prefix="ekc-call-") as work:
        try:
            report = place_test_call(plan, secrets.get("sip", plan.operator), Path(work), run, rating=rating)
        except (LabCallError, SippError) as exc:
            raise Fail(str(exc), EXIT_CHANGES) from exc
    for line in report_lines(report):
        click.echo(line)
    card_ok = True
    databases = loaded.region.nodes_with("postgresql")
    if report.reached_operator and loaded.region.nodes_with("crm") and databases and report.record.uniqueid:
        from ekc.lab.call import call_card  # noqa: PLC0415
        from ekc.render.components.addresses import crm_hostname  # noqa: PLC0415

        def run_db(command: str) -> str:
            argv = [*ssh_command(target, databases[0].name), "-o", "BatchMode=yes", command]
            return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False).stdout

        number = call_card(run_db, report.record.uniqueid)
        card_ok = number is not None
        click.echo(f"call card: {number}  https://{crm_hostname(loaded.region)}/appeals/{number}/" if number
                   else "call card: none was made in the CRM (journalctl -u ekc-crm-appeals on the CRM node)")
    sys.exit(EXIT_OK if report.reached_operator and card_ok else EXIT_CHANGES)


COMMANDS = (lab,)
