"""The monitoring node: Prometheus, Alertmanager, the blackbox exporter and the wallboard (nginx, TLS).

Targets come from the spec alone: every node's node_exporter, every Asterisk node's res_prometheus and
queue exporter, every PostgreSQL node's postgres_exporter, every SIP proxy's Kamailio, a blackbox probe
of every CRM over HTTPS and of every Asterisk node's SIP TCP port. Adding a node to the spec adds its targets
at the next apply.

Prometheus and Alertmanager speak TLS with the node's certificate and ask for basic authentication (bcrypt
hashes from the vault, in their web configuration files, which they re-read on every request). The
wallboard is static HTML and JavaScript served by nginx, which proxies GET /api/v1/query alone to
Prometheus and adds the wallboard user's credentials itself, so the hall's screens need no password.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from ekc.render.components.addresses import CRM_METRICS_PATH, CRM_METRICS_PORT
from ekc.render.components.dbcluster import ETCD_METRICS_PORT, PATRONI_PORT, is_cluster, serving_nodes
from ekc.render.components.sipedge import METRICS_PORT as KAMAILIO_METRICS_PORT
from ekc.render.components.sipedge import VRRP_INSTANCE, proxies
from ekc.render.manifest import ServiceState, Trigger
from ekc.render.model import FileSpec, HostLayer, RenderContext
from schemas.region import Node, Region

COMPONENT = "monitoring"
PACKAGES = ("prometheus", "prometheus-alertmanager", "prometheus-blackbox-exporter", "nginx")

SECRETS_DIR = "/etc/prometheus/ekc"
RULES_FILE = "/etc/prometheus/rules/ekc.rules.yml"
WALLBOARD_ROOT = "/var/www/ekc-wallboard"
WALLBOARD_TLS = "/etc/nginx/ekc-wallboard"
BLACKBOX_LISTEN = "127.0.0.1:9115"

PROMETHEUS_PORT = 9090
ALERTMANAGER_PORT = 9093
NODE_EXPORTER_PORT = 9100
POSTGRES_EXPORTER_PORT = 9187
QUEUE_EXPORTER_PORT = 9250
ASTERISK_METRICS_PORT = 8088
ASTERISK_METRICS_USER = "prometheus"

# Alert thresholds the spec does not set (the department's service-level target does come from the spec).
ABANDONED_MAX_PCT = 10  # abandoned calls today, percent of offered
MIN_CALLS_FOR_KPI_ALERTS = 10  # no service-level or abandoned alert on fewer calls today than this
BACKUP_MAX_AGE_H = 26  # a daily backup plus two hours of slack
DISK_FREE_MIN_PCT = 10
# How long a condition must hold before the alert fires (the rule's ``for``).
FOR_NODE_DOWN = "1m"
FOR_ASTERISK_DOWN = "30s"
FOR_TRUNK = "1m"
FOR_KPI = "5m"
FOR_DISK = "10m"
FOR_BACKUP = "10m"
FOR_TASKS = "1m"  # an appeal's task past its deadline stays so: no flapping to ride out
FOR_MAILS = "30m"  # the relay refusing letters to citizens for that long
FOR_DB_LEADER = "30s"  # longer than a failover takes (Patroni's ttl plus a loop)
FOR_DB_LAG = "2m"
FOR_PROXY_DOWN = "30s"
FOR_OUT_OF_DISPATCHER = "10s"  # the proxies take a node out after 2 failed probes (about 2 s)
FOR_NO_VIRTUAL_ADDRESS = "10s"  # longer than a move of the address takes (3-4 s)
MOVED_WINDOW = "5m"
GROUP_WAIT_S = 5

RELOAD_PROMETHEUS = Trigger("reload", "prometheus", "systemctl reload prometheus",
                            "Prometheus rereads its configuration and rules (SIGHUP); no calls dropped")
RESTART_PROMETHEUS = Trigger("restart", "prometheus", "systemctl restart prometheus",
                             "Prometheus restarts (a few seconds without scrapes); no calls dropped")
RELOAD_ALERTMANAGER = Trigger("reload", "prometheus-alertmanager", "systemctl reload prometheus-alertmanager",
                              "Alertmanager rereads its configuration (SIGHUP); no calls dropped")
RESTART_ALERTMANAGER = Trigger("restart", "prometheus-alertmanager", "systemctl restart prometheus-alertmanager",
                               "Alertmanager restarts; pending notifications are kept on disk; no calls dropped")
RESTART_BLACKBOX = Trigger("restart", "prometheus-blackbox-exporter",
                           "systemctl restart prometheus-blackbox-exporter",
                           "the blackbox exporter restarts; no calls dropped")
RELOAD_BLACKBOX = Trigger("reload", "prometheus-blackbox-exporter", "systemctl reload prometheus-blackbox-exporter",
                          "the blackbox exporter rereads its modules (SIGHUP); no calls dropped")
RELOAD_NGINX = Trigger("reload", "nginx", "systemctl reload nginx",
                       "nginx rereads its configuration; open connections finish; no calls dropped")
# The web configuration files (TLS, users) are re-read on every request: nothing to run.
WEB_CONFIG = Trigger("none", None, None, "read again on the next request; no calls dropped")
# Credentials read when Prometheus connects: a reload makes it reread them at once.
NO_TRIGGER = Trigger()


@dataclass(frozen=True)
class Target:
    """One scrape target: where, and the node it belongs to (the ``node`` label of every series)."""

    address: str
    node: str


def fqdn(region: Region, node: Node) -> str:
    """The node's name in the region's domain (its certificate carries it)."""
    return f"{node.name}.{region.network.domain}"


def monitoring_urls(region: Region) -> list[str]:
    """Where people look: each monitoring node's wallboard, Prometheus and Alertmanager (for ``make demo``)."""
    return [
        f"{n.name}: wallboard https://{n.address}/  Prometheus https://{n.address}:{PROMETHEUS_PORT}/  "
        f"Alertmanager https://{n.address}:{ALERTMANAGER_PORT}/ (users prometheus_admin, alertmanager_admin: "
        f"passwords in the vault, monitoring.*)"
        for n in region.nodes_with("monitoring")
    ]


