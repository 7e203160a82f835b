"""An Ansible callback that writes one JSON line per task result, for ekc's Ansible engine.

The engine reads these events instead of scraping the screen output: per host and loop item, which task
(by its tags: ``ekc_file``, ``ekc_package``, ``ekc_service``, ``ekc_trigger``, ``ekc_not_running``)
changed, was skipped or failed, with the item's label (a path, a package, a service, a command).
The file is named by ``$EKC_ANSIBLE_EVENTS``; without it the callback does nothing.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
    name: ekc_events
    type: notification
    short_description: write task results as JSON lines for ekc
    description:
        - One JSON object per task result (per item for loops) to the file named by EKC_ANSIBLE_EVENTS.
    requirements:
        - enabled in callbacks_enabled (ekc's engine writes its own ansible.cfg)
"""

EVENTS_ENV = "EKC_ANSIBLE_EVENTS"
KEPT_OUTPUT = 20000  # characters of stdout kept (apt's list of new packages is near the top)


def _names(data: dict[str, Any]) -> list[str]:
    """The ``name`` argument the module was called with (the packages of an apt task), as a list."""
    invocation = data.get("invocation")
    args = invocation.get("module_args", {}) if isinstance(invocation, dict) else {}
    name = args.get("name") if isinstance(args, dict) else None
    if isinstance(name, str):
        return [name]
    return [str(n) for n in name] if isinstance(name, list) else []


class CallbackModule(CallbackBase):  # type: ignore[misc]  # ansible has no type information
    """Record every result of the run as a JSON line."""

    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "ekc_events"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._path = os.environ.get(EVENTS_ENV)

    def _emit(self, result: Any, status: str, *, item: bool = False) -> None:
        """Append one event; loop summaries are left out (their items were recorded one by one)."""
        if not self._path:
            return
        data = getattr(result, "result", None) or result._result
        if not item and "results" in data:
            return
        task = getattr(result, "task", None) or result._task
        host = getattr(result, "host", None) or result._host
        event = {
            "time": round(time.time(), 3),
            "host": host.get_name(),
            "task": task.get_name(),
            "action": task.action,
            "tags": sorted(task.tags),
            "status": status,
            "changed": bool(data.get("changed", False)),
            "label": self._get_item_label(data),
            "msg": str(data.get("msg", ""))[:2000],
            "stdout": str(data.get("stdout", ""))[:KEPT_OUTPUT],
            "stderr": str(data.get("stderr", ""))[:2000],
            "names": _names(data),
        }
        with open(self._path, "a", encoding="utf-8") as out:
            out.write(json.dumps(event, default=str) + "\n")

    def v2_runner_on_ok(self, result: Any) -> None:
        """A task (without a loop) succeeded."""
        self._emit(result, "ok")

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        """A task failed."""
        self._emit(result, "failed")

    def v2_runner_on_skipped(self, result: Any) -> None:
        """A task was skipped."""
        self._emit(result, "skipped")

    def v2_runner_on_unreachable(self, result: Any) -> None:
        """The host could not be reached."""
        self._emit(result, "unreachable")

    def v2_runner_item_on_ok(self, result: Any) -> None:
        """One loop item succeeded."""
        self._emit(result, "ok", item=True)

    def v2_runner_item_on_failed(self, result: Any) -> None:
        """One loop item failed."""
        self._emit(result, "failed", item=True)

    def v2_runner_item_on_skipped(self, result: Any) -> None:
        """One loop item was skipped."""
        self._emit(result, "skipped", item=True)
