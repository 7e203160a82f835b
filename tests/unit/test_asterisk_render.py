"""The Asterisk component's render of inventories/example: what the node gets, and the pure logic behind it."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

from ekc.render.components.asterisk_dialplan import asterisk_time_range, normalise_number, spy_permissions
from ekc.render.components.asterisk_prompts import BUILTIN_TEXTS, prompt_texts
from ekc.render.model import RenderResult
from ekc.render.region import render_region
from ekc.spec.load import load_spec, parse_region
from schemas.rules import BUILTIN_PROMPTS
from tests.support.render import placeholder_render, placeholder_tree
from tests.support.synthetic import synthetic_yaml

REPO = Path(__file__).resolve().parents[2]
HOST = "pbx1"


@pytest.fixture(scope="module")
def example() -> RenderResult:
    return placeholder_render("inventories/example")


def text(result: RenderResult, path: str, host: str = HOST) -> str:
    return result.contents[(host, path)].decode("utf-8")


def sections(conf: str) -> list[str]:
    return re.findall(r"^\[([^\]]+)\]", conf, flags=re.MULTILINE)


def test_every_department_has_its_queue_and_ivr_path(example: RenderResult) -> None:
    region = load_spec("inventories/example").region
    queues = text(example, "/etc/asterisk/queues.conf")
    dialplan = text(example, "/etc/asterisk/extensions.conf")
    for dep in region.telephony.departments:
        assert dep.id in sections(queues)
        assert f"[ekc-dept-{dep.id}]" in dialplan
        assert f"Queue({dep.id}," in dialplan
    for key in region.telephony.ivr.options:
        assert re.search(rf"^exten => {re.escape(key)},1,", dialplan, flags=re.MULTILINE), key
    assert "[ekc-menu-info]" in dialplan and "Goto(ekc-callback-request,info,1)" in dialplan
    for did in region.telephony.trunks[0].dids:
        assert f"exten => {did},1,Goto(ekc-ivr-entry,s,1)" in dialplan


def test_queue_members_carry_their_penalties(example: RenderResult) -> None:
    queues = text(example, "/etc/asterisk/queues.conf")
    housing = queues.split("[housing]")[1].split("\n[")[0]
    assert "member => PJSIP/2003,2," in housing
    assert "member => PJSIP/2010,0," in housing
    assert "PJSIP/2001" not in housing


def test_pjsip_acl_denies_all_then_permits_only_flow_sources(example: RenderResult) -> None:
    pjsip = text(example, "/etc/asterisk/pjsip.conf")
    acl = pjsip.split("[ekc-acl]")[1].split("\n[")[0]
    lines = [line for line in acl.splitlines() if line.startswith(("deny", "permit"))]
    assert lines[0] == "deny = 0.0.0.0/0.0.0.0"
    permitted = {line.removeprefix("permit = ") for line in lines[1:]}
    sip_sources = {f.source_cidr for f in example.manifest.flows if f.target == HOST and f.port == 5060}
    assert permitted == sip_sources
    assert {"10.54.0.5/32", "10.54.10.0/24"} <= permitted  # the trunk's peer, the operators' network


def test_no_anonymous_endpoint_and_every_phone_authenticates(example: RenderResult) -> None:
    pjsip = text(example, "/etc/asterisk/pjsip.conf")
    assert "identifier_anonymous" not in text(example, "/etc/asterisk/modules.conf")
    assert not re.search(r"^\[anonymous\]", pjsip, flags=re.MULTILINE)
    region = load_spec("inventories/example").region
    for person in [*region.telephony.operators, *region.telephony.supervisors]:
        ext = person.extension
        assert f"[{ext}](phone)\n" in pjsip and f"auth = {ext}\n" in pjsip
        assert f"username = {ext}\npassword = <password sip.{ext}>" in pjsip
    assert "max_contacts = 1\nremove_existing = yes" in pjsip
    assert "[trunk-carrier]\ntype = identify\nendpoint = trunk-carrier\nmatch = 10.54.0.5" in pjsip


def test_phones_never_reach_a_trunk(example: RenderResult) -> None:
    """The only Dial through a trunk is in ekc-callback-out, which no phone context includes."""
    dialplan = text(example, "/etc/asterisk/extensions.conf")
    contexts = dict(re.findall(r"^\[([^\]]+)\]\n(.*?)(?=^\[|\Z)", dialplan, flags=re.MULTILINE | re.DOTALL))
    trunk_dials = [name for name, body in contexts.items() if "@trunk-" in body]
    assert trunk_dials == ["ekc-callback-out"]
    for phone_context in ("ekc-operators", "ekc-supervisors", "ekc-phones"):
        body = contexts[phone_context]
        assert "ekc-callback-out" not in body and "trunk-" not in body
        includes = re.findall(r"include => (\S+)", body)
        assert all(inc == "ekc-phones" for inc in includes)
    assert "ekc-callback-out" not in "".join(b for n, b in contexts.items() if n != "ekc-callback-out")


@pytest.mark.parametrize(("given", "wanted"), [
    ("89131234567", "+79131234567"),
    ("79131234567", "+79131234567"),
    ("9131234567", "+79131234567"),
    ("+79131234567", "+79131234567"),
    ("122", "122"),
    ("", ""),
    ("anonymous", "anonymous"),
    ("69131234567", "69131234567"),
    ("891312345678", "891312345678"),
])
def test_caller_numbers_are_normalised_to_e164(given: str, wanted: str) -> None:
    assert normalise_number(given) == wanted


def test_dialplan_normalisation_follows_the_rules(example: RenderResult) -> None:
    dialplan = text(example, "/etc/asterisk/extensions.conf")
    block = dialplan.split("[ekc-normalise]")[1].split("\n[")[0]
    assert 'ExecIf($[${LEN(${EKC_NUM})} = 11 & "${EKC_NUM:0:1}" = "8"]?Set(EKC_OUT=+7${EKC_NUM:1}))' in block
    assert "ExecIf($[${LEN(${EKC_NUM})} = 10]?Set(EKC_OUT=+7${EKC_NUM}))" in block
    assert "Set(CALLERID(num)=${EKC_OUT})" in block


def test_hours_end_is_exclusive_and_holidays_are_extensions(example: RenderResult) -> None:
    assert asterisk_time_range("08:00-20:00") == "08:00-19:59"
    assert asterisk_time_range("09:30-24:00") == "09:30-23:59"
    dialplan = text(example, "/etc/asterisk/extensions.conf")
    assert "GotoIfTime(08:00-19:59,mon-fri,*,*,Asia/Novosibirsk?open)" in dialplan
    assert "exten => 20270101,1,Return(0)" in dialplan
    assert "Gosub(ekc-hours" not in dialplan.split("[ekc-dept-health]")[1].split("\n[")[0]


def test_incident_rating_callback_and_recording_in_the_dialplan(example: RenderResult) -> None:
    dialplan = text(example, "/etc/asterisk/extensions.conf")
    assert "${DB_EXISTS(ekc/incident/social)}" in dialplan
    assert "QueueLog(social,${UNIQUEID},NONE,INCIDENT,${EKC_INCIDENT})" in dialplan
    assert "QueueLog(${EKC_DEPT},${UNIQUEID},NONE,RATING,${EKC_RATING})" in dialplan
    assert "Set(CDR(userfield)=rating=${EKC_RATING})" in dialplan
    assert "QueueLog(social,${UNIQUEID},NONE,AFTERHOURS,voicemail:social)" in dialplan
    assert "QueueLog(housing,${UNIQUEID},NONE,AFTERHOURS,message:ekc/closed)" in dialplan
    assert "Set(DB(ekc/callback/${EXTEN}/${EPOCH}-${UNIQUEID})=${EKC_CB})" in dialplan
    assert "MixMonitor(" in dialplan and "Playback(ekc/recorded)" in dialplan
    assert "Call-Info)=<https://crm.ekc.example.local/appeals/call/${ARG1}/>" in dialplan


def _block(conf: str, context: str) -> str:
    return conf[conf.index(f"[{context}]"):].split("\n\n", maxsplit=1)[0]


def test_the_screen_pop_names_the_callers_unique_id(example: RenderResult) -> None:
    """Every department's Queue() gives each operator's channel the predial subroutine, its argument expanded in
    the caller's channel: the unique id (the queue log's callid, so the call's card)."""
    dialplan = text(example, "/etc/asterisk/extensions.conf")
    queues = re.findall(r"Queue\((\w+),([^,]*),", dialplan)
    assert {dep for dep, _ in queues} == {d.id for d in load_spec("inventories/example").region.telephony.departments}
    assert {options for _, options in queues} == {"cb(ekc-agent-predial^s^1(${UNIQUEID}))"}
    predial = _block(dialplan, "ekc-agent-predial").splitlines()
    assert predial[-2:] == [
        "exten => s,1,Set(PJSIP_HEADER(add,Call-Info)=<https://crm.ekc.example.local/appeals/call/${ARG1}/>"
        "\\;purpose=info)",
        " same => n,Return()"], predial
    assert "respond_to_a_call" not in dialplan