def scrape_jobs(region: Region) -> list[dict[str, object]]:
    """Every scrape job with its targets, from the spec's nodes and roles."""
    def targets(nodes: list[Node], port: int) -> list[Target]:
        return [Target(f"{fqdn(region, n)}:{port}", n.name) for n in nodes]

    monitors = region.nodes_with("monitoring")
    asterisks = region.nodes_with("asterisk")
    databases = serving_nodes(region)  # a drained database node runs neither PostgreSQL nor Patroni
    return [
        {"name": "node", "scheme": "http", "auth": None, "targets": targets(region.nodes, NODE_EXPORTER_PORT)},
        {"name": "asterisk", "scheme": "http", "auth": ("prometheus", "asterisk_metrics"),
         "targets": targets(asterisks, ASTERISK_METRICS_PORT)},
        {"name": "queues", "scheme": "http", "auth": None, "targets": targets(asterisks, QUEUE_EXPORTER_PORT)},
        {"name": "postgres", "scheme": "http", "auth": None, "targets": targets(databases, POSTGRES_EXPORTER_PORT)},
        # A Patroni cluster's members (REST API over TLS) and etcd members: none in a region with one database.
        {"name": "patroni", "scheme": "https", "auth": None,
         "targets": targets(databases, PATRONI_PORT) if is_cluster(region) else []},
        {"name": "etcd", "scheme": "http", "auth": None,
         "targets": targets(region.nodes_with("etcd"), ETCD_METRICS_PORT)},
        # The SIP edge's proxies (xhttp_prom): none in a region without sip-proxy nodes.
        {"name": "kamailio", "scheme": "http", "auth": None,
         "targets": targets(region.nodes_with("sip-proxy"), KAMAILIO_METRICS_PORT)},
        # Each CRM node's appeals figures (tasks open, near due, overdue) on their own TLS port.
        {"name": "crm_appeals", "scheme": "https", "auth": None, "path": CRM_METRICS_PATH,
         "targets": targets(region.nodes_with("crm"), CRM_METRICS_PORT)},
        {"name": "prometheus", "scheme": "https", "auth": ("prometheus_admin", "prometheus_admin"),
         "targets": targets(monitors, PROMETHEUS_PORT)},
        {"name": "alertmanager", "scheme": "https", "auth": ("alertmanager_admin", "alertmanager_admin"),
         "targets": targets(monitors, ALERTMANAGER_PORT)},
    ]


