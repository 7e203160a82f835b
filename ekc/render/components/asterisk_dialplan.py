"""The dialplan's logic, computed in Python so templates only loop: IVR menus, departments, hours, numbers.

Everything here is pure (spec in, plain data out) and unit-tested. ``extensions.conf.j2`` prints what these
functions return; the context names below are the contract other components rely on (ekc-from-trunk,
ekc-operators, ekc-supervisors).
"""

from __future__ import annotations

from dataclasses import dataclass

from ekc.render.components.asterisk_prompts import callback_offer_prompt
from schemas.region import Region
from schemas.rules import MAIN_MENU
from schemas.telephony import (
    AfterHoursVoicemail,
    Department,
    IvrCallback,
    IvrDepartment,
    IvrMenu,
    IvrMessage,
    IvrRepeat,
    IvrTarget,
    IvrVoicemail,
    Menu,
)

VOICEMAIL_CONTEXT = "ekc"
INVALID_PROMPT = "pbx-invalid"
GOODBYE_PROMPT = "vm-goodbye"

# Caller-number normalisation, one rule per line: (digits, leading digit or "", digits to drop, prefix).
# A number made only of digits that matches a rule becomes prefix + number[drop:]; any other number stays.
# The dialplan's ``ekc-normalise`` subroutine is generated from this table, so both agree by construction.
NORMALISE_RULES: tuple[tuple[int, str, int, str], ...] = (
    (11, "8", 1, "+7"),
    (11, "7", 0, "+"),
    (10, "", 0, "+7"),
)


def normalise_number(number: str) -> str:
    """A caller number as the CRM stores it: 8XXXXXXXXXX, 7XXXXXXXXXX, XXXXXXXXXX → +7XXXXXXXXXX; others kept."""
    if not number.isdigit() or not number.isascii():
        return number
    for length, lead, drop, prefix in NORMALISE_RULES:
        if len(number) == length and number.startswith(lead):
            return prefix + number[drop:]
    return number


def normalise_lines() -> list[str]:
    """The ``ekc-normalise`` subroutine's condition/assignment pairs, one per rule (``ExecIf`` arguments)."""
    lines = []
    for length, lead, drop, prefix in NORMALISE_RULES:
        test = f"$[${{LEN(${{EKC_NUM}})}} = {length}]"
        if lead:
            test = f"$[${{LEN(${{EKC_NUM}})}} = {length} & \"${{EKC_NUM:0:1}}\" = \"{lead}\"]"
        value = f"{prefix}${{EKC_NUM:{drop}}}" if drop else f"{prefix}${{EKC_NUM}}"
        lines.append(f"{test}?Set(EKC_OUT={value})")
    return lines


def asterisk_time_range(hours: str) -> str:
    """``08:00-20:00`` (end exclusive, as the spec means it) → ``08:00-19:59`` (Asterisk's end is inclusive)."""
    start, end = hours.split("-")
    end_h, end_m = (int(part) for part in end.split(":"))
    minutes = end_h * 60 + end_m - 1
    return f"{start}-{minutes // 60:02d}:{minutes % 60:02d}"


def schedule_checks(schedule: dict[str, str], timezone: str) -> list[str]:
    """``GotoIfTime`` arguments (without the label) for each day range of a schedule."""
    return [f"{asterisk_time_range(hours)},{days},*,*,{timezone}" for days, hours in schedule.items()]


def context_of_menu(name: str) -> str:
    """The dialplan context of an IVR menu (``main`` is the top-level one)."""
    return f"ekc-menu-{name}"


def context_of_department(dep_id: str) -> str:
    """The context a call enters to reach a department's queue (hours, incident, recording, queue)."""
    return f"ekc-dept-{dep_id}"


def target_steps(target: IvrTarget | None, menu_context: str) -> list[str]:
    """Dialplan applications that carry out an IVR target (None: say goodbye and hang up)."""
    if isinstance(target, IvrDepartment):
        return [f"Goto({context_of_department(target.department)},s,1)"]
    if isinstance(target, IvrMenu):
        return [f"Goto({context_of_menu(target.menu)},s,1)"]
    if isinstance(target, IvrVoicemail):
        return [f"Goto(ekc-voicemail,{target.voicemail},1)"]
    if isinstance(target, IvrCallback):
        return [f"Goto(ekc-callback-request,{target.callback},1)"]
    if isinstance(target, IvrMessage):
        return [f"Playback({target.message})", f"Goto({menu_context},s,prompt)"]
    if isinstance(target, IvrRepeat):
        return [f"Goto({menu_context},s,prompt)"]
    return [f"Playback({GOODBYE_PROMPT})", "Hangup()"]


