"""The base layer every host gets: identity, the bundle as the only package source, time, firewall, SSH, audit."""

from __future__ import annotations

import ipaddress
from collections import defaultdict

from ekc.render.components.dbcluster import is_cluster
from ekc.render.manifest import PORTLESS_PROTOCOLS, Flow, ServiceState, Trigger
from ekc.render.model import FileSpec, HostLayer, RenderContext
from schemas.region import Node
from schemas.types import Role

COMPONENT = "base"
BUNDLE_KEYRING = "/etc/apt/keyrings/ekc-bundle.asc"
BUNDLE_SUITE = "ekc"
DEPLOY_HOST_NAME = "ekc-deploy"

# python3-apt: Ansible's apt module needs it, so both engines leave the same package set.
PACKAGES = ("openssh-server", "nftables", "chrony", "auditd", "python3", "python3-apt", "ca-certificates")

# Algorithms that OpenSSH 9.2+ (the build machine's checker) and 10.x (forky) both accept and that the
# apply engines' SSH clients speak.
SSH_KEX = ("sntrup761x25519-sha512@openssh.com", "curve25519-sha256", "curve25519-sha256@libssh.org")
SSH_CIPHERS = ("chacha20-poly1305@openssh.com", "aes256-gcm@openssh.com", "aes128-gcm@openssh.com",
               "aes256-ctr", "aes128-ctr")
SSH_MACS = ("hmac-sha2-512-etm@openssh.com", "hmac-sha2-256-etm@openssh.com")

IDENTITY_FILES = ("/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow", "/etc/ssh/sshd_config",
                  "/etc/ssh/sshd_config.d/", "/root/.ssh/")
ROLE_WATCHES: dict[Role, tuple[str, ...]] = {
    "asterisk": ("/etc/asterisk/",),
    "postgresql": ("/etc/postgresql/",),
    "crm": ("/etc/ekc-crm/", "/etc/nginx/"),
    "monitoring": ("/etc/prometheus/", "/etc/nginx/"),
    "etcd": ("/etc/etcd/", "/etc/default/etcd"),
    "sip-proxy": ("/etc/kamailio/", "/etc/keepalived/"),
}
# A PostgreSQL node of a Patroni cluster: Patroni's configuration too.
CLUSTER_WATCHES = ("/etc/patroni/",)

NO_TRIGGER = Trigger()
RESTART_CHRONY = Trigger("restart", "chrony", "systemctl restart chrony", "time sync restarts; no calls dropped")
# The ruleset is loaded by nft itself, not through nftables.service: on a fresh host the service starts only in
# the services step, after the restart triggers, and connections opened before it (etcd's peers, Asterisk's
# database connection) would then be taken for new ones mid-stream and dropped. A trigger that names no
# service runs first, so the firewall is in force before any other service restarts.
RELOAD_NFT = Trigger("reload", None, "nft -f /etc/nftables.conf",
                     "atomic ruleset swap; established connections kept")
RELOAD_SSH = Trigger("reload", "ssh", "systemctl reload ssh", "new SSH sessions use it; open sessions kept")
RELOAD_AUDIT = Trigger("reload", "auditd", "augenrules --load", "audit rules replaced in the kernel")
DAEMON_RELOAD = Trigger("reload", None, "systemctl daemon-reload", "systemd rereads unit files")
APT_UPDATE = Trigger("reload", None, "apt-get update", "package lists reread from the bundle")
SET_HOSTNAME = Trigger("reload", None, "hostname -F /etc/hostname", "the host's name changes")


