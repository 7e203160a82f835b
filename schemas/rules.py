"""Rules that relate one part of the region spec to another.

Each rule names the top-level sections it reads. The loader runs every rule whose sections validated,
so a spec with a broken ``network`` still gets its telephony mistakes reported in the same run.
A rule yields ``(path, message)`` pairs; the path points at the value the user has to change.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date

from schemas.region import Region
from schemas.rules_roles import (
    Issue,
    Path,
    asterisk_pool_behind_the_edge,
    database_cluster,
    node_lifecycle,
    one_crm_node,
    pins_name_asterisk_nodes,
    sip_edge,
)
from schemas.telephony import (
    WEEKDAYS,
    AfterHoursMessage,
    AfterHoursVoicemail,
    IvrCallback,
    IvrDepartment,
    IvrMenu,
    IvrMessage,
    IvrVoicemail,
    Menu,
    Telephony,
)

MAIN_MENU = "main"  # the top-level IVR menu, so a sub-menu can lead back to it


@dataclass(frozen=True)
class Rule:
    """A cross-field check and the sections it needs (``nodes``, or ``telephony.operators`` one level down)."""

    needs: tuple[str, ...]
    check: Callable[[Region], Iterable[Issue]]


def _duplicates(values: Iterable[str]) -> set[str]:
    return {value for value, count in Counter(values).items() if count > 1}


def unique_nodes(spec: Region) -> Iterator[Issue]:
    """Node names and addresses are unique."""
    for field in ("name", "address"):
        seen: dict[str, int] = {}
        for index, node in enumerate(spec.nodes):
            value = getattr(node, field)
            if value in seen:
                yield ("nodes", index, field), f"'{value}' is already used by nodes[{seen[value]}]"
            seen.setdefault(value, index)


def nodes_in_subnets(spec: Region) -> Iterator[Issue]:
    """Every node, gateway and the deploy host lies inside a declared subnet."""
    nets = [ipaddress.IPv4Network(s.cidr) for s in spec.network.subnets]
    declared = ", ".join(s.cidr for s in spec.network.subnets)
    for index, node in enumerate(spec.nodes):
        if not any(ipaddress.IPv4Address(node.address) in net for net in nets):
            yield ("nodes", index, "address"), f"{node.address} is in no declared subnet ({declared})"
    for index, subnet in enumerate(spec.network.subnets):
        net = ipaddress.IPv4Network(subnet.cidr)
        if subnet.gateway and ipaddress.IPv4Address(subnet.gateway) not in net:
            yield ("network", "subnets", index, "gateway"), f"{subnet.gateway} is outside {subnet.cidr}"
    if not any(ipaddress.IPv4Address(spec.network.deploy_host) in net for net in nets):
        yield ("network", "deploy_host"), f"{spec.network.deploy_host} is in no declared subnet ({declared})"
    for index, node in enumerate(spec.nodes):
        if node.address == spec.network.deploy_host:
            yield ("nodes", index, "address"), f"{node.address} is the deploy host's address"


def unique_telephony_names(spec: Region) -> Iterator[Issue]:
    """Department ids, trunk names, voicemail boxes, DIDs, holidays and each department's topic codes are unique."""
    tel = spec.telephony
    lists: list[tuple[str, list[str], str]] = [
        ("departments", [d.id for d in tel.departments], "id"),
        ("trunks", [t.name for t in tel.trunks], "name"),
        ("voicemail", [v.id for v in tel.voicemail], "id"),
    ]
    for section, values, field in lists:
        seen: set[str] = set()
        for index, value in enumerate(values):
            if value in seen:
                yield ("telephony", section, index, field), f"'{value}' is defined twice"
            seen.add(value)
    dids: set[str] = set()
    for t_index, trunk in enumerate(tel.trunks):
        for d_index, did in enumerate(trunk.dids):
            if did in dids:
                yield ("telephony", "trunks", t_index, "dids", d_index), f"DID {did} is listed twice"
            dids.add(did)
    days: set[date] = set()
    for index, day in enumerate(tel.holidays):
        if day in days:
            yield ("telephony", "holidays", index), f"{day.isoformat()} is listed twice"
        days.add(day)
    for d_index, dep in enumerate(tel.departments):
        codes: set[str] = set()
        for t_index, topic in enumerate(dep.topics):
            if topic.code in codes:
                yield ("telephony", "departments", d_index, "topics", t_index, "code"), (
                    f"topic '{topic.code}' is defined twice in department '{dep.id}'")
            codes.add(topic.code)


