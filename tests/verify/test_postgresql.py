"""PostgreSQL nodes: TLS-only access, no weak pg_hba line, non-TLS connections refused, the roles and their limits.

The refusals are tried on the database node itself over loopback, so the firewall (which admits only the flow
matrix's clients) cannot be what refuses: it is PostgreSQL's own pg_hba.
"""

from __future__ import annotations

import pytest

from tests.verify.conftest import MANIFEST, SKIP_REASON, Host, Nodes, fail, parametrize_hosts

if MANIFEST is None:
    pytest.skip(SKIP_REASON, allow_module_level=True)

HBA = "/etc/postgresql/18/main/pg_hba.conf"
WEAK_METHODS = {"trust", "md5", "password", "ident"}
ROLE_LIMITS = {"asterisk": 20, "crm": 40, "monitoring": 5}

# A StartupMessage without SSLRequest (protocol 3.0), and the first reply's type and text.
PLAIN_STARTUP = r"""
import socket, struct, sys
params = b"user\0asterisk\0database\0asterisk\0\0"
body = struct.pack("!i", 196608) + params
s = socket.create_connection((sys.argv[1], 5432), timeout=10)
s.sendall(struct.pack("!i", len(body) + 4) + body)
reply = s.recv(4096)
print(reply[:1].decode("latin-1"), reply[5:].replace(b"\0", b" ").decode("utf-8", "replace"))
"""


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    parametrize_hosts(metafunc, "db", "postgresql")


def _psql(host: Host, sql: str, db: str = "postgres") -> str:
    out = host.run(f"runuser -u postgres -- psql -X -At -d {db} -c \"{sql}\"")
    assert out.rc == 0, out.stderr
    return str(out.stdout)


def test_pg_hba_has_no_trust_md5_or_non_tls_line(nodes: Nodes, db: str) -> None:
    host = nodes(db)
    problems = []
    for number, line in enumerate(host.file(HBA).content_string.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if words[0] in {"host", "hostnossl"} or WEAK_METHODS & set(words):
            problems.append(f"{HBA}:{number}: {line.strip()}")
        if words[0] == "local" and words[2:] != ["postgres", "peer"]:
            problems.append(f"{HBA}:{number}: local login other than postgres by peer: {line.strip()}")
    live = _psql(host, "SELECT line_number, type, auth_method, coalesce(error, '') FROM pg_hba_file_rules")
    for row in live.splitlines():
        number, kind, method, error = row.split("|")
        if error or kind in {"host", "hostnossl"} or method in WEAK_METHODS:
            problems.append(f"live rule {number}: {kind} {method} {error}".strip())
    fail(problems)


def test_tls_is_on_with_the_region_certificate(nodes: Nodes, db: str) -> None:
    host = nodes(db)
    settings = _psql(host, "SELECT name, setting FROM pg_settings WHERE name IN "
                           "('ssl', 'ssl_cert_file', 'password_encryption')")
    values = dict(line.split("|") for line in settings.splitlines())
    assert values == {"ssl": "on", "ssl_cert_file": "/etc/postgresql/18/main/ekc-server.crt",
                      "password_encryption": "scram-sha-256"}


def test_non_tls_connection_is_refused(nodes: Nodes, db: str) -> None:
    host = nodes(db)
    out = host.run(f"python3 -c '{PLAIN_STARTUP}' 127.0.0.1")
    assert out.rc == 0, out.stderr
    kind, _, text = str(out.stdout).partition(" ")
    assert kind == "E" and "no pg_hba.conf entry" in text and "no encryption" in text, out.stdout


def test_a_role_is_refused_on_another_applications_database(nodes: Nodes, db: str) -> None:
    """TLS alone is not enough: role asterisk may open database asterisk only, never the CRM's (role crm may
    also open database asterisk, where it may read the view of queued calls' events only)."""
    out = nodes(db).run("PGPASSWORD=wrong psql -X -At 'host=127.0.0.1 dbname=crm user=asterisk sslmode=require' "
                        "-c 'SELECT 1'")
    assert out.rc != 0 and "no pg_hba.conf entry" in out.stderr and "SSL encryption" in out.stderr, out.stderr


def test_wrong_password_over_tls_is_refused(nodes: Nodes, db: str) -> None:
    """The metrics exporter's role may come from loopback on a database node: with a wrong password, it may not."""
    if not any("monitoring" in h.roles for h in MANIFEST.hosts):  # type: ignore[union-attr]
        pytest.skip("the region has no monitoring node, so no role may log in from this node itself")
    out = nodes(db).run("PGPASSWORD=wrong psql -X -At 'host=127.0.0.1 dbname=asterisk user=monitoring "
                        "sslmode=require' -c 'SELECT 1'")
    assert out.rc != 0 and "password authentication failed" in out.stderr, out.stderr


def test_application_roles_exist_with_their_limits(nodes: Nodes, db: str) -> None:
    host = nodes(db)
    rows = _psql(host, "SELECT rolname, rolconnlimit, rolsuper OR rolcreaterole OR rolcreatedb OR rolreplication "
                       "FROM pg_roles WHERE rolname IN ('asterisk', 'crm', 'monitoring')")
    found = {name: (int(limit), flag) for name, limit, flag in (row.split("|") for row in rows.splitlines())}
    assert found == {role: (limit, "f") for role, limit in ROLE_LIMITS.items()}


def test_kpi_views_answer(nodes: Nodes, db: str) -> None:
    host = nodes(db)
    departments = _psql(host, "SELECT count(*) FROM ekc.departments", db="asterisk").strip()
    today = _psql(host, "SELECT count(*) FROM kpi.department_today", db="asterisk").strip()
    assert departments == today and int(today) > 0
