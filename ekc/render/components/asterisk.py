"""Asterisk 22 on an asterisk node: PJSIP phones and trunks, the IVR, queues, recording, rating, callbacks.

Every Asterisk file declares what its change needs: most take a reload that keeps calls up (``dialplan
reload``, ``module reload res_pjsip.so`` ...); modules.conf and asterisk.conf need a restart, which the plan
flags as dropping every call on the node. The dialplan's logic lives in ``asterisk_dialplan``, the prompts'
texts in ``asterisk_prompts``; templates only print.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, replace

from ekc.render.components.addresses import MONITOR_DIR
from ekc.render.components.asterisk_dialplan import (
    VOICEMAIL_CONTEXT,
    department_plan,
    holiday_extensions,
    hours_context,
    menu_plans,
    normalise_lines,
    schedule_checks,
    serve_context,
    spy_permissions,
)
from ekc.render.components.asterisk_edge import READY_VAR, EdgeView, edge_view, served
from ekc.render.components.asterisk_prompts import prompt_texts
from ekc.render.components.asterisk_queues import clean, queue_data
from ekc.render.components.base import DAEMON_RELOAD
from ekc.render.components.dbcluster import is_cluster
from ekc.render.manifest import ServiceState, Trigger
from ekc.render.model import FileSpec, HostLayer, RenderContext
from schemas.region import Node, Region

COMPONENT = "asterisk"
PACKAGES = ("asterisk", "asterisk-modules", "asterisk-core-sounds-ru", "asterisk-core-sounds-ru-gsm",
            "asterisk-core-sounds-en-gsm", "asterisk-moh-opsound-gsm", "espeak-ng", "espeak-ng-data", "sox",
            "libsox-fmt-base", "python3")
LIB = "/usr/local/lib/ekc"
PROMPTS_UNIT = "ekc-prompts"
CALLBACK_UNIT = "ekc-callback"
RETENTION_UNIT = "ekc-recordings-retention"
SOUNDS_DIR = "/usr/share/asterisk/sounds"
AMI_PORT = 5038
HTTP_PORT = 8088
TLS_DIR = "/etc/asterisk/keys"
CALLBACK_CONFIG = "/etc/ekc/callback.json"
ABSENT = ("/etc/asterisk/users.conf",)

RESTART = Trigger("restart", "asterisk", "systemctl restart asterisk",
                  "Asterisk restarts: every call on this node drops", drops_calls=True)


def _reload(command: str, what: str) -> Trigger:
    return Trigger("reload", "asterisk", f"asterisk -rx '{command}'", f"{what}; no call is dropped")


DIALPLAN_RELOAD = _reload("dialplan reload", "the dialplan is replaced for new calls")
PJSIP_RELOAD = _reload("module reload res_pjsip.so", "endpoints, trunks and the SIP ACL are reread")
QUEUE_RELOAD = _reload("module reload app_queue.so", "queues are reread; waiting callers keep their place")
VOICEMAIL_RELOAD = _reload("module reload app_voicemail.so", "voicemail boxes are reread")
MANAGER_RELOAD = _reload("manager reload", "AMI users are reread")
LOGGER_RELOAD = _reload("logger reload", "log channels are reopened")
HTTP_RELOAD = _reload("module reload http", "Asterisk's HTTP server is reconfigured")
PROMETHEUS_RELOAD = _reload("module reload res_prometheus.so", "the metrics endpoint is reconfigured")
RTP_RELOAD = _reload("module reload res_rtp_asterisk.so", "new calls use the RTP settings")
CDR_RELOAD = _reload("module reload cdr", "CDR settings are reread")
ARI_RELOAD = _reload("module reload res_ari.so", "ARI users are reread")


def _unit_restart(unit: str, impact: str) -> Trigger:
    return Trigger("restart", unit, f"systemctl restart {unit}", impact)


PROMPTS_RESTART = _unit_restart(PROMPTS_UNIT, "the prompts are synthesized again; no call is dropped")
CALLBACK_RESTART = _unit_restart(CALLBACK_UNIT, "the callback service restarts; pending requests are kept")

# The modules Asterisk loads (modules.conf has autoload=no): nothing else runs.
MODULES = (
    # SIP
    "res_pjproject.so", "res_sorcery_config.so", "res_sorcery_memory.so", "res_sorcery_astdb.so",
    "res_pjsip.so", "res_pjsip_session.so", "res_pjsip_pubsub.so", "chan_pjsip.so", "res_pjsip_authenticator_digest.so",
    "res_pjsip_endpoint_identifier_ip.so", "res_pjsip_endpoint_identifier_user.so", "res_pjsip_registrar.so",
    "res_pjsip_acl.so", "res_pjsip_sdp_rtp.so", "res_pjsip_caller_id.so", "res_pjsip_header_funcs.so",
    "res_pjsip_dtmf_info.so", "res_pjsip_rfc3326.so", "res_pjsip_logger.so", "res_rtp_asterisk.so",
    "res_timing_timerfd.so", "res_security_log.so",
    # media
    "codec_alaw.so", "codec_ulaw.so", "codec_a_mu.so", "codec_gsm.so", "codec_g722.so",
    "codec_opus_open_source.so", "codec_resample.so", "format_wav.so", "format_gsm.so", "format_pcm.so",
    "format_sln.so", "format_wav_gsm.so", "res_musiconhold.so",
    "bridge_simple.so", "bridge_native_rtp.so", "bridge_holding.so", "bridge_builtin_features.so",
    "bridge_softmix.so",
    # dialplan
    "pbx_config.so", "app_dial.so", "app_queue.so", "app_playback.so", "app_read.so", "app_voicemail.so",
    "app_mixmonitor.so", "app_chanspy.so", "app_stack.so", "app_exec.so", "app_verbose.so", "app_db.so",
    "app_senddtmf.so", "app_sayunixtime.so", "func_db.so", "func_strings.so", "func_channel.so",
    "func_callerid.so", "func_cdr.so", "func_logic.so", "func_math.so", "func_dialplan.so", "func_global.so",
    "func_uri.so", "func_timeout.so", "func_pjsip_endpoint.so",
    # records and metrics
    "cdr_csv.so", "res_prometheus.so",
)
REALTIME_MODULE = "res_config_pgsql.so"
DATABASE_MODULES = (REALTIME_MODULE, "cdr_pgsql.so", "cel_pgsql.so")
ARI_MODULES = ("res_http_websocket.so", "res_stasis.so", "res_ari.so", "res_ari_model.so",
               "res_ari_channels.so", "res_ari_bridges.so", "res_ari_events.so", "res_ari_applications.so")

AMI_USERS: dict[str, tuple[str, str]] = {
    # user: (read, write)
    "ekc_exporter": ("system,call,agent,reporting", "reporting"),
    # system: PJSIPShowContacts, which the click-to-call service uses to find the phone of a workstation
    "ekc_cti": ("call,originate", "originate,call,system"),
    "ekc_callback": ("reporting", "originate,reporting"),
}


def asterisk_layer(ctx: RenderContext, node: Node) -> HostLayer:
    """Asterisk's packages, configuration, setup units and services on ``node``."""

    files = [*_core_files(ctx, node), *_telephony_files(ctx, node), *_unit_files(ctx)]
    services = [ServiceState("asterisk"), ServiceState(PROMPTS_UNIT), ServiceState(CALLBACK_UNIT)]
    if ctx.spec.region.telephony.recording.enabled:
        services.append(ServiceState(f"{RETENTION_UNIT}.timer"))
    # pbx_config still reads the package's users.conf and warns that it is deprecated: nothing here uses it.
    return HostLayer(packages=list(PACKAGES), services=services, files=files, absent=list(ABSENT))


