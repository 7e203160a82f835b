"""Where people reach the contact center a spec builds, and where each login comes from (never the secret).

``./deploy.py endpoints SPEC`` prints it, and ``make demo`` ends with it: the CRM, the wallboard, Prometheus,
Alertmanager, the phones' SIP registrar and click-to-call, each with its address and the vault path of its
password, so nobody has to read a configuration file to find them.
"""

from __future__ import annotations

from dataclasses import dataclass

from ekc.render.components.addresses import (
    CTI_PATH,
    RECORDINGS_PATH,
    click_to_call_nodes,
    crm_hostname,
    recording_nodes,
)
from ekc.render.components.cti import PORT as CTI_PORT
from ekc.render.components.monitoring import ALERTMANAGER_PORT, PROMETHEUS_PORT
from ekc.render.components.sipedge import edge, proxies
from schemas.region import Region


@dataclass(frozen=True)
class Endpoint:
    """One thing people open or register to: what it is, on which node, its address, and how to log in."""

    service: str
    node: str
    address: str
    login: str


def endpoints(region: Region) -> list[Endpoint]:
    """Every endpoint of the region, in a fixed order: telephony, CRM, monitoring."""
    found: list[Endpoint] = []
    tel = region.telephony
    login = "user = the extension; password: vault sip.<extension>"
    sip_edge = edge(region)
    if sip_edge is not None:  # phones register at the edge's virtual address, whichever proxy holds it
        found.append(Endpoint("SIP registrar (phones)", ", ".join(n.name for n in proxies(region)),
                              f"sip:{sip_edge.virtual_address}:{tel.sip_port}", login))
    for node in region.nodes_with("asterisk"):
        if sip_edge is None:
            transport = f"sip:{node.address}:{tel.sip_port}" + (
                f", sips:{node.address}:{tel.sip_tls.port}" if tel.sip_tls.enabled else "")
            found.append(Endpoint("SIP registrar (phones)", node.name, transport, login))
    ctis = ", ".join(f"{n.name} {n.address}:{CTI_PORT}" for n in click_to_call_nodes(region))
    recordings = ", ".join(f"{n.name} {n.address}:{CTI_PORT}" for n in recording_nodes(region))
    for node in region.nodes_with("crm"):
        found.append(Endpoint("CRM", node.name, f"https://{crm_hostname(region)}/ ({node.address})",
                              f"administrator {region.crm.admin_username}; password: vault crm.admin"))
        if ctis:
            found.append(Endpoint("click-to-call (ABCTI_URL)", node.name,
                                  f"https://{crm_hostname(region)}{CTI_PATH} (passed to {ctis})",
                                  "no login: the operator's phone is found by the workstation's address"))
        if recordings:
            found.append(Endpoint("call recordings (the card's player)", node.name,
                                  f"https://{crm_hostname(region)}{RECORDINGS_PATH}/<node>/<call id> "
                                  f"(passed to {recordings})", "a CRM login (the card's)"))
    for node in region.nodes_with("monitoring"):
        found += [
            Endpoint("wallboard", node.name, f"https://{node.address}/", "no login (the hall's screens)"),
            Endpoint("Prometheus", node.name, f"https://{node.address}:{PROMETHEUS_PORT}/",
                     "user prometheus_admin; password: vault monitoring.prometheus_admin"),
            Endpoint("Alertmanager", node.name, f"https://{node.address}:{ALERTMANAGER_PORT}/",
                     "user alertmanager_admin; password: vault monitoring.alertmanager_admin"),
        ]
    return found


def format_endpoints(items: list[Endpoint], secrets_file: str) -> str:
    """A table for people: service, node, address, login; the vault file named once at the end."""
    if not items:
        return "no endpoints: the spec's nodes carry no role with one\n"
    width = max(len(e.service) for e in items)
    nodes = max(len(e.node) for e in items)
    lines = [f"{e.service:<{width}}  {e.node:<{nodes}}  {e.address}\n{'':<{width + nodes + 4}}{e.login}"
             for e in items]
    return "\n".join(lines) + f"\npasswords: ansible-vault view {secrets_file} (never printed by ekc)\n"