def probe_jobs(region: Region) -> list[dict[str, object]]:
    """Blackbox probes: each CRM's HTTPS front page, each Asterisk node's SIP TCP port."""
    # Each CRM node by its own name (its certificate's), asking for the CRM's site (module https_crm) and its
    # login page: a path only the CRM serves (on a node that also carries the wallboard, nginx's other site
    # answers 404 there, so the probe never mistakes the wallboard for the CRM).
    https = [Target(f"https://{fqdn(region, n)}/creme_login", n.name) for n in region.nodes_with("crm")]
    sip = [Target(f"{fqdn(region, n)}:{region.telephony.sip_port}", n.name) for n in region.nodes_with("asterisk")]
    return [
        {"name": "crm_https", "module": "https_crm", "targets": https},
        {"name": "sip", "module": "sip_tcp", "targets": sip},
    ]


def department_rules(region: Region) -> list[dict[str, object]]:
    """Per department: its id, name and service-level target (the alert threshold comes from the spec)."""
    return [
        {"id": d.id, "name": d.name, "target_pct": d.queue.service_level.target_pct,
         "within_s": d.queue.service_level.within_s}
        for d in region.telephony.departments
    ]


def alert_routes(region: Region) -> dict[str, object]:
    """Alertmanager's receivers: one per severity, with every receiver's address that takes that severity."""
    mon = region.monitoring
    by_severity: dict[str, list[str]] = {"critical": [], "warning": []}
    for receiver in mon.alert_receivers:
        for severity in receiver.severities:
            by_severity[severity].extend(e for e in receiver.email if e not in by_severity[severity])
    smtp = mon.smtp
    return {
        "smtp": None if smtp is None else {"smarthost": f"{smtp.relay}:{smtp.port}", "sender": smtp.sender,
                                           "tls": smtp.tls},
        "severities": [{"name": s, "emails": emails} for s, emails in by_severity.items()
                       if emails and smtp is not None],
        "group_wait_s": GROUP_WAIT_S,
    }


def monitoring_layer(ctx: RenderContext, node: Node) -> HostLayer:
    """Prometheus, Alertmanager, the blackbox exporter and the wallboard on a monitoring node."""

    files = [*_prometheus_files(ctx, node), *_alertmanager_files(ctx, node), *_blackbox_files(ctx),
             *_wallboard_files(ctx, node), *_tls_files(ctx, node)]
    services = [ServiceState(name) for name in
                ("prometheus", "prometheus-alertmanager", "prometheus-blackbox-exporter", "nginx")]
    absent = ["/etc/nginx/sites-enabled/default"]
    return HostLayer(packages=list(PACKAGES), services=services, files=files, absent=absent)


def _spec(path: str, trigger: Trigger = NO_TRIGGER, *, mode: str = "0644", group: str = "root",
          secret: bool = False, comment: str | None = "#", **data: object) -> FileSpec:

    return FileSpec(path, f"{COMPONENT}{path}.j2", COMPONENT, data, mode=mode, group=group, trigger=trigger,
                    secret=secret, comment=comment)