def _file(path: str, trigger: Trigger, *, comment: str | None = ";", mode: str = "0640",
          group: str = "asterisk", secret: bool = False, **data: object) -> FileSpec:

    return FileSpec(path, f"{COMPONENT}{path}.j2", COMPONENT, data, mode=mode, owner="root", group=group,
                    trigger=trigger, secret=secret, comment=comment)


def _core_files(ctx: RenderContext, node: Node) -> list[FileSpec]:
    region = ctx.spec.region
    tel = region.telephony
    modules = list(MODULES)
    cluster = is_cluster(region)
    if cluster:
        # No realtime with a cluster (asterisk_db); the journal ekc-journal replays after a database failover
        # (cdr_custom needs res_cdrel_custom).
        modules += [m for m in DATABASE_MODULES if m != REALTIME_MODULE]
        modules += ["res_cdrel_custom.so", "cdr_custom.so"]
    elif region.nodes_with("postgresql"):
        modules.extend(DATABASE_MODULES)
    if edge_view(region) is not None:
        # the dialplan reads the edge's X-EKC-Route header (CUT); queue members have a Custom: device state;
        # the IVR redirects a call to the node of its department (Transfer: a 302 while it is not answered)
        modules += ["func_cut.so", "func_devstate.so", "app_transfer.so"]
    if tel.ari.enabled:
        modules.extend(ARI_MODULES)
    ami = tel.ami
    users = [{"name": name, "password": ctx.secrets.get("ami", name), "read": read, "write": write}
             for name, (read, write) in AMI_USERS.items()] if ami.enabled else []
    files = [
        # A restart drops every call: these two change only when their own content does (render.header).
        _file("/etc/asterisk/asterisk.conf", RESTART, language=tel.ivr.language, systemname=node.name),
        _file("/etc/asterisk/modules.conf", RESTART, modules=sorted(modules)),
        _file("/etc/asterisk/logger.conf", LOGGER_RELOAD),
        _file("/etc/asterisk/cdr.conf", CDR_RELOAD, batch=cluster),
        _file("/etc/asterisk/rtp.conf", RTP_RELOAD, first=tel.rtp_ports[0], last=tel.rtp_ports[1]),
        _file("/etc/asterisk/manager.conf", MANAGER_RELOAD, secret=True, enabled=ami.enabled, bind=ami.bind,
              port=AMI_PORT, tls=ami.tls, tls_dir=TLS_DIR, users=users),
        # The metrics are for the monitoring nodes only: without one, nothing listens.
        _file("/etc/asterisk/http.conf", HTTP_RELOAD, enabled=bool(region.nodes_with("monitoring")),
              bind=node.address, port=HTTP_PORT),
        _file("/etc/asterisk/prometheus.conf", PROMETHEUS_RELOAD, secret=True,
              password=ctx.secrets.get("monitoring", "asterisk_metrics")),
    ]
    if tel.ari.enabled:
        files.append(_file("/etc/asterisk/ari.conf", ARI_RELOAD, secret=True,
                           password=ctx.secrets.get("ari", "ekc")))
    if tel.sip_tls.enabled or ami.tls:
        files.extend(_tls_files(ctx, node))
    return files