def _numbers(tel: Telephony) -> Iterator[tuple[Path, str, str]]:
    """Every dialable number with where it is defined and what it is."""
    for index, dep in enumerate(tel.departments):
        yield ("telephony", "departments", index, "queue", "number"), dep.queue.number, f"queue of '{dep.id}'"
    for index, op in enumerate(tel.operators):
        yield ("telephony", "operators", index, "extension"), op.extension, f"operator {op.name}"
    for index, sup in enumerate(tel.supervisors):
        yield ("telephony", "supervisors", index, "extension"), sup.extension, f"supervisor {sup.name}"
    for name, code in tel.feature_codes.model_dump().items():
        yield ("telephony", "feature_codes", name), code, f"feature code '{name}'"


def unique_numbers(spec: Region) -> Iterator[Issue]:
    """Extensions, queue numbers and feature codes never collide, and none shadows a DID."""
    owner: dict[str, str] = {}
    for path, number, what in _numbers(spec.telephony):
        if number in owner:
            yield path, f"{number} is already the number of the {owner[number]}"
        else:
            owner[number] = what
    for t_index, trunk in enumerate(spec.telephony.trunks):
        for d_index, did in enumerate(trunk.dids):
            if did in owner:
                message = f"DID {did} collides with the number of the {owner[did]}"
                yield ("telephony", "trunks", t_index, "dids", d_index), message


def _ivr_menus(tel: Telephony) -> Iterator[tuple[Path, Menu]]:
    yield ("telephony", "ivr"), tel.ivr
    for name, menu in tel.ivr.menus.items():
        yield ("telephony", "ivr", "menus", name), menu


def ivr_targets_exist(spec: Region) -> Iterator[Issue]:
    """Every IVR key leads to a department, menu or voicemail box that exists."""
    tel = spec.telephony
    known = {
        "department": {d.id for d in tel.departments},
        "menu": {MAIN_MENU, *tel.ivr.menus},
        "voicemail": {v.id for v in tel.voicemail},
    }
    if MAIN_MENU in tel.ivr.menus:
        yield ("telephony", "ivr", "menus", MAIN_MENU), f"'{MAIN_MENU}' is the top-level menu's name"
    for path, menu in _ivr_menus(tel):
        targets = [((*path, "options", key), target) for key, target in menu.options.items()]
        if menu.on_timeout is not None:
            targets.append(((*path, "on_timeout"), menu.on_timeout))
        for target_path, target in targets:
            kind, ref = _reference(target)
            if kind and ref not in known[kind]:
                choices = ", ".join(sorted(known[kind])) or "none defined"
                yield (*target_path, _ref_field(target)), f"no {kind} '{ref}' (defined: {choices})"


def _reference(target: object) -> tuple[str | None, str]:
    if isinstance(target, IvrDepartment):
        return "department", target.department
    if isinstance(target, IvrCallback):
        return "department", target.callback
    if isinstance(target, IvrMenu):
        return "menu", target.menu
    if isinstance(target, IvrVoicemail):
        return "voicemail", target.voicemail
    return None, ""


def _ref_field(target: object) -> str:
    return "callback" if isinstance(target, IvrCallback) else _reference(target)[0] or ""


def people_in_departments(spec: Region) -> Iterator[Issue]:
    """Operators and supervisors belong to departments that exist; every department has an operator."""
    tel = spec.telephony
    ids = {d.id for d in tel.departments}
    choices = ", ".join(sorted(ids))
    staffed: set[str] = set()
    for index, op in enumerate(tel.operators):
        skills = op.skills()
        for s_index, skill in enumerate(skills):
            staffed.add(skill.department)
            if skill.department not in ids:
                path: Path = ("telephony", "operators", index, "departments", s_index)
                yield path, f"no department '{skill.department}' (defined: {choices})"
        for dup in sorted(_duplicates(s.department for s in skills)):
            yield ("telephony", "operators", index, "departments"), f"department '{dup}' is listed twice"
    for index, sup in enumerate(tel.supervisors):
        for s_index, dep_id in enumerate(sup.departments):
            if dep_id not in ids:
                path = ("telephony", "supervisors", index, "departments", s_index)
                yield path, f"no department '{dep_id}' (defined: {choices})"
    for index, department in enumerate(tel.departments):
        if department.id not in staffed:
            yield ("telephony", "departments", index, "id"), f"department '{department.id}' has no operator"