@dataclass(frozen=True)
class MenuPlan:
    """One IVR menu as the template prints it."""

    context: str
    prompt: str
    timeout_s: int
    retries: int
    options: list[tuple[str, list[str]]]
    on_timeout: list[str]


def menu_plans(region: Region) -> list[MenuPlan]:
    """The main menu and every sub-menu, keys in a stable order."""
    ivr = region.telephony.ivr
    menus: list[tuple[str, Menu]] = [(MAIN_MENU, ivr), *sorted(ivr.menus.items())]
    plans = []
    for name, menu in menus:
        context = context_of_menu(name)
        options = [(key, target_steps(target, context)) for key, target in sorted(menu.options.items())]
        plans.append(MenuPlan(context, menu.prompt, menu.timeout_s, menu.retries, options,
                              target_steps(menu.on_timeout, context)))
    return plans


@dataclass(frozen=True)
class DepartmentPlan:
    """A department's path through the dialplan: hours, after-hours branch, incident, queue, callback."""

    id: str
    context: str
    hours_context: str | None
    after_hours_log: str
    after_hours_steps: list[str]
    max_wait_s: int
    callback: bool
    callback_key: str
    callback_prompt: str
    options: str
    # The context of the department's queue logic, and this node's duty for it: ``primary``, ``standby`` or
    # None (served elsewhere: ``context`` hands the call to the SIP edge). Without an edge every node is the
    # primary of every department and ``body_context`` is ``context``.
    body_context: str
    duty: str | None = "primary"


def serve_context(department: str) -> str:
    """Behind the SIP edge: the context of a department's queue logic, entered by the node's own IVR (when it is
    the primary) or by the edge's ``department`` route."""
    return f"ekc-serve-{department}"


def hours_context(schedule: str) -> str:
    """The subroutine that returns 1 while a schedule is open (and today is no holiday), else 0."""
    return f"ekc-hours-{schedule}"


def screen_pop_option() -> str:
    """Queue()'s predial option: ``ekc-agent-predial`` on each operator's channel, its argument expanded in the
    caller's channel when Queue() starts: the caller channel's unique id (the queue log's callid, so the call's
    card; behind the SIP edge the id on the node that queues the call)."""
    return "b(ekc-agent-predial^s^1(${UNIQUEID}))"


def department_plan(dep: Department, *, screen_pop: bool) -> DepartmentPlan:
    """How a call to ``dep`` proceeds; ``screen_pop`` adds the CRM's Call-Info header to operators' INVITEs."""
    if isinstance(dep.after_hours, AfterHoursVoicemail):
        log = f"voicemail:{dep.after_hours.voicemail}"
        steps = [f"Goto(ekc-voicemail,{dep.after_hours.voicemail},1)"]
    else:
        log = f"message:{dep.after_hours.message}"
        steps = [f"Playback({dep.after_hours.message})", "Hangup()"]
    options = "c"
    if screen_pop:
        options += screen_pop_option()
    return DepartmentPlan(
        id=dep.id,
        context=context_of_department(dep.id),
        body_context=context_of_department(dep.id),
        hours_context=None if dep.hours == "always" else hours_context(dep.hours),
        after_hours_log=log,
        after_hours_steps=steps,
        max_wait_s=dep.queue.max_wait_s,
        callback=dep.queue.callback.enabled,
        callback_key=dep.queue.callback.key,
        callback_prompt=callback_offer_prompt(dep.queue.callback.key),
        options=options,
    )


def holiday_extensions(region: Region) -> list[str]:
    """Holidays as ``YYYYMMDD`` extensions of ``ekc-holidays`` (DIALPLAN_EXISTS tells whether today is one)."""
    return sorted(day.strftime("%Y%m%d") for day in region.telephony.holidays)


def spy_permissions(region: Region) -> list[str]:
    """``<supervisor>*<operator>`` for every operator a supervisor may listen to (shared departments)."""
    tel = region.telephony
    if not tel.supervisors:
        return []
    # operators by department, in one pass: each supervisor then reads only their own departments' people
    in_department: dict[str, set[str]] = {}
    for op in tel.operators:
        for skill in op.skills():
            in_department.setdefault(skill.department, set()).add(op.extension)
    allowed = {f"{sup.extension}*{extension}" for sup in tel.supervisors for department in sup.departments
               for extension in in_department.get(department, ())}
    return sorted(allowed)
