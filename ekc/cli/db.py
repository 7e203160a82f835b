"""``deploy.py db …``: base backups now, and restores onto a node."""

from __future__ import annotations

from pathlib import Path

import click

from ekc.cli.base import Fail, default_known_hosts, guarded, known_hosts_option, load_with_secrets, vault_option


@click.group()
def db() -> None:
    """PostgreSQL: a base backup now, or a restore of one (with the archived WAL) onto a node."""


@db.command("backup")
@click.argument("spec")
@known_hosts_option
@vault_option
@guarded
def backup(spec: str, known_hosts: Path | None, vault_password_file: Path | None) -> None:
    """Take a base backup of the primary (a cluster's leader) now, with the timer's own script; print its name
    and time."""
    from ekc.engines.common import deploy_key  # noqa: PLC0415
    from ekc.engines.dbops import DbOpsError, Ssh, backup_now, primary  # noqa: PLC0415

    loaded, secrets = load_with_secrets(spec, vault_password_file)
    location = loaded.region.database.backup.location
    with deploy_key(secrets) as key:
        ssh = Ssh(key, default_known_hosts(loaded, secrets, known_hosts))
        try:
            node = primary(loaded.region, ssh)
            done = backup_now(ssh, node)
        except DbOpsError as exc:
            raise Fail(str(exc), 1) from None
    click.echo(f"{node.name}: backup {done.value} in {location}/base ({done.seconds:.1f} s)")


@db.command("restore")
@click.argument("spec")
@click.option("--node", "node_name", help="The postgresql node to restore onto (default: the primary).")
@click.option("--from", "from_backup", help="The backup's name (default: the newest on the primary).")
@click.option("-y", "--yes", is_flag=True, help="Restore without asking.")
@known_hosts_option
@vault_option
@guarded
def restore(spec: str, node_name: str | None, from_backup: str | None, yes: bool, known_hosts: Path | None,
            vault_password_file: Path | None) -> None:
    """Restore a base backup and replay the archived WAL onto a node, then start it.

    The node's current data directory is kept beside it (main.before-restore-<time>). When the node is not
    the primary, the backup and the WAL archive are first copied there from the primary.
    """
    from ekc.engines.common import deploy_key  # noqa: PLC0415
    from ekc.engines.dbops import (  # noqa: PLC0415
        DbOpsError,
        Ssh,
        copy_backup,
        database_node,
        latest_backup,
        primary,
        refuse_cluster_restore,
    )
    from ekc.engines.dbops import restore as restore_on  # noqa: PLC0415

    loaded, secrets = load_with_secrets(spec, vault_password_file)
    location = loaded.region.database.backup.location
    try:
        refuse_cluster_restore(loaded.region)
    except DbOpsError as exc:
        raise Fail(str(exc), 1) from None
    with deploy_key(secrets) as key:
        ssh = Ssh(key, default_known_hosts(loaded, secrets, known_hosts))
        try:
            source, target = primary(loaded.region), database_node(loaded.region, node_name)
            name = from_backup or latest_backup(ssh, source, location)
            if not yes:
                click.confirm(f"Replace the database of {target.name} with backup {name}?", abort=True)
            if target.name != source.name:
                copied = copy_backup(ssh, source, target, location, name)
                click.echo(f"copied {name} from {source.name} to {target.name} ({copied.seconds:.1f} s)")
            done = restore_on(ssh, target, name)
        except DbOpsError as exc:
            raise Fail(str(exc), 1) from None
    click.echo(f"{target.name}: restored {name} and replayed the archived WAL ({done.seconds:.1f} s)")


COMMANDS = (db,)
