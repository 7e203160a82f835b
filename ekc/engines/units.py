"""systemd units as a host reports them: enabled and running states, start conditions, virtualization.

The shell side (:data:`UNITS_PRELUDE`) asks systemd once for every unit of a host (one ``systemctl show``)
and only asks for a unit's start conditions (``busctl``) when it is stopped because they failed: chrony and
auditd skip themselves in a container (``ConditionVirtualization=!container``), and apply cannot start them
there. The Python side turns the answer into :class:`UnitState` and says, in a note, why such a unit counts
as satisfied.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from ekc.engines.ssh import LiveError

END_MARKER = "E\tend"
ENABLED_STATES = frozenset({"enabled", "enabled-runtime", "alias", "static", "generated"})
RUNNING_STATES = frozenset({"active", "reloading"})
UNIT_SUFFIXES = (".service", ".socket", ".timer", ".mount", ".path", ".target")
SHOWN_PROPERTIES = "LoadState,UnitFileState,ActiveState,ConditionResult,ConditionTimestampMonotonic"

# ``units`` prints one ``S`` record per unit it is given, in order: index, enabled state, active state,
# ConditionResult, ConditionTimestampMonotonic, and the unit's conditions (busctl JSON) when they failed.
# Before calling it, ``o_<index>`` holds each unit's D-Bus object path. ``V`` is the host's virtualization.
UNITS_PRELUDE = r"""set -u
LC_ALL=C; export LC_ALL
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin; export PATH
unit_record() {
  co=-
  if [ "$ld" = not-found ]; then uf=not-found; fi
  if [ "$ac" != active ] && [ "$cr" = no ]; then
    eval "op=\$o_$i"
    co=$(busctl --json=short get-property org.freedesktop.systemd1 "$op" org.freedesktop.systemd1.Unit \
      Conditions 2>/dev/null) || co=-
  fi
  printf 'S\t%s\t%s\t%s\t%s\t%s\t%s\n' "$i" "${uf:-unknown}" "${ac:-unknown}" "${cr:--}" "${ct:-0}" "${co:--}"
}
units() {
  systemctl show --property=""" + SHOWN_PROPERTIES + r""" -- "$@" 2>/dev/null | {
    i=0; ld=; uf=; ac=; cr=; ct=
    while IFS='=' read -r key value; do
      case $key in
        LoadState) ld=$value ;;
        UnitFileState) uf=$value ;;
        ActiveState) ac=$value ;;
        ConditionResult) cr=$value ;;
        ConditionTimestampMonotonic) ct=$value ;;
        '') if [ -n "$ld" ]; then unit_record; i=$((i + 1)); ld=; uf=; ac=; cr=; ct=; fi ;;
      esac
    done
    if [ -n "$ld" ]; then unit_record; fi
  }
}
printf 'V\t%s\t%s\n' "$(systemd-detect-virt --container 2>/dev/null || true)" \
  "$(systemd-detect-virt --vm 2>/dev/null || true)"
"""


@dataclass(frozen=True)
class Virtualization:
    """What ``systemd-detect-virt`` says of a host: its container and VM type (``none`` for each if neither)."""

    container: str = "none"
    vm: str = "none"

    @property
    def in_container(self) -> bool:
        """Whether the host is a container (where kernel-level units skip themselves)."""
        return self.container not in ("none", "")

    def matches(self, parameter: str) -> bool | None:
        """``ConditionVirtualization=<parameter>`` (without ``!``) on this host; None when it cannot be told."""
        value = parameter.lower()
        virtual = self.in_container or self.vm not in ("none", "")
        if value in ("yes", "true", "1", "on"):
            return virtual
        if value in ("no", "false", "0", "off"):
            return not virtual
        if value == "container":
            return self.in_container
        if value == "vm":
            return self.vm not in ("none", "")
        if value == "private-users":
            return None
        return value in (self.container, self.vm)


@dataclass(frozen=True)
class Condition:
    """One start condition of a unit, as systemd's D-Bus ``Conditions`` property lists it.

    ``state`` is systemd's last result: above 0 held, below 0 failed, 0 not known (it is reset whenever the
    unit is reloaded, e.g. by ``daemon-reload``, while ``ConditionResult`` is kept).
    """

    kind: str
    trigger: bool
    negate: bool
    parameter: str
    state: int = 0

    def __str__(self) -> str:
        return f"{self.kind}={'|' if self.trigger else ''}{'!' if self.negate else ''}{self.parameter}"

    def holds(self, virt: Virtualization) -> bool | None:
        """Whether the condition holds: systemd's own result if known, else evaluated for virtualization."""
        if self.state:
            return self.state > 0
        if self.kind != "ConditionVirtualization":
            return None
        matched = virt.matches(self.parameter)
        return None if matched is None else matched != self.negate


