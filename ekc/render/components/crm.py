"""Creme CRM 2.8, the operator's single window: a venv from the bundle's wheels, gunicorn behind nginx.

The CRM node gets Creme in a virtual environment (``/opt/ekc-crm``) built by an idempotent setup unit from the
bundle's wheels (``pip --no-index``), its settings in ``/etc/ekc-crm/`` (a secret file handed to the services
as a systemd credential), gunicorn on loopback under a hardened unit with a dynamic user, and nginx in front
with the node's certificate from the region CA (443; 80 answers with a redirect). The setup unit migrates the
database on the PostgreSQL node (TLS, ``verify-full`` against the region CA), fills Creme's initial data, builds
the static bundles and makes the spec's administrator with the vault's password.
"""

from __future__ import annotations

import json
from pathlib import Path

from ekc.render.components.addresses import (
    CALL_ID_PATTERN,
    CRM_METRICS_PATH,
    CRM_METRICS_PORT,
    CTI_PATH,
    CTI_PORT,
    CTI_RECORDING_PATH,
    RECORDINGS_PATH,
    click_to_call_nodes,
    crm_hostname,
    node_hostname,
    recording_nodes,
)
from ekc.render.components.base import DAEMON_RELOAD, bundle_uri
from ekc.render.components.dbcluster import CONNECT_TIMEOUT_S, client_hosts, is_cluster
from ekc.render.manifest import ServiceState, Trigger
from ekc.render.model import FileSpec, HostLayer, RenderContext, RenderError
from schemas.region import Node, Region
from schemas.telephony import WEEKDAYS

COMPONENT = "crm"
CREME_VERSION = "2.8.6"
# Exact pins; pip resolves the rest from the bundle's wheels, which the bundle lock fixes.
# psycopg 3.1 is the series Creme 2.8 asks for; its pure-Python form runs on Debian's libpq5.
PYTHON = (f"creme-crm=={CREME_VERSION}", "psycopg==3.1.20", "gunicorn==27.0.1")
PACKAGES = ("nginx", "python3", "python3-venv", "libpq5", "ca-certificates")

VENV = "/opt/ekc-crm"
CONF_DIR = "/etc/ekc-crm"
SETTINGS = f"{CONF_DIR}/ekc_crm_settings.py"
ADMIN_PASSWORD = f"{CONF_DIR}/admin-password"
REQUIREMENTS = f"{CONF_DIR}/requirements.txt"
CA_CERT = f"{CONF_DIR}/region-ca.crt"
TLS_CERT = f"{CONF_DIR}/tls/crm.crt"
TLS_KEY = f"{CONF_DIR}/tls/crm.key"
STATE_DIR = "/var/lib/ekc-crm"  # static bundles and their name map, written by the setup unit
MEDIA_DIR = "/var/lib/ekc-crm-media"  # uploads, the gunicorn service's own state directory
SETUP_UNIT = "ekc-crm-setup"
SETUP_SCRIPT = "/usr/local/lib/ekc/crm-setup"
# The database's part runs in its own unit, started without waiting and retried until the database answers:
# an apply converges every node at once, so the CRM's setup must never wait for the database node.
MIGRATE_UNIT = "ekc-crm-migrate"
MIGRATE_SCRIPT = "/usr/local/lib/ekc/crm-migrate"
DONE_FILE = "/var/lib/ekc-crm/setup-complete"
ADMIN_SCRIPT = "/usr/local/lib/ekc/crm-admin.py"
LIB_DIR = "/usr/local/lib/ekc/crm"  # ekc's Python modules for Creme (its URL configuration)
UNIT = "ekc-crm"
# The appeals app (ekc's own Django app): its sources ship as they are in ekc/crm_app, the Russian catalogues
# (Creme's screens and the app's) are compiled into the state directory by the migrate unit.
APP_SOURCE = Path(__file__).resolve().parents[2] / "crm_app"
APP = "ekc_appeals"
APPEALS_UNIT = "ekc-crm-appeals"
CATALOGUE = f"{CONF_DIR}/catalogue.json"
MSGFMT = "/usr/local/lib/ekc/crm-msgfmt"
MSGFMT_SOURCE = Path(__file__).with_name("crm_msgfmt.py")
LOCALES = (("locale/ru/LC_MESSAGES/django.po", "locale"), ("locale/ru/LC_MESSAGES/djangojs.po", "locale"),
           (f"{APP}/locale/ru/LC_MESSAGES/django.po", "locale-appeals"))