def _tls_files(ctx: RenderContext, node: Node) -> list[FileSpec]:
    """The node's certificate and key from the vault, for SIP over TLS and AMI over TLS."""
    return [
        _file(f"{TLS_DIR}/ekc.crt", PJSIP_RELOAD, comment=None, mode="0644",
              pem=ctx.secrets.get("tls", node.name, "cert").strip()),
        _file(f"{TLS_DIR}/ekc.key", PJSIP_RELOAD, comment=None, secret=True,
              pem=ctx.secrets.get("tls", node.name, "key").strip()),
        _file(f"{TLS_DIR}/ca.crt", PJSIP_RELOAD, comment=None, mode="0644",
              pem=ctx.secrets.get("ca", "cert").strip()),
    ]


def sip_sources(ctx: RenderContext, node: Node) -> list[str]:
    """The networks allowed to send SIP to ``node``: exactly the flow matrix's SIP sources, collapsed."""
    port = ctx.spec.region.telephony.sip_port
    cidrs = {f.source_cidr for f in ctx.flows if f.target == node.name and f.port == port and f.port_end is None}
    nets = ipaddress.collapse_addresses(ipaddress.IPv4Network(c) for c in cidrs)
    return [str(net) for net in nets]


def _telephony_files(ctx: RenderContext, node: Node) -> list[FileSpec]:
    region = ctx.spec.region
    tel = region.telephony
    # Region-wide data, built once per render and shared by every node (so is the rendered file).
    trunks = ctx.once(f"{COMPONENT}.trunks", lambda: [t.model_dump(mode="json") for t in tel.trunks])
    view = edge_view(region)
    voicemail = _file("/etc/asterisk/voicemail.conf", VOICEMAIL_RELOAD, context=VOICEMAIL_CONTEXT,
                      boxes=[{"id": b.id, "name": clean(b.name)} for b in tel.voicemail])
    extra: list[FileSpec] = []
    if view is None:
        phones = ctx.once(f"{COMPONENT}.phones", lambda: _phones(ctx))
        queues = ctx.once(f"{COMPONENT}.queues", lambda: queue_data(region))
        dialplan = ctx.once(f"{COMPONENT}.dialplan", lambda: _dialplan_file(dialplan_data(region)))
    else:
        # Behind the SIP edge each node has its own departments (asterisk_edge): its own queues and dialplan.
        duties = served(ctx, node)
        phones = []
        queues = [q for q in ctx.once(f"{COMPONENT}.queues", lambda: queue_data(region, view)) if q.id in duties]
        dialplan = ctx.once(f"{COMPONENT}.dialplan", lambda: _dialplan_file(_edge_dialplan(ctx, view)))
        extra.append(_served_file(ctx, duties))
    permit = sip_sources(ctx, node)
    pjsip = ctx.once(f"{COMPONENT}.pjsip.{','.join(permit)}", lambda: _file(
        "/etc/asterisk/pjsip.conf", PJSIP_RELOAD, secret=True, phones=phones, trunks=trunks, sip_port=tel.sip_port,
        tls=tel.sip_tls.model_dump(), tls_dir=TLS_DIR, permit=permit, edge=view))
    return [pjsip, dialplan, _file("/etc/asterisk/queues.conf", QUEUE_RELOAD, queues=queues), voicemail, *extra]