def _spec_with(path: str, trigger: Trigger, data: dict[str, object]) -> FileSpec:

    return FileSpec(path, f"{COMPONENT}{path}.j2", COMPONENT, data, trigger=trigger)


def _secret_file(ctx: RenderContext, path: str, value: str, trigger: Trigger, group: str = "prometheus") -> FileSpec:

    return FileSpec(path, f"{COMPONENT}/secret.j2", COMPONENT, {"value": value}, mode="0640", group=group,
                    trigger=trigger, secret=True, comment=None)


def _prometheus_files(ctx: RenderContext, node: Node) -> list[FileSpec]:
    region = ctx.spec.region
    mon = region.monitoring
    interval = f"{mon.scrape_interval_s}s"
    monitors = [fqdn(region, n) for n in region.nodes_with("monitoring")]
    args = [
        "--config.file=/etc/prometheus/prometheus.yml",
        "--storage.tsdb.path=/var/lib/prometheus/metrics2/",
        f"--storage.tsdb.retention.time={mon.retention_days}d",
        "--web.config.file=/etc/prometheus/web.yml",
        f"--web.listen-address=:{PROMETHEUS_PORT}",
        f"--web.external-url=https://{fqdn(region, node)}:{PROMETHEUS_PORT}/",
    ]
    return [
        _spec("/etc/default/prometheus", RESTART_PROMETHEUS, args=" ".join(args)),
        _spec("/etc/prometheus/prometheus.yml", RELOAD_PROMETHEUS, interval=interval, region_code=region.region.code,
              secrets_dir=SECRETS_DIR, rules=RULES_FILE, alertmanagers=[f"{m}:{ALERTMANAGER_PORT}" for m in monitors],
              jobs=scrape_jobs(region), probes=probe_jobs(region), blackbox=BLACKBOX_LISTEN),
        _spec_with(RULES_FILE, RELOAD_PROMETHEUS, _rule_data(region)),
        _spec("/etc/prometheus/web.yml", WEB_CONFIG, secrets_dir=SECRETS_DIR,
              users=_web_users(ctx, ("prometheus_admin", "wallboard"))),
        _secret_file(ctx, f"{SECRETS_DIR}/prometheus_admin.pass", ctx.secrets.get("monitoring", "prometheus_admin"),
                     RELOAD_PROMETHEUS),
        _secret_file(ctx, f"{SECRETS_DIR}/alertmanager_admin.pass",
                     ctx.secrets.get("monitoring", "alertmanager_admin"), RELOAD_PROMETHEUS),
        _secret_file(ctx, f"{SECRETS_DIR}/asterisk_metrics.pass", ctx.secrets.get("monitoring", "asterisk_metrics"),
                     RELOAD_PROMETHEUS),
    ]


def _rule_data(region: Region) -> dict[str, object]:
    return {
        "departments": department_rules(region),
        "abandoned_max_pct": ABANDONED_MAX_PCT,
        "min_calls": MIN_CALLS_FOR_KPI_ALERTS,
        "backup_max_age_s": BACKUP_MAX_AGE_H * 3600,
        "backup_max_age_h": BACKUP_MAX_AGE_H,
        "disk_free_min_pct": DISK_FREE_MIN_PCT,
        "for_node": FOR_NODE_DOWN, "for_asterisk": FOR_ASTERISK_DOWN, "for_trunk": FOR_TRUNK, "for_kpi": FOR_KPI,
        "for_disk": FOR_DISK, "for_backup": FOR_BACKUP, "for_tasks": FOR_TASKS, "for_mails": FOR_MAILS,
        "crm": bool(region.nodes_with("crm")),
        "cluster": _cluster_rule_data(region),
        "edge": _edge_rule_data(region),
    }