WORKDAYS_ALWAYS = (0, 1, 2, 3, 4)
NGINX_SITE = "/etc/nginx/conf.d/ekc-crm.conf"
RECORDING_ACCESS = "/appeals/recording-access/"  # the appeals app's answer to nginx: may this user listen?
GUNICORN_PORT = 8001
GUNICORN_WORKERS = 3
# The Creme apps the contact center uses: persons (callers), activities (calls), tickets (requests), cti
# (screen pop and click-to-call), plus what Creme itself needs (core, config, custom entities, documents).
CREME_APPS = (
    "creme.creme_core",
    "creme.creme_config",
    "creme.custom_entities",
    "creme.documents",
    "creme.persons",
    "creme.activities",
    "creme.assistants",
    "creme.tickets",
    "creme.cti",
    APP,
)

RERUN_SETUP = Trigger(
    "restart", SETUP_UNIT, f"systemctl restart {SETUP_UNIT}",
    "the CRM's venv, then (in the background) migrations, initial data and administrator brought up to date; "
    "gunicorn restarts with it (open pages reload; no call dropped)",
)
RESTART_APPEALS = Trigger("restart", APPEALS_UNIT, f"systemctl restart {APPEALS_UNIT}",
                          "the call cards' sync restarts; cards of the calls meanwhile are made on its next pass")
RELOAD_NGINX = Trigger("reload", "nginx", "systemctl reload nginx",
                       "nginx rereads its sites and certificates; open connections kept")
NO_TRIGGER = Trigger()


def server_names(spec: Region, node: Node) -> list[str]:
    """The names and addresses the node's CRM answers to (Django's ALLOWED_HOSTS, nginx's server_name).

    On a node that also serves the wallboard, the node's own names belong to the wallboard's site.
    """
    names = [crm_hostname(spec)]
    if "monitoring" not in node.roles:
        names += [f"{node.name}.{spec.network.domain}", node.name, node.address]
    return list(dict.fromkeys(names))


def database_node(spec: Region) -> Node:
    """The PostgreSQL node holding the CRM's database (the first one the spec lists)."""
    nodes = spec.nodes_with("postgresql")
    if not nodes:

        raise RenderError("the CRM needs a node with the role 'postgresql' for its database")
    return nodes[0]


def click_to_call_url(spec: Region) -> str:
    """Creme's ABCTI_URL: the CRM's own ``/ekc-cti/dial``, which nginx passes to an Asterisk node's click-to-call
    service (the first that answers), or '' without an Asterisk node."""
    return f"https://{crm_hostname(spec)}{CTI_PATH}" if click_to_call_nodes(spec) else ""


def click_to_call_upstreams(spec: Region) -> list[dict[str, object]]:
    """The Asterisk nodes' click-to-call services as nginx tries them: each checked against its certificate's
    name, the next tried when one cannot be reached or has no Asterisk to ask (nothing was dialled then)."""
    return [{"node": n.name, "address": n.address, "port": CTI_PORT, "name": node_hostname(spec, n)}
            for n in click_to_call_nodes(spec)]


def recordings_site(spec: Region) -> dict[str, object] | None:
    """What nginx needs to pass a card's player on to the recording's node (None when none can be played): the
    prefix, the app's access check, the call id's pattern, and each Asterisk node checked against its name."""
    nodes = recording_nodes(spec)
    if not nodes:
        return None
    return {"path": RECORDINGS_PATH, "access": RECORDING_ACCESS, "call_id": CALL_ID_PATTERN,
            "cti_path": CTI_RECORDING_PATH,
            "nodes": [{"node": n.name, "address": n.address, "port": CTI_PORT, "name": node_hostname(spec, n)}
                      for n in nodes]}


def crm_layer(ctx: RenderContext, node: Node) -> HostLayer:
    """Packages, files and services of a CRM node."""

    files = [*_settings_files(ctx, node), *_setup_files(ctx), *_service_files(ctx), *_nginx_files(ctx, node),
             *_app_files(ctx)]
    services = [ServiceState(SETUP_UNIT), ServiceState(UNIT), ServiceState(APPEALS_UNIT), ServiceState("nginx")]
    # Debian's default site would answer on port 80 for every name; the CRM's site replaces it.
    absent = ["/etc/nginx/sites-enabled/default"]
    return HostLayer(packages=list(PACKAGES), services=services, files=files, absent=absent, python=list(PYTHON))


def _spec(path: str, trigger: Trigger = NO_TRIGGER, *, mode: str = "0644", secret: bool = False,
          comment: str | None = "#", **data: object) -> FileSpec:

    return FileSpec(path, f"{COMPONENT}{path}.j2", COMPONENT, data, mode=mode, trigger=trigger, secret=secret,
                    comment=comment)