def base_layer(ctx: RenderContext, node: Node) -> HostLayer:
    """Files, packages and services of the base layer for ``node``."""

    region = ctx.spec.region
    fqdn = f"{node.name}.{region.network.domain}"

    def spec(path: str, trigger: Trigger = NO_TRIGGER, comment: str = "#", mode: str = "0644",
             **data: object) -> FileSpec:
        template = f"{COMPONENT}{path}.j2"
        return FileSpec(path, template, COMPONENT, data, mode=mode, trigger=trigger, comment=comment)

    files = [
        spec("/etc/hostname", SET_HOSTNAME, hostname=node.name),
        spec("/etc/hosts", entries=_hosts_entries(ctx)),
        spec("/etc/apt/sources.list", APT_UPDATE),
        spec("/etc/apt/sources.list.d/ekc.sources", APT_UPDATE, uri=bundle_uri(ctx), suite=BUNDLE_SUITE,
             keyring=BUNDLE_KEYRING),
        spec("/etc/apt/apt.conf.d/90ekc", comment="//"),
        spec(BUNDLE_KEYRING, APT_UPDATE, key=ctx.secrets.get("bundle", "signing_key", "public").strip()),
        spec("/etc/chrony/chrony.conf", RESTART_CHRONY, servers=region.network.ntp),
        spec("/etc/nftables.conf", RELOAD_NFT, host=fqdn, rules=firewall_rules(ctx.flows, node)),
        spec("/etc/ssh/sshd_config.d/10-ekc-hardening.conf", RELOAD_SSH, allow_users=["root"],
             kex=SSH_KEX, ciphers=SSH_CIPHERS, macs=SSH_MACS),
        spec("/root/.ssh/authorized_keys", mode="0600", keys=_authorized_keys(ctx)),
        spec("/etc/audit/rules.d/50-ekc.rules", RELOAD_AUDIT, mode="0640", host=fqdn,
             identity=IDENTITY_FILES, watches=_audit_watches(node, is_cluster(ctx.spec.region))),
        spec("/etc/systemd/system/auditd.service.d/10-ekc-container.conf", DAEMON_RELOAD),
        spec("/etc/systemd/system/audit-rules.service.d/10-ekc-container.conf", DAEMON_RELOAD),
    ]
    services = [ServiceState(name) for name in ("ssh", "nftables", "chrony", "auditd")]
    absent = ["/etc/apt/sources.list.d/debian.sources"]
    return HostLayer(packages=list(PACKAGES), services=services, files=files, absent=absent)


def bundle_uri(ctx: RenderContext) -> str:
    """Where the nodes fetch packages: the bundle served by the deploy host inside the contour."""
    net = ctx.spec.region.network
    return f"http://{net.deploy_host}:{net.bundle_port}/apt"


def _hosts_entries(ctx: RenderContext) -> list[dict[str, str]]:
    region = ctx.spec.region
    domain = region.network.domain
    entries = [{"address": n.address, "fqdn": f"{n.name}.{domain}", "name": n.name} for n in region.nodes]
    deploy = region.network.deploy_host
    entries.append({"address": deploy, "fqdn": f"{DEPLOY_HOST_NAME}.{domain}", "name": DEPLOY_HOST_NAME})
    return entries


def _authorized_keys(ctx: RenderContext) -> list[str]:
    deploy = ctx.secrets.get("ssh", "deploy", "public").strip()
    return [deploy, *ctx.spec.region.access.ssh_authorized_keys]


def _audit_watches(node: Node, cluster: bool) -> list[dict[str, str]]:
    watches = [{"path": "/etc/nftables.conf", "key": "firewall"}, {"path": "/etc/apt/", "key": "packages"}]
    for role in node.roles:
        watches.extend({"path": path, "key": f"{role}_config"} for path in ROLE_WATCHES[role])
        if role == "postgresql" and cluster:
            watches.extend({"path": path, "key": "patroni_config"} for path in CLUSTER_WATCHES)
    unique = {w["path"]: w for w in watches}
    return [unique[path] for path in sorted(unique)]


def firewall_rules(flows: tuple[Flow, ...], node: Node) -> list[dict[str, object]]:
    """The node's accept rules: one per (proto, port range), with every allowed source; ``match`` is nft's
    expression for what the rule admits (``tcp dport 22``, or ``ip protocol 112`` for VRRP, a protocol without
    ports: by number, since nft resolves a name through /etc/protocols, which a minimal server may lack)."""
    grouped: dict[tuple[str, int, int | None], tuple[set[str], set[str]]] = defaultdict(lambda: (set(), set()))
    for flow in flows:
        if flow.target == node.name:
            sources, purposes = grouped[(flow.proto, flow.port, flow.port_end)]
            sources.add(flow.source_cidr)
            purposes.add(flow.purpose)
    return [
        {
            "match": _match(proto, port, end),
            "sources": _collapse(sources),
            "purpose": "; ".join(sorted(purposes)),
        }
        for (proto, port, end), (sources, purposes) in sorted(grouped.items(), key=lambda i: (i[0][1], i[0][0]))
    ]


def _match(proto: str, port: int, end: int | None) -> str:
    if proto in PORTLESS_PROTOCOLS:
        return f"ip protocol {PORTLESS_PROTOCOLS[proto]}"
    return f"{proto} dport {port}-{end}" if end else f"{proto} dport {port}"


def _collapse(cidrs: set[str]) -> list[str]:
    """Sources as nft accepts them in one set: no network inside another, sorted by address."""
    nets = ipaddress.collapse_addresses(ipaddress.IPv4Network(c) for c in cidrs)
    return [str(net) for net in nets]