def _edge_rule_data(region: Region) -> dict[str, object] | None:
    """The numbers of the SIP edge's alerts, or None without sip-proxy nodes."""
    if not proxies(region):
        return None
    return {
        "proxies": len(proxies(region)), "instance": VRRP_INSTANCE, "for_proxy": FOR_PROXY_DOWN,
        "for_dispatcher": FOR_OUT_OF_DISPATCHER, "for_no_address": FOR_NO_VIRTUAL_ADDRESS, "window": MOVED_WINDOW,
        # A drained Asterisk node is disabled in the dispatcher on purpose: its probes are not a failure.
        "target_filter": _drained_filter(region),
    }


def _drained_filter(region: Region) -> str:
    """The PromQL label matcher that leaves the drained Asterisk nodes out (empty when none is drained)."""
    drained = [n.name for n in region.nodes_with("asterisk") if n.state == "drain"]
    return f'{{asterisk!~"{"|".join(drained)}"}}' if drained else ""


def _cluster_rule_data(region: Region) -> dict[str, object] | None:
    """The numbers of the database cluster's alerts, or None with one database node."""
    if not is_cluster(region):
        return None
    etcd = len(region.nodes_with("etcd"))
    return {
        # A drained member has left the cluster (its Patroni stopped): it is not expected among the members.
        "members": len(region.active_nodes_with("postgresql")), "etcd": etcd, "quorum": etcd // 2 + 1,
        "max_lag_mb": region.database.max_lag_mb, "max_lag_bytes": region.database.max_lag_mb * 1024 * 1024,
        "for_leader": FOR_DB_LEADER, "for_member": FOR_NODE_DOWN, "for_lag": FOR_DB_LAG,
    }


def _web_users(ctx: RenderContext, users: tuple[str, ...]) -> list[dict[str, str]]:
    return [{"name": user, "hash": ctx.secrets.get("monitoring", "bcrypt", user)} for user in users]


def _alertmanager_files(ctx: RenderContext, node: Node) -> list[FileSpec]:
    region = ctx.spec.region
    args = [
        "--config.file=/etc/prometheus/alertmanager.yml",
        "--storage.path=/var/lib/prometheus/alertmanager/",
        "--web.config.file=/etc/prometheus/alertmanager-web.yml",
        f"--web.listen-address=:{ALERTMANAGER_PORT}",
        f"--web.external-url=https://{fqdn(region, node)}:{ALERTMANAGER_PORT}/",
        "--cluster.listen-address=",  # no gossip port: each monitoring node alerts on its own
    ]
    return [
        _spec("/etc/default/prometheus-alertmanager", RESTART_ALERTMANAGER, args=" ".join(args)),
        _spec_with("/etc/prometheus/alertmanager.yml", RELOAD_ALERTMANAGER,
                   {"hello": fqdn(region, node), "region_name": region.region.name, **alert_routes(region)}),
        _spec("/etc/prometheus/alertmanager-web.yml", WEB_CONFIG, secrets_dir=SECRETS_DIR,
              users=_web_users(ctx, ("alertmanager_admin",))),
    ]


def _blackbox_files(ctx: RenderContext) -> list[FileSpec]:
    args = f"--config.file=/etc/prometheus/blackbox.yml --web.listen-address={BLACKBOX_LISTEN}"
    return [
        _spec("/etc/default/prometheus-blackbox-exporter", RESTART_BLACKBOX, args=args),
        _spec("/etc/prometheus/blackbox.yml", RELOAD_BLACKBOX, ca=f"{SECRETS_DIR}/ca.crt",
              crm_host=ctx.spec.region.crm.hostname or f"crm.{ctx.spec.region.network.domain}"),
    ]


def _tls_files(ctx: RenderContext, node: Node) -> list[FileSpec]:
    cert = ctx.secrets.get("tls", node.name, "cert")
    key = ctx.secrets.get("tls", node.name, "key")
    ca = ctx.secrets.get("ca", "cert")
    return [
        _spec(f"{SECRETS_DIR}/tls.crt", NO_TRIGGER, comment=None, pem=cert),
        _spec(f"{SECRETS_DIR}/ca.crt", RELOAD_PROMETHEUS, comment=None, pem=ca),
        _secret_file(ctx, f"{SECRETS_DIR}/tls.key", key, WEB_CONFIG),
        _spec(f"{WALLBOARD_TLS}/tls.crt", RELOAD_NGINX, comment=None, pem=cert),
        _spec(f"{WALLBOARD_TLS}/ca.crt", RELOAD_NGINX, comment=None, pem=ca),
        _secret_file(ctx, f"{WALLBOARD_TLS}/tls.key", key, RELOAD_NGINX, group="root"),
    ]