def hours_exist(spec: Region) -> Iterator[Issue]:
    """Departments' hours name a schedule; after-hours voicemail boxes exist; schedules cover a day once."""
    tel = spec.telephony
    boxes = {v.id for v in tel.voicemail}
    for index, dep in enumerate(tel.departments):
        path: Path = ("telephony", "departments", index)
        if dep.hours != "always" and dep.hours not in tel.schedules:
            choices = ", ".join(["always", *sorted(tel.schedules)])
            yield (*path, "hours"), f"no schedule '{dep.hours}' (expected one of: {choices})"
        if isinstance(dep.after_hours, AfterHoursVoicemail) and dep.after_hours.voicemail not in boxes:
            yield (*path, "after_hours", "voicemail"), f"no voicemail box '{dep.after_hours.voicemail}'"
    for name, schedule in tel.schedules.items():
        covered: dict[str, str] = {}
        for days in schedule:
            for day in expand_days(days):
                if day in covered:
                    yield ("telephony", "schedules", name, days), f"{day} is already covered by '{covered[day]}'"
                covered.setdefault(day, days)


def expand_days(days: str) -> list[str]:
    """``mon-fri`` → the five weekdays; ``sat`` → [sat]. Ranges do not wrap past Sunday."""
    first, _, last = days.partition("-")
    start, end = WEEKDAYS.index(first), WEEKDAYS.index(last or first)
    return list(WEEKDAYS[start : end + 1]) if start <= end else []


def day_ranges_wellformed(spec: Region) -> Iterator[Issue]:
    """A range like ``fri-mon`` that runs backwards is a mistake."""
    for name, schedule in spec.telephony.schedules.items():
        for days in schedule:
            if not expand_days(days):
                yield ("telephony", "schedules", name, days), f"'{days}' runs backwards (expected e.g. mon-fri)"


def managers_on_loopback(spec: Region) -> Iterator[Issue]:
    """AMI and ARI are never reachable beyond loopback without TLS."""
    for name in ("ami", "ari"):
        iface = getattr(spec.telephony, name)
        if iface.enabled and not iface.tls and not ipaddress.IPv4Address(iface.bind).is_loopback:
            yield (
                ("telephony", name, "bind"),
                f"{name.upper()} on {iface.bind} without TLS would expose it beyond loopback "
                "(bind 127.0.0.1, or set tls: true)",
            )


def flows_name_known_hosts(spec: Region) -> Iterator[Issue]:
    """Flow rules name nodes or roles that exist, or networks; never a node marked absent (it is not rendered)."""
    present = spec.without_absent().nodes
    names = {n.name for n in present}
    roles: set[str] = {role for n in present for role in n.roles}
    absent = {n.name for n in spec.nodes if n.state == "absent"}
    for index, flow in enumerate(spec.security.flows):
        for field in ("sources", "targets"):
            for e_index, entry in enumerate(getattr(flow, field)):
                problem = _flow_entry_problem(entry, names, roles, allow_network=field == "sources")
                if entry in absent:
                    problem = f"node {entry} is absent (its state): remove it from this flow"
                if problem:
                    yield ("security", "flows", index, field, e_index), problem


def _flow_entry_problem(entry: str, names: set[str], roles: set[str], *, allow_network: bool) -> str | None:
    if entry.startswith("role:"):
        role = entry.removeprefix("role:")
        return None if role in roles else f"no node carries role '{role}'"
    if entry in names:
        return None
    if allow_network:
        try:
            ipaddress.IPv4Network(entry, strict=True)
        except ValueError:
            return f"'{entry}' is not a node name, 'role:<role>' or an IPv4 network"
        return None
    return f"'{entry}' is not a node name or 'role:<role>'"


def alerts_have_a_relay(spec: Region) -> Iterator[Issue]:
    """Alert e-mail needs the ministry's SMTP relay."""
    if spec.monitoring.alert_receivers and spec.monitoring.smtp is None:
        yield ("monitoring", "alert_receivers"), "alert receivers need monitoring.smtp (the mail relay)"


