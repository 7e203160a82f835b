"""The ekc command line: ``./deploy.py <verb> …``, assembled from one module per command group.

Exit codes: 0 ok (or nothing to do), 1 changes pending or a host failed, 2 bad usage or a bad spec.
Imports run one way: this module imports the command modules, they import :mod:`ekc.cli.base`, and nothing
imports this module but ``deploy.py``.
"""

from __future__ import annotations

import click

from ekc import __version__
from ekc.cli import bundle, db, hosts, lab, render, telephony


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="ekc")
@click.option("--debug", is_flag=True, help="Show tracebacks of internal errors.")
def main(debug: bool) -> None:
    """ekc: a region's unified contact center (ЕКЦ) as code.

    \b
    Exit codes: 0 ok or nothing to do; 1 changes pending or a host failed; 2 bad usage or bad spec.
    SPEC is a region.yml, its folder, or a region name under inventories/.
    """


for command in (*render.COMMANDS, *hosts.COMMANDS, *bundle.COMMANDS, *db.COMMANDS, *lab.COMMANDS,
                *telephony.COMMANDS):
    main.add_command(command)