@dataclass(frozen=True)
class UnitState:
    """A systemd unit as ``systemctl`` reports it, with its start conditions when it was skipped."""

    name: str
    enabled: str
    active: str
    condition_result: str = "-"
    condition_checked: bool = False
    conditions: tuple[Condition, ...] = ()

    @property
    def found(self) -> bool:
        """Whether systemd knows the unit at all (its package may not be installed yet)."""
        return self.enabled not in ("not-found", "unknown", "")

    @property
    def is_enabled(self) -> bool:
        """Enabled, or started by something that is (static, alias, generated)."""
        return self.enabled in ENABLED_STATES

    @property
    def is_running(self) -> bool:
        """Active (or reloading)."""
        return self.active in RUNNING_STATES

    @property
    def skipped_by_condition(self) -> bool:
        """Not running because systemd evaluated its start conditions and they failed: nothing can start it here."""
        return not self.is_running and self.condition_checked and self.condition_result == "no"

    def unmet(self, virt: Virtualization) -> tuple[Condition, ...]:
        """The conditions known to fail on this host: every failing plain condition, and the trigger (``|``)
        conditions when none of them holds."""
        failing = [c for c in self.conditions if not c.trigger and c.holds(virt) is False]
        triggers = [c for c in self.conditions if c.trigger]
        if triggers and all(c.holds(virt) is False for c in triggers):
            failing += triggers
        return tuple(c for c in self.conditions if c in failing)

    def container_conditions(self, virt: Virtualization) -> tuple[Condition, ...]:
        """The failing ``ConditionVirtualization=`` entries: the unit skips itself on this kind of machine."""
        return tuple(c for c in self.unmet(virt) if c.kind == "ConditionVirtualization")


def unit_id(service: str) -> str:
    """The full unit name of a manifest service (``chrony`` → ``chrony.service``)."""
    return service if service.endswith(UNIT_SUFFIXES) else f"{service}.service"


def unit_object_path(service: str) -> str:
    """The unit's D-Bus object path, escaped the way systemd does (``sd_bus_path_encode``)."""
    label = unit_id(service)
    escaped = "".join(
        ch if ch.isascii() and (ch.isalpha() or (i > 0 and ch.isdigit())) else "".join(f"_{b:02x}" for b in
                                                                                      ch.encode())
        for i, ch in enumerate(label)
    )
    return f"/org/freedesktop/systemd1/unit/{escaped or '_'}"


def units_lines(services: Sequence[str]) -> list[str]:
    """The script lines that print one ``S`` record per service, indexed in the order given."""
    if not services:
        return []
    q = shlex.quote
    paths = [f"o_{i}={q(unit_object_path(s))}" for i, s in enumerate(services)]
    return [*paths, "units " + " ".join(q(unit_id(s)) for s in services)]


def unit_probe_script(service: str) -> str:
    """The script that prints one ``S`` record for ``service`` (verify uses it for a single unit)."""
    return "\n".join([UNITS_PRELUDE.rstrip("\n"), *units_lines([service]), f"printf '{END_MARKER}\\n'"]) + "\n"


def parse_unit_record(fields: Sequence[str], name: str) -> UnitState:
    """An ``S`` record's fields after the index: enabled state, active state, ConditionResult, timestamp,
    conditions."""
    enabled, active, result, stamp, conditions = (list(fields) + ["", "", "-", "0", "-"][len(fields):])[:5]
    return UnitState(
        name=name,
        enabled=enabled,
        active=active,
        condition_result=result,
        condition_checked=stamp not in ("", "0"),
        conditions=parse_conditions(conditions),
    )


def parse_virtualization(fields: Sequence[str]) -> Virtualization:
    """A ``V`` record's fields: ``systemd-detect-virt --container`` and ``--vm``."""
    values = [f.strip() or "none" for f in fields] + ["none", "none"]
    return Virtualization(values[0], values[1])


def read_unit_probe(text: str, service: str) -> tuple[UnitState, Virtualization]:
    """The answer of :func:`unit_probe_script`: the unit's state, and the host's virtualization."""
    virt, unit = Virtualization(), None
    for line in text.splitlines():
        tag, *fields = line.split("\t")
        if tag == "V":
            virt = parse_virtualization(fields)
        elif tag == "S" and fields:
            unit = parse_unit_record(fields[1:], service)
    if unit is None:
        raise LiveError(f"no answer about {service}: {text.strip()[:200]!r}")
    return unit, virt


def parse_conditions(text: str) -> tuple[Condition, ...]:
    """A unit's start conditions from ``busctl --json=short get-property … Conditions`` (``-``: none read).

    Each entry is (type, trigger, negate, parameter, state).
    """
    try:
        entries = json.loads(text)["data"]
    except (ValueError, KeyError, TypeError):
        return ()
    return tuple(
        Condition(str(kind), bool(trigger), bool(negate), str(parameter), state if isinstance(state, int) else 0)
        for kind, trigger, negate, parameter, state in (e for e in entries if isinstance(e, list) and len(e) == 5)
    )


def condition_note(unit: UnitState, virt: Virtualization) -> str:
    """Why a stopped unit is not a pending change: its start conditions fail on this machine."""
    unmet = unit.unmet(virt)
    conditions = ", ".join(map(str, unmet)) + " not met" if unmet else "a start condition is not met"
    where = f" (this host is a {virt.container} container)" if virt.in_container else ""
    return (f"{unit.name} is not running: its unit skips itself here, {conditions}{where}; "
            "apply cannot start it, so it counts as satisfied")
