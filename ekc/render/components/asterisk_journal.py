"""The call-record journal of an Asterisk node whose database is a Patroni cluster: no row lost in a failover.

While the cluster has no leader (a failover takes up to about 25 s) no write reaches the database. cdr_pgsql
writes each CDR once and drops it when that fails, so every CDR also goes to a local journal (cdr_custom, every
column of the ``cdr`` table). queue_log is not written to the database by Asterisk at all with a cluster (a
realtime write would hold the call that logs the event, see asterisk_db): Asterisk writes its own
``queue_log`` file. The ``ekc-journal`` timer, every few seconds, ships every new queue_log line and replays the
CDRs older than a minute (cdr_pgsql's own writes have long landed by then); a function in the database inserts
the rows it does not have (a CDR by its uniqueid and sequence, a queue event by its time, call, queue, agent,
event and data), and the timer remembers how far it got only after the database confirmed. A row is therefore
in the database once the leader is back, exactly once.

cdr_pgsql and cel_pgsql read their table's columns when they load: on a new cluster Asterisk may start before
the leader has the schema, so ``ekc-asterisk-db-ready`` waits for the tables and then loads the modules again.
"""

from __future__ import annotations

from ekc.render.components.base import DAEMON_RELOAD
from ekc.render.components.dbcluster import PORT, VERSION, client_hosts, is_cluster
from ekc.render.files import header
from ekc.render.manifest import ServiceState, Trigger
from ekc.render.model import FileSpec, HostLayer, RenderContext
from schemas.region import Node

COMPONENT = "asterisk_journal"
UNIT = "ekc-journal"
SCRIPT = "/usr/local/lib/ekc/ekc-journal"
READY_UNIT = "ekc-asterisk-db-ready"
READY_SCRIPT = "/usr/local/lib/ekc/asterisk-db-ready"
ENV_FILE = "/etc/ekc/postgresql/journal.env"
READY_TIMEOUT_S = 600
PGPASS = "/etc/ekc/postgresql/journal.pgpass"
CA_FILE = "/etc/ekc/tls/postgresql-ca.crt"  # asterisk_db's copy of the region's CA
JOURNAL = "/var/log/asterisk/cdr-custom/ekc-journal.csv"
QUEUE_LOG = "/var/log/asterisk/queue_log"
STATE_DIR = "/var/lib/ekc/journal"
MODULE = "cdr_custom.so"
INTERVAL_S = 5
CDR_MIN_AGE_S = 60
# The journal's columns: the ``cdr`` table's, in this order (times as epoch seconds).
CDR_COLUMNS = ("start", "answer", "end", "clid", "src", "dst", "dcontext", "channel", "dstchannel", "lastapp",
               "lastdata", "duration", "billsec", "disposition", "amaflags", "accountcode", "peeraccount",
               "uniqueid", "linkedid", "userfield", "sequence", "department")
TIME_COLUMNS = ("start", "answer", "end")
RELOAD_MAPPING = Trigger("reload", "asterisk", f"asterisk -rx 'module reload {MODULE}'",
                         "Asterisk rereads the journal's mapping; no call is dropped")
NO_TRIGGER = Trigger()


def asterisk_journal_layer(ctx: RenderContext, node: Node) -> HostLayer:
    """The journal's mapping, the replay script, its timer and its database login (a Patroni cluster only)."""
    region = ctx.spec.region
    if not is_cluster(region):
        return HostLayer()
    mapping = ",".join(
        f"${{CSV_QUOTE(${{CDR({c},u)}})}}" if c in TIME_COLUMNS else f"${{CSV_QUOTE(${{CDR({c})}})}}"
        for c in CDR_COLUMNS
    )
    password = ctx.secrets.get("postgresql", "asterisk")
    files = [
        _file("/etc/asterisk/cdr_custom.conf", RELOAD_MAPPING, mode="0640", group="asterisk", comment=";",
              name=JOURNAL.rsplit("/", 1)[1], mapping=mapping),
        _file(SCRIPT, mode="0755", comment=None, header=header(ctx.spec, "#"), journal=JOURNAL, queue_log=QUEUE_LOG,
              state_dir=STATE_DIR, cdr_min_age_s=CDR_MIN_AGE_S, columns=list(CDR_COLUMNS),
              times=list(TIME_COLUMNS)),
        _file(PGPASS, mode="0600", owner="asterisk", group="asterisk", secret=True, comment=None,
              hosts=client_hosts(region).split(","), port=PORT, password=password),
        _file(ENV_FILE, pgpass=PGPASS, ca=CA_FILE, hosts=client_hosts(region), port=PORT),
        _file(f"/etc/systemd/system/{UNIT}.service", DAEMON_RELOAD, script=SCRIPT, env_file=ENV_FILE,
              state_dir=STATE_DIR),
        _file(f"/etc/systemd/system/{UNIT}.timer", DAEMON_RELOAD, interval_s=INTERVAL_S),
        _file(READY_SCRIPT, mode="0755", comment=None, header=header(ctx.spec, "#"), timeout_s=READY_TIMEOUT_S,
              modules=["cdr_pgsql.so", "cel_pgsql.so"]),
        _file(f"/etc/systemd/system/{READY_UNIT}.service", DAEMON_RELOAD, script=READY_SCRIPT, env_file=ENV_FILE,
              timeout_s=READY_TIMEOUT_S + 30),
    ]
    # psql: the replay talks to the database with the client of the cluster's own version.
    services = [ServiceState(READY_UNIT), ServiceState(f"{UNIT}.timer")]
    return HostLayer(packages=[f"postgresql-client-{VERSION}"], services=services, files=files)


def _file(path: str, trigger: Trigger = NO_TRIGGER, *, mode: str = "0644", owner: str = "root", group: str = "root",
          secret: bool = False, comment: str | None = "#", **data: object) -> FileSpec:

    return FileSpec(path, f"{COMPONENT}{path}.j2", COMPONENT, data, mode=mode, owner=owner, group=group,
                    trigger=trigger, secret=secret, comment=comment)