def test_without_a_crm_no_screen_pop(tmp_path: Path) -> None:
    spec = Path("inventories/small/region.yml").read_text(encoding="utf-8").replace(
        "roles: [asterisk, postgresql, crm, monitoring]", "roles: [asterisk, postgresql, monitoring]")
    (tmp_path / "region.yml").write_text(spec, encoding="utf-8")
    dialplan = placeholder_render(str(tmp_path)).contents[("ekc1", "/etc/asterisk/extensions.conf")].decode()
    assert "Call-Info" not in dialplan and "ekc-agent-predial^" not in dialplan
    assert _block(dialplan, "ekc-agent-predial").splitlines()[1:] == ["exten => s,1,Return()"]


def test_supervisors_spy_only_on_their_departments() -> None:
    region = load_spec("inventories/example").region
    allowed = spy_permissions(region)
    assert "2901*2001" in allowed  # social
    assert "2902*2005" in allowed  # health
    assert "2901*2005" not in allowed and "2902*2002" not in allowed


def test_spy_permissions_are_every_pair_that_shares_a_department() -> None:
    region = parse_region(synthetic_yaml(400, departments=30, pbx_nodes=1, supervisors=12), "synthetic")
    tel = region.telephony
    pairs = sorted(f"{sup.extension}*{op.extension}" for sup in tel.supervisors for op in tel.operators
                   if {skill.department for skill in op.skills()} & set(sup.departments))
    assert pairs and spy_permissions(region) == pairs