def _settings_files(ctx: RenderContext, node: Node) -> list[FileSpec]:
    """Creme's settings (secret: the key and the database password) and the CA that checks the database."""
    region = ctx.spec.region
    db = database_node(region)
    names = server_names(region, node)
    settings = {
        "secret_key": ctx.secrets.get("crm", "secret_key"),
        "db_host": client_hosts(region),
        "db_options": _database_options(region, db, node),
        "db_password": ctx.secrets.get("postgresql", "crm"),
        "ca_cert": CA_CERT,
        "site": f"https://{crm_hostname(region)}",
        "allowed_hosts": names,
        "csrf_origins": [f"https://{name}" for name in names],
        "language": region.crm.language,
        "timezone": region.region.timezone,
        "apps": list(CREME_APPS),
        "state_dir": STATE_DIR,
        "lib_dir": LIB_DIR,
        "media_dir": MEDIA_DIR,
        "abcti_url": click_to_call_url(region),
        "admin_email": region.crm.admin_email,
        "catalogue": CATALOGUE,
        "mail": mail_relay(region),
        "locale_paths": [f"{STATE_DIR}/{target}" for target in dict.fromkeys(t for _, t in LOCALES)][::-1],
    }
    return [
        _spec(SETTINGS, RERUN_SETUP, mode="0600", secret=True, settings=settings),
        _spec(ADMIN_PASSWORD, RERUN_SETUP, mode="0600", secret=True, comment=None,
              password=ctx.secrets.get("crm", "admin")),
        _spec(CA_CERT, RERUN_SETUP, comment=None, pem=ctx.secrets.get("ca", "cert").strip()),
    ]


def mail_relay(region: Region) -> dict[str, object] | None:
    """Where the letters to citizens go: the spec's mail relay (monitoring.smtp), or None (no letters)."""
    smtp = region.monitoring.smtp
    if smtp is None:
        return None
    return {"relay": str(smtp.relay), "port": smtp.port, "tls": smtp.tls,
            "sender": region.crm.mail_from or f"appeals@{region.network.domain}"}


def _database_options(region: Region, db: Node, node: Node) -> dict[str, str]:
    """libpq options: TLS checked against the region CA and the database node's name; on the database node
    itself, the connection goes to loopback (PostgreSQL listens on its address only for other nodes). With a
    Patroni cluster, every member is listed and libpq takes the one that accepts writes."""
    options = {"sslmode": "verify-full", "sslrootcert": CA_CERT}
    if is_cluster(region):
        options |= {"target_session_attrs": "read-write", "connect_timeout": str(CONNECT_TIMEOUT_S),
                    "keepalives_idle": "5", "keepalives_interval": "2", "keepalives_count": "2",
                    "tcp_user_timeout": "5000"}
    elif db.name == node.name:
        options["hostaddr"] = "127.0.0.1"
    return options


def _setup_files(ctx: RenderContext) -> list[FileSpec]:
    """The setup units and their scripts: venv from the bundle's wheels, then the database's part."""
    region = ctx.spec.region
    bundle = bundle_uri(ctx).removesuffix("/apt")
    return [
        _spec(REQUIREMENTS, RERUN_SETUP, requirements=list(PYTHON)),
        _spec(SETUP_SCRIPT, RERUN_SETUP, mode="0755", venv=VENV, requirements=REQUIREMENTS, bundle=bundle,
              migrate_unit=MIGRATE_UNIT),
        _spec(MIGRATE_SCRIPT, RERUN_SETUP, mode="0755", venv=VENV, state_dir=STATE_DIR, admin_script=ADMIN_SCRIPT,
              migrate_unit=MIGRATE_UNIT, done_file=DONE_FILE, unit=UNIT, appeals_unit=APPEALS_UNIT, msgfmt=MSGFMT,
              locales=[{"source": f"{LIB_DIR}/{po}", "target": f"{STATE_DIR}/{target}/ru/LC_MESSAGES/"
                        f"{Path(po).with_suffix('.mo').name}"} for po, target in LOCALES]),
        _spec(ADMIN_SCRIPT, RERUN_SETUP, username=region.crm.admin_username, email=region.crm.admin_email,
              name=region.crm.admin_name),
        _spec(f"{LIB_DIR}/ekc_crm_urls.py", RERUN_SETUP),
        _spec(f"/etc/systemd/system/{SETUP_UNIT}.service", DAEMON_RELOAD, script=SETUP_SCRIPT),
        _spec(f"/etc/systemd/system/{MIGRATE_UNIT}.service", DAEMON_RELOAD, script=MIGRATE_SCRIPT,
              setup_unit=SETUP_UNIT, settings=SETTINGS, admin_password=ADMIN_PASSWORD, state_dir=STATE_DIR),
    ]