# ekc's own prompts that have a built-in text (ekc/render/components/asterisk_prompts.py); menu prompts under ekc/
# get a text read out from their options, and ekc/callback-offer-<key> one per callback key.
BUILTIN_PROMPTS = frozenset({
    "ekc/closed", "ekc/incident", "ekc/recorded", "ekc/rate-call", "ekc/thanks", "ekc/callback-accepted",
    "ekc/callback-enter-number", "ekc/callback-failed", "ekc/timeout", "ekc/voicemail", "ekc/info-hours",
})
OWN_PROMPT_PREFIX = "ekc/"


def _referenced_prompts(tel: Telephony) -> Iterator[tuple[Path, str]]:
    """Every prompt the spec plays, with where it is named (menu prompts excluded: they get a text)."""
    for path, menu in _ivr_menus(tel):
        for key, target in menu.options.items():
            if isinstance(target, IvrMessage):
                yield (*path, "options", key, "message"), target.message
        if isinstance(menu.on_timeout, IvrMessage):
            yield (*path, "on_timeout", "message"), menu.on_timeout.message
    for index, dep in enumerate(tel.departments):
        if isinstance(dep.after_hours, AfterHoursMessage):
            yield ("telephony", "departments", index, "after_hours", "message"), dep.after_hours.message
        yield ("telephony", "departments", index, "incident", "default_message"), dep.incident.default_message
    if tel.recording.enabled and tel.recording.announce:
        yield ("telephony", "recording", "announce"), tel.recording.announce
    if tel.rating.enabled:
        yield ("telephony", "rating", "prompt"), tel.rating.prompt


def own_prompts_have_texts(spec: Region) -> Iterator[Issue]:
    """Every ekc/... prompt the spec plays has a text to synthesize: built in, or in telephony.prompts."""
    tel = spec.telephony
    known = BUILTIN_PROMPTS | set(tel.prompts)
    for path, prompt in _referenced_prompts(tel):
        if prompt.startswith(OWN_PROMPT_PREFIX) and prompt not in known:
            yield path, f"no text for prompt '{prompt}' (add it to telephony.prompts, or use a built-in one)"


def _tel(*fields: str) -> tuple[str, ...]:
    return tuple(f"telephony.{field}" for field in fields)


RULES: tuple[Rule, ...] = (
    Rule(("nodes",), unique_nodes),
    Rule(("network", "nodes"), nodes_in_subnets),
    Rule(_tel("departments", "trunks", "voicemail", "holidays"), unique_telephony_names),
    Rule(_tel("departments", "operators", "supervisors", "feature_codes", "trunks"), unique_numbers),
    Rule(_tel("departments", "ivr", "voicemail"), ivr_targets_exist),
    Rule(_tel("departments", "operators", "supervisors"), people_in_departments),
    Rule(_tel("departments", "schedules", "voicemail"), hours_exist),
    Rule(_tel("schedules"), day_ranges_wellformed),
    Rule(_tel("ami", "ari"), managers_on_loopback),
    Rule(_tel("departments", "ivr", "recording", "rating", "prompts"), own_prompts_have_texts),
    Rule(("nodes", "security"), flows_name_known_hosts),
    Rule(("monitoring",), alerts_have_a_relay),
    Rule(("nodes", "database"), database_cluster),
    Rule(("nodes", "telephony.departments"), pins_name_asterisk_nodes),
    Rule(("nodes",), asterisk_pool_behind_the_edge),
    Rule(("nodes",), one_crm_node),
    Rule(("nodes", "network", "telephony.edge", "telephony.sip_tls"), sip_edge),
    Rule(("nodes", "telephony.departments"), node_lifecycle),
)


def check_rules(spec: Region, valid_sections: set[str] | None = None) -> list[Issue]:
    """Run every rule whose sections are valid (all of them when ``valid_sections`` is None).

    ``valid_sections`` holds top-level names and, for a section with errors inside, the dotted names of
    its fields that validated (``telephony.operators``), so one typo does not silence the other rules.
    """
    issues: list[Issue] = []
    for rule in RULES:
        if valid_sections is None or set(rule.needs) <= valid_sections:
            issues.extend(rule.check(spec))
    return issues
