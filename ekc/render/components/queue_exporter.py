"""The queue exporter on every Asterisk node: live queue and trunk figures over AMI (loopback), port 9250.

The program is ekc's own (``queue_exporter_main.py``, standard library only) run by forky's python3 under a
systemd unit with a dynamic user; the AMI password reaches it as a systemd credential, never on disk in a
file the exporter's user could read otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path

from ekc.render.manifest import ServiceState, Trigger
from ekc.render.model import FileSpec, HostLayer, RenderContext
from schemas.region import Node

COMPONENT = "queue_exporter"
SERVICE = "ekc-queue-exporter"
PORT = 9250
AMI_USER = "ekc_exporter"
PROGRAM = "/usr/local/lib/ekc/queue-exporter"
CONFIG = "/etc/ekc/queue-exporter.json"
SECRET = "/etc/ekc/queue-exporter.secret"
UNIT = f"/etc/systemd/system/{SERVICE}.service"
SOURCE = Path(__file__).with_name("queue_exporter_main.py")
RESTART = Trigger("restart", SERVICE, f"systemctl restart {SERVICE}", "the queue exporter restarts; no calls dropped")
RELOAD_UNIT = Trigger("restart", SERVICE, f"systemctl daemon-reload && systemctl restart {SERVICE}",
                      "systemd rereads the unit, the queue exporter restarts; no calls dropped")


def queue_exporter_layer(ctx: RenderContext, node: Node) -> HostLayer:
    """The program, its configuration, the AMI password (a systemd credential) and its unit."""

    region = ctx.spec.region
    if not region.nodes_with("monitoring"):
        return HostLayer()  # nobody would scrape it
    config = {
        "listen": "",
        "port": PORT,
        "ami": {"host": "127.0.0.1", "port": 5038, "user": AMI_USER},
        "departments": [d.id for d in region.telephony.departments],
        "trunks": [t.name for t in region.telephony.trunks],
    }
    files = [
        _spec(PROGRAM, RESTART, mode="0755", source=SOURCE.read_text(encoding="utf-8")),
        _spec(CONFIG, RESTART, comment=None, config=json.dumps(config, indent=2, sort_keys=True)),
        _spec(SECRET, RESTART, mode="0600", secret=True, comment=None,
              password=ctx.secrets.get("ami", AMI_USER)),
        _spec(UNIT, RELOAD_UNIT, program=PROGRAM, config=CONFIG, secret_file=SECRET),
    ]
    return HostLayer(packages=["python3"], services=[ServiceState(SERVICE)], files=files)


def _spec(path: str, trigger: Trigger, *, mode: str = "0644", secret: bool = False, comment: str | None = "#",
          **data: object) -> FileSpec:

    return FileSpec(path, f"{COMPONENT}{path}.j2", COMPONENT, data, mode=mode, trigger=trigger, secret=secret,
                    comment=comment)
