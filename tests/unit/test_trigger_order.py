"""The order both engines run a host's triggers in (ekc.engines.common.trigger_runs)."""

from __future__ import annotations

from ekc.engines.common import trigger_runs
from ekc.render.manifest import ManagedFile, Trigger

DAEMON_RELOAD = Trigger("reload", None, "systemctl daemon-reload", "systemd rereads unit files")
FIREWALL = Trigger("reload", None, "nft -f /etc/nftables.conf", "the firewall is loaded")
START_ANYWAY = Trigger("reload", None, "systemctl reload-or-restart keepalived", "started if not running")
RELOAD = Trigger("reload", "asterisk", "asterisk -rx 'dialplan reload'", "the dialplan is reread")


def _file(path: str, trigger: Trigger) -> ManagedFile:
    return ManagedFile(path, "0644", "root", "root", "0" * 64, "test", trigger=trigger)


def test_rereads_first_then_commands_of_no_service_then_reloads_each_once() -> None:
    files = [
        _file("/etc/asterisk/extensions.conf", RELOAD),
        _file("/etc/keepalived/keepalived.conf", START_ANYWAY),  # listed before its unit's drop-in
        _file("/etc/nftables.conf", FIREWALL),
        _file("/etc/systemd/system/keepalived.service.d/10-ekc.conf", DAEMON_RELOAD),
        _file("/etc/asterisk/ekc-served.conf", RELOAD),
    ]
    runs = trigger_runs(files)
    assert [run.command for run in runs] == [
        "systemctl daemon-reload", "systemctl reload-or-restart keepalived", "nft -f /etc/nftables.conf",
        "asterisk -rx 'dialplan reload'"]
    assert runs[-1].paths == ("/etc/asterisk/extensions.conf", "/etc/asterisk/ekc-served.conf")