def _edge_dialplan(ctx: RenderContext, view: EdgeView) -> dict[str, object]:
    """The dialplan every node behind the SIP edge shares: the region's, each department's entry deciding at
    run time (the node's ekc-served.conf) whether this node queues the call or hands it to the edge."""
    region = ctx.spec.region
    data = dialplan_data(region)
    data["departments"] = [replace(plan, body_context=serve_context(plan.id))
                           for plan in data["departments"]]  # type: ignore[attr-defined]
    data.update(edge=view, phone_suffix=f"@{view.endpoint}", caller_phone="${EKC_PHONE}",
                supervisor_phones=sorted(sup.extension for sup in region.telephony.supervisors))
    return data


def _served_file(ctx: RenderContext, duties: dict[str, str]) -> FileSpec:
    """The node's own departments behind the SIP edge: their queue logic, and which of them it is primary of."""
    region = ctx.spec.region
    plans = {d.id: department_plan(d, screen_pop=crm_url(region) is not None) for d in region.telephony.departments
             if d.id in duties}
    served = [replace(plans[dep], body_context=serve_context(dep), duty=duty) for dep, duty in duties.items()]
    return _file("/etc/asterisk/ekc-served.conf", DIALPLAN_RELOAD, served=served, ready=READY_VAR)


# Views of the region's people for the two files that list them all. Objects, not dicts: Jinja tries an
# attribute before a key, and the failed attribute lookup made a dict cost 5 times as much to print.
@dataclass(frozen=True, slots=True)
class Phone:
    """An operator's or supervisor's endpoint in pjsip.conf."""

    extension: str
    name: str
    context: str
    password: str


def _phones(ctx: RenderContext) -> list[Phone]:
    """Every operator's and supervisor's endpoint in pjsip.conf, with its SIP password."""
    tel = ctx.spec.region.telephony
    return [Phone(p.extension, clean(p.name), context, ctx.secrets.get("sip", p.extension))
            for people, context in ((tel.operators, "ekc-operators"), (tel.supervisors, "ekc-supervisors"))
            for p in people]


def _dialplan_file(data: dict[str, object]) -> FileSpec:

    path = "/etc/asterisk/extensions.conf"
    return FileSpec(path, f"{COMPONENT}{path}.j2", COMPONENT, data, mode="0640", owner="root",
                    group="asterisk", trigger=DIALPLAN_RELOAD, comment=";")