ROLE_NAMES = {"asterisk": "Asterisk", "postgresql": "PostgreSQL", "etcd": "etcd", "crm": "CRM",
              "monitoring": "мониторинг", "sip-proxy": "SIP-прокси"}
STATE_NAMES = {"active": "в работе", "drain": "выводится"}


def wallboard_servers(region: Region) -> list[dict[str, object]]:
    """The wallboard's server tiles: every node that is not absent, its roles and spec state, and the facts the
    page reads from Prometheus for it (``wallboard.js`` has a query per fact): up for all; whether a proxy holds
    the virtual address; an Asterisk node in the edge's dispatcher (or its Asterisk up, without an edge); a
    cluster member leading or replicating (or PostgreSQL up, without a cluster)."""
    edge = bool(proxies(region))
    cluster = is_cluster(region)
    servers: list[dict[str, object]] = []
    for node in region.nodes:
        if node.state == "absent":
            continue
        facts = ["up"]
        if "sip-proxy" in node.roles:
            facts.append("vip")
        if "asterisk" in node.roles:
            facts.append("dispatcher" if edge else "asterisk")
        if "postgresql" in node.roles:
            facts.append("leader" if cluster else "database")
        servers.append({"name": node.name, "roles": ", ".join(ROLE_NAMES[r] for r in node.roles),
                        "state": node.state, "state_name": STATE_NAMES[node.state], "facts": facts})
    return servers


def _wallboard_files(ctx: RenderContext, node: Node) -> list[FileSpec]:
    region = ctx.spec.region
    password = ctx.secrets.get("monitoring", "wallboard")
    token = password if ctx.redacted else base64.b64encode(f"wallboard:{password}".encode()).decode("ascii")
    names = [node.name, fqdn(region, node), node.address]
    tiles = [{"id": d.id, "name": d.name, "target_pct": d.queue.service_level.target_pct,
              "within_s": d.queue.service_level.within_s} for d in region.telephony.departments]
    # No spec hash here: a file changes only when its own content does (the hash is in the manifest).
    origin = f"generated by ekc from {ctx.spec.display_path}; do not edit by hand"
    return [
        _spec("/etc/nginx/conf.d/ekc-wallboard.conf", RELOAD_NGINX, server_names=names, root=WALLBOARD_ROOT,
              tls=WALLBOARD_TLS, upstream=f"127.0.0.1:{PROMETHEUS_PORT}", upstream_name=fqdn(region, node)),
        _auth_snippet(f"{WALLBOARD_TLS}/auth.conf", token),
        _spec(f"{WALLBOARD_ROOT}/index.html", NO_TRIGGER, comment=None, origin=origin, region=region.region.name,
              tiles=tiles, servers=wallboard_servers(region),
              refresh_s=max(5, min(region.monitoring.scrape_interval_s, 15))),
        _spec(f"{WALLBOARD_ROOT}/wallboard.js", NO_TRIGGER, comment="//"),
        _spec(f"{WALLBOARD_ROOT}/wallboard.css", NO_TRIGGER, comment=None, origin=origin),
    ]


def _auth_snippet(path: str, token: str) -> FileSpec:
    """nginx's snippet that adds the wallboard user's Authorization header to proxied queries."""

    return FileSpec(path, f"{COMPONENT}{path}.j2", COMPONENT, {"token": token}, mode="0640", group="root",
                    trigger=RELOAD_NGINX, secret=True)