def _service_files(ctx: RenderContext) -> list[FileSpec]:
    """gunicorn and the call cards' sync under hardened units: dynamic user, read-only system, loopback and the
    database only (every member of a Patroni cluster: the one that takes writes changes at a failover)."""
    region = ctx.spec.region
    databases = " ".join(n.address for n in region.nodes_with("postgresql"))
    mail = mail_relay(region)
    return [
        _spec(f"/etc/systemd/system/{UNIT}.service", DAEMON_RELOAD, venv=VENV, settings=SETTINGS,
              setup_unit=SETUP_UNIT, state_dir=STATE_DIR, media_dir=MEDIA_DIR, port=GUNICORN_PORT,
              workers=GUNICORN_WORKERS, db_addresses=databases),
        _spec(f"/etc/systemd/system/{APPEALS_UNIT}.service", DAEMON_RELOAD, venv=VENV, settings=SETTINGS,
              state_dir=STATE_DIR, db_addresses=f"{databases} {mail['relay']}" if mail else databases),
    ]


def _nginx_files(ctx: RenderContext, node: Node) -> list[FileSpec]:
    """nginx: TLS with the node's certificate from the region CA, port 80 redirecting to https."""
    region = ctx.spec.region
    tls = ("tls", node.name)
    return [
        _spec(NGINX_SITE, RELOAD_NGINX, names=server_names(region, node), hostname=crm_hostname(region),
              cert=TLS_CERT, key=TLS_KEY, static=f"{STATE_DIR}/static/", port=GUNICORN_PORT, ca=CA_CERT,
              cti_path=CTI_PATH, ctis=click_to_call_upstreams(region), recordings=recordings_site(region),
              metrics=_metrics_site(region)),
        _spec(TLS_CERT, RELOAD_NGINX, comment=None,
              pem=ctx.secrets.get(*tls, "cert").strip()),
        _spec(TLS_KEY, RELOAD_NGINX, mode="0600", secret=True, comment=None,
              pem=ctx.secrets.get(*tls, "key").strip()),
    ]


def _metrics_site(region: Region) -> dict[str, object] | None:
    """The figures' own TLS port, open to the monitoring nodes alone (None in a region without one)."""
    monitors = region.nodes_with("monitoring")
    if not monitors:
        return None
    return {"port": CRM_METRICS_PORT, "path": CRM_METRICS_PATH, "allow": ["127.0.0.1", *(n.address for n in monitors)]}


def _workdays(region: Region, hours: str) -> list[int]:
    """The weekdays (0 = Monday) a department works: its schedule's days, Monday to Friday for 'always'."""
    if hours == "always" or hours not in region.telephony.schedules:
        return list(WORKDAYS_ALWAYS)
    days: set[int] = set()
    for span in region.telephony.schedules[hours]:
        first, _, last = span.partition("-")
        days.update(range(WEEKDAYS.index(first), WEEKDAYS.index(last or first) + 1))
    return sorted(days)


def catalogue(region: Region) -> dict[str, object]:
    """What the appeals app takes from the spec: departments with their topics, deadlines and working days, the
    holidays, each operator's extension by the name Asterisk logs (names two operators share are left out), and
    where the card's player finds a call's recording (None when the region's recordings cannot be played)."""
    names: dict[str, list[str]] = {}
    for op in region.telephony.operators:
        names.setdefault(op.name, []).append(op.extension)
    return {
        "region": region.region.code,
        "timezone": region.region.timezone,
        "departments": [{
            "code": d.id, "name": d.name, "topics": [{"code": t.code, "name": t.name} for t in d.topics],
            "register_working_days": d.deadlines.register_working_days, "answer_days": d.deadlines.answer_days,
            "near_due_days": d.deadlines.near_due_days, "workdays": _workdays(region, d.hours),
        } for d in region.telephony.departments],
        "holidays": sorted(day.isoformat() for day in region.telephony.holidays),
        "extensions": {name: exts[0] for name, exts in sorted(names.items()) if len(exts) == 1},
        "recordings": {"path": RECORDINGS_PATH} if recording_nodes(region) else None,
    }


def _app_files(ctx: RenderContext) -> list[FileSpec]:
    """The appeals app's sources, the Russian catalogues, their compiler, and the catalogue from the spec."""
    files = []
    for path in sorted(APP_SOURCE.rglob("*")):
        rel = path.relative_to(APP_SOURCE).as_posix()
        if not path.is_file() or "__pycache__" in rel or rel == "__init__.py":
            continue
        comment = "#" if path.suffix in (".py", ".po") else None
        files.append(FileSpec(f"{LIB_DIR}/{rel}", "crm/_source.j2", COMPONENT, {"source": path.read_text("utf-8")},
                              trigger=RERUN_SETUP, comment=comment))
    return [
        *files,
        FileSpec(MSGFMT, "crm/_source.j2", COMPONENT, {"source": MSGFMT_SOURCE.read_text("utf-8")},
                 mode="0755", trigger=RERUN_SETUP),
        _spec(CATALOGUE, RERUN_SETUP, comment=None,
              catalogue=json.dumps(catalogue(ctx.spec.region), ensure_ascii=False, indent=1, sort_keys=True)),
    ]
