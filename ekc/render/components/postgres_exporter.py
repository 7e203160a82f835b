"""postgres_exporter on every PostgreSQL node: the server's metrics and the contact center's KPI views.

It connects as role ``monitoring`` (vault ``postgresql.monitoring``) over TLS to the node's own name,
verifying the server against the region CA (``sslmode=verify-full``), and turns ``kpi.department_today``
into ``ekc_department_today_<column>{department=...}`` (service level, offered, abandoned, ...).
"""

from __future__ import annotations

from ekc.render.manifest import ServiceState, Trigger
from ekc.render.model import FileSpec, HostLayer, RenderContext
from schemas.region import Node

COMPONENT = "postgres_exporter"
SERVICE = "prometheus-postgres-exporter"
PORT = 9187
CONF_DIR = "/etc/prometheus/ekc-postgres"
QUERIES = f"{CONF_DIR}/queries.yaml"
DATABASE = "asterisk"
RESTART = Trigger("restart", SERVICE, f"systemctl restart {SERVICE}",
                  "postgres_exporter restarts; no calls dropped")
# kpi.department_today's columns (the contract with the PostgreSQL node) and what each becomes.
KPI_COLUMNS = (
    ("offered", "calls offered to the department's queue today"),
    ("answered", "calls answered today"),
    ("abandoned", "calls abandoned by the caller today"),
    ("service_level_pct", "percent of today's calls answered within the department's service-level time"),
    ("asa_s", "average speed of answer today, seconds"),
    ("aht_s", "average handling time today, seconds"),
    ("avg_rating", "average caller rating (1-5) today"),
)


def postgres_exporter_layer(ctx: RenderContext, node: Node) -> HostLayer:
    """The package, its connection (secret), the KPI queries and the CA it verifies the server with."""

    region = ctx.spec.region
    if not region.nodes_with("monitoring"):
        return HostLayer()  # nobody would scrape it
    fqdn = f"{node.name}.{region.network.domain}"
    password = ctx.secrets.get("postgresql", "monitoring")
    dsn = (f"postgresql://monitoring:{password}@{fqdn}:5432/{DATABASE}"
           f"?sslmode=verify-full&sslrootcert={CONF_DIR}/ca.crt")
    args = f"--web.listen-address=:{PORT} --extend.query-path={QUERIES} --disable-settings-metrics"
    files = [
        _spec(f"/etc/default/{SERVICE}", mode="0600", secret=True, dsn=dsn, args=args),
        _spec(QUERIES, columns=KPI_COLUMNS),
        _spec(f"{CONF_DIR}/ca.crt", comment=None, pem=ctx.secrets.get("ca", "cert")),
    ]
    serving = node.state == "active"  # a drained node runs no PostgreSQL to read
    return HostLayer(packages=[SERVICE], services=[ServiceState(SERVICE, enabled=serving, running=serving)],
                     files=files)


def _spec(path: str, *, mode: str = "0644", secret: bool = False, comment: str | None = "#",
          **data: object) -> FileSpec:

    return FileSpec(path, f"{COMPONENT}{path}.j2", COMPONENT, data, mode=mode, trigger=RESTART, secret=secret,
                    comment=comment)