def test_modules_are_explicit_and_restart_drops_calls(example: RenderResult) -> None:
    modules = text(example, "/etc/asterisk/modules.conf")
    assert "autoload = no" in modules
    for needed in ("chan_pjsip.so", "app_queue.so", "res_prometheus.so", "cdr_pgsql.so", "app_chanspy.so"):
        assert f"load => {needed}" in modules
    host = example.manifest.host(HOST)
    assert host is not None
    for path in ("/etc/asterisk/modules.conf", "/etc/asterisk/asterisk.conf"):
        managed = host.file(path)
        assert managed is not None and managed.trigger.action == "restart" and managed.trigger.drops_calls


@pytest.mark.parametrize(("path", "command"), [
    ("/etc/asterisk/extensions.conf", "asterisk -rx 'dialplan reload'"),
    ("/etc/asterisk/pjsip.conf", "asterisk -rx 'module reload res_pjsip.so'"),
    ("/etc/asterisk/queues.conf", "asterisk -rx 'module reload app_queue.so'"),
    ("/etc/asterisk/voicemail.conf", "asterisk -rx 'module reload app_voicemail.so'"),
    ("/etc/asterisk/manager.conf", "asterisk -rx 'manager reload'"),
    ("/etc/asterisk/logger.conf", "asterisk -rx 'logger reload'"),
    ("/etc/asterisk/http.conf", "asterisk -rx 'module reload http'"),
    ("/etc/asterisk/prometheus.conf", "asterisk -rx 'module reload res_prometheus.so'"),
])
def test_each_file_reloads_without_dropping_calls(example: RenderResult, path: str, command: str) -> None:
    host = example.manifest.host(HOST)
    assert host is not None
    managed = host.file(path)
    assert managed is not None
    assert (managed.trigger.action, managed.trigger.service, managed.trigger.command) == ("reload", "asterisk",
                                                                                          command)
    assert not managed.trigger.drops_calls


def test_ami_users_on_loopback_only(example: RenderResult) -> None:
    manager = text(example, "/etc/asterisk/manager.conf")
    assert "bindaddr = 127.0.0.1" in manager
    users = [s for s in sections(manager) if s != "general"]
    assert users == ["ekc_exporter", "ekc_cti", "ekc_callback"]
    assert manager.count("deny = 0.0.0.0/0.0.0.0\npermit = 127.0.0.1/255.255.255.255") == 3


def test_redacted_render_holds_no_sip_password() -> None:
    loaded = load_spec("inventories/example")
    from ekc.spec.secrets import SecretsView, required_secrets  # noqa: PLC0415

    tree = placeholder_tree(required_secrets(loaded.region))
    tree["sip"] = {ext: f"Sip{ext}Secret0123456789" for ext in tree["sip"]}
    redacted = render_region(loaded, SecretsView(tree).redact())
    pjsip = redacted.contents[(HOST, "/etc/asterisk/pjsip.conf")].decode()
    assert "password = <redacted>" in pjsip
    assert not any(f"Sip{ext}Secret" in data.decode("utf-8", "replace")
                   for data in redacted.contents.values() for ext in tree["sip"])