def crm_url(region: Region) -> str | None:
    """The prefix of the screen pop's address, when the region has a CRM: the appeals app of ekc's CRM, whose
    ``call/<callid>/`` is the call's card (ekc_appeals.urls)."""
    if not region.nodes_with("crm"):
        return None
    host = region.crm.hostname or f"crm.{region.network.domain}"
    return f"https://{host}/appeals/"


def dialplan_data(region: Region) -> dict[str, object]:
    """Everything extensions.conf prints."""
    tel = region.telephony
    url = crm_url(region)
    codes = tel.feature_codes
    return {
        "timezone": region.region.timezone,
        "language": tel.ivr.language,
        "dids": sorted({did for t in tel.trunks for did in t.dids}),
        "trunks": [t.name for t in tel.trunks],
        "normalise": normalise_lines(),
        "menus": menu_plans(region),
        "departments": [department_plan(d, screen_pop=url is not None) for d in tel.departments],
        "queue_numbers": [{"number": d.queue.number, "id": d.id} for d in tel.departments],
        "schedules": [{"context": hours_context(name), "checks": schedule_checks(s, region.region.timezone)}
                      for name, s in sorted(tel.schedules.items())],
        "holidays": holiday_extensions(region),
        "crm_url": url,
        "recording": tel.recording.model_dump(),
        "monitor_dir": MONITOR_DIR,
        "rating": tel.rating.model_dump(),
        "phones": sorted([op.extension for op in tel.operators] + [sup.extension for sup in tel.supervisors]),
        # Without the SIP edge a phone is the endpoint it registered as; behind it the edge names the phone.
        "edge": None,
        "phone_suffix": "",
        "caller_phone": "${CHANNEL(endpoint)}",
        "supervisor_phones": [],
        "voicemail": [b.id for b in tel.voicemail],
        "codes": codes.model_dump(),
        "spy": spy_permissions(region),
    }


def _unit_files(ctx: RenderContext) -> list[FileSpec]:
    """The prompts' setup unit, the callback service and the recordings' retention timer."""
    region = ctx.spec.region
    tel = region.telephony
    texts = json.dumps(prompt_texts(region), ensure_ascii=False, indent=1, sort_keys=True)
    callback = {
        "ami": {"host": "127.0.0.1", "port": AMI_PORT, "user": "ekc_callback",
                "password": ctx.secrets.get("ami", "ekc_callback") if tel.ami.enabled else ""},
        "poll_s": 5,
        "ring_s": 30,
        "departments": {d.id: {"wrapup_s": d.queue.wrapup_s} for d in tel.departments if d.queue.callback.enabled},
    }
    unit = "/etc/systemd/system"
    files = [
        _file(f"{LIB}/ekc-prompts", PROMPTS_RESTART, comment=None, mode="0755", group="root",
              sounds=SOUNDS_DIR),
        _file(f"{LIB}/ekc-prompts.json", PROMPTS_RESTART, comment=None, mode="0644", group="root", texts=texts),
        _file(f"{unit}/{PROMPTS_UNIT}.service", DAEMON_RELOAD, comment="#", mode="0644", group="root",
              lib=LIB),
        _file(f"{LIB}/ekc-callback", CALLBACK_RESTART, comment=None, mode="0755", group="root"),
        _file(CALLBACK_CONFIG, CALLBACK_RESTART, comment=None, secret=True,
              config=json.dumps(callback, indent=1, sort_keys=True)),
        _file(f"{unit}/{CALLBACK_UNIT}.service", DAEMON_RELOAD, comment="#", mode="0644", group="root",
              lib=LIB, config=CALLBACK_CONFIG),
    ]
    if tel.recording.enabled:
        files += [
            _file(f"{unit}/{RETENTION_UNIT}.service", DAEMON_RELOAD, comment="#", mode="0644", group="root",
                  directory=MONITOR_DIR, days=tel.recording.retention_days),
            _file(f"{unit}/{RETENTION_UNIT}.timer", DAEMON_RELOAD, comment="#", mode="0644", group="root"),
        ]
    return files