def test_builtin_prompts_agree_with_the_rule() -> None:
    assert set(BUILTIN_TEXTS) | {"ekc/info-hours"} == BUILTIN_PROMPTS
    texts = prompt_texts(load_spec("inventories/example").region)
    for name in ("ekc/welcome", "ekc/info-menu", "ekc/callback-offer-1", "ekc/info-hours"):
        assert texts[name]
    assert "Министерство социальной защиты — нажмите один." in texts["ekc/welcome"]


def _callback_module() -> ModuleType:
    path = REPO / "templates/asterisk/usr/local/lib/ekc/ekc-callback.j2"
    loader = importlib.machinery.SourceFileLoader("ekc_callback", str(path))
    spec = importlib.util.spec_from_loader("ekc_callback", loader)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["ekc_callback"] = module
    spec.loader.exec_module(module)
    return module


def test_callback_service_dials_oldest_request_through_a_free_operator() -> None:
    cb = _callback_module()
    requests = cb.parse_requests({
        "/ekc/callback/info/1700000100-1700000100.7": "+79130000002",
        "/ekc/callback/info/1700000000-1700000000.3": "+79130000001",
        "/ekc/callback/social/1700000050-1700000050.5": "+79130000003",
        "/ekc/other/x": "+7",
    })
    assert [r.number for r in requests] == ["+79130000001", "+79130000003", "+79130000002"]
    now = 1700001000.0
    members = [
        cb.Member("info", "2017", "1", False, False, 0),           # free
        cb.Member("info", "2018", "2", False, True, 0),            # in a call
        cb.Member("social", "2002", "1", True, False, 0),          # paused
        cb.Member("social", "2004", "1", False, False, int(now) - 5),  # still in wrap-up
    ]
    chosen = cb.choose(requests, members, {"info": 5, "social": 15}, now, {})
    assert [(r.number, ext) for r, ext in chosen] == [("+79130000001", "2017")]
    # a request already ringing an operator is not offered to another one right away
    again = cb.choose(requests, members, {"info": 5, "social": 15}, now, {requests[0].key: now - 10})
    assert [(r.number, ext) for r, ext in again] == [("+79130000002", "2017")]
    assert cb.choose(requests, members, {}, now, {}) == []


def test_a_spec_change_elsewhere_never_restarts_asterisk(tmp_path: Path) -> None:
    """modules.conf and asterisk.conf (restart: calls drop) do not change when only the dialplan's data does."""
    spec = (REPO / "inventories/example/region.yml").read_text(encoding="utf-8")
    region = tmp_path / "example"
    region.mkdir()
    (region / "region.yml").write_text(spec, encoding="utf-8")
    before = placeholder_render(str(region))
    (region / "region.yml").write_text(spec.replace('holidays: ["2026-11-04"', 'holidays: ["2026-12-31", "2026-11-04"'),
                                       encoding="utf-8")
    after = placeholder_render(str(region))
    for path in ("/etc/asterisk/modules.conf", "/etc/asterisk/asterisk.conf"):
        assert before.contents[(HOST, path)] == after.contents[(HOST, path)], path
    assert before.contents[(HOST, "/etc/asterisk/extensions.conf")] != after.contents[
        (HOST, "/etc/asterisk/extensions.conf")]


def test_incident_command_sets_and_deletes_the_astdb_key() -> None:
    from ekc.cli.telephony import incident_command  # noqa: PLC0415

    assert incident_command("on", "social", "ekc/incident") == "database put ekc/incident social ekc/incident"
    assert incident_command("off", "social", "ekc/incident") == "database del ekc/incident social"


def test_incident_refuses_an_unknown_department() -> None:
    from click.testing import CliRunner  # noqa: PLC0415

    from ekc.cli.main import main  # noqa: PLC0415

    result = CliRunner().invoke(main, ["incident", "on", str(REPO / "inventories/example"), "nowhere"])
    assert result.exit_code == 2 and "no department 'nowhere'" in result.output, result.output


def test_metrics_served_on_the_node_address_with_basic_auth(example: RenderResult) -> None:
    http = text(example, "/etc/asterisk/http.conf")
    assert "enabled = yes" in http and "bindaddr = 10.54.0.11" in http and "bindport = 8088" in http
    prometheus = text(example, "/etc/asterisk/prometheus.conf")
    assert "auth_username = prometheus" in prometheus
    assert "auth_password = <password monitoring.asterisk_metrics>" in prometheus
    host = example.manifest.host(HOST)
    assert host is not None
    for path in ("/etc/asterisk/prometheus.conf", "/etc/asterisk/manager.conf", "/etc/asterisk/pjsip.conf",
                 "/etc/ekc/callback.json"):
        managed = host.file(path)
        assert managed is not None and managed.secret and managed.mode == "0640" and managed.group == "asterisk"
