"""Asterisk nodes: Asterisk runs the rendered configuration, AMI listens on loopback only, the prompts exist,
and a SIP REGISTER with a wrong password is refused (sent from the deploy host, from an address the SIP ACL
admits, so the refusal is the password's and not the ACL's: the node's security log records the failed challenge).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import socket
import subprocess
import uuid

import pytest

from tests.verify.conftest import MANIFEST, SKIP_REASON, Host, Nodes, fail, parametrize_hosts

if MANIFEST is None:
    pytest.skip(SKIP_REASON, allow_module_level=True)

PJSIP = "/etc/asterisk/pjsip.conf"
SECURITY_LOG = "/var/log/asterisk/security"
# PJSIP reports a wrong digest as ChallengeResponseFailed (InvalidPassword where a module checks the secret itself).
REFUSAL_EVENTS = ("ChallengeResponseFailed", "InvalidPassword")
OWN_PROMPTS = ("ekc/closed", "ekc/rate-call", "ekc/thanks", "ekc/callback-accepted")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    parametrize_hosts(metafunc, "pbx", "asterisk")


def cli(host: Host, command: str) -> str:
    """An Asterisk CLI command's output on the node."""
    out = host.run(f"asterisk -rx '{command}'")
    assert out.rc == 0, out.stderr
    return str(out.stdout)


def rendered(host: Host, path: str) -> str:
    """The configuration file as the node has it (verify's test_hosts proves it is the render's)."""
    return str(host.file(path).content_string)


def test_asterisk_runs_version_22(nodes: Nodes, pbx: str) -> None:
    assert cli(nodes(pbx), "core show version").startswith("Asterisk 22.")


def test_endpoints_queues_and_dialplan_are_loaded_as_rendered(nodes: Nodes, pbx: str) -> None:
    host = nodes(pbx)
    pjsip = rendered(host, PJSIP)
    endpoints = cli(host, "pjsip show endpoints")
    queues = cli(host, "queue show")
    dialplan = cli(host, "dialplan show ekc-from-trunk")
    problems = []
    for name in re.findall(r"^\[([^\]]+)\]\(phone\)$", pjsip, flags=re.MULTILINE):
        if not re.search(rf"Endpoint:\s+{re.escape(name)}\b", endpoints):
            problems.append(f"endpoint {name} not loaded")
    for queue in re.findall(r"^\[([a-z][a-z0-9_]*)\]$", rendered(host, "/etc/asterisk/queues.conf"),
                            flags=re.MULTILINE):
        if queue != "general" and not re.search(rf"^{queue} has \d+ calls", queues, flags=re.MULTILINE):
            problems.append(f"queue {queue} not loaded")
    if "ekc-ivr-entry" not in dialplan:
        problems.append("ekc-from-trunk does not lead to the IVR")
    fail(problems)


def test_ami_listens_on_loopback_only(nodes: Nodes, pbx: str) -> None:
    host = nodes(pbx)
    listeners = [s for s in host.socket.get_listening_sockets() if s.endswith(":5038")]
    assert listeners, "AMI does not listen"
    assert all(s in {"tcp://127.0.0.1:5038"} for s in listeners), listeners


def test_modules_autoload_off_and_prometheus_loaded(nodes: Nodes, pbx: str) -> None:
    host = nodes(pbx)
    assert "autoload = no" in rendered(host, "/etc/asterisk/modules.conf")
    assert "res_prometheus.so" in cli(host, "module show like prometheus")


def test_own_prompts_are_synthesized(nodes: Nodes, pbx: str) -> None:
    host = nodes(pbx)
    missing = [p for p in OWN_PROMPTS if not host.file(f"/usr/share/asterisk/sounds/ru/{p}.wav").exists]
    fail([f"prompt {p} missing" for p in missing])


def _sip_sources(pjsip: str) -> list[ipaddress.IPv4Network]:
    acl = pjsip.split("[ekc-acl]", 1)[1].split("\n[", 1)[0]
    return [ipaddress.IPv4Network(n) for n in re.findall(r"^permit = (\S+)$", acl, flags=re.MULTILINE)]


def _local_address_in(nets: list[ipaddress.IPv4Network]) -> str | None:
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=False).stdout
    for address in re.findall(r"inet (\d+\.\d+\.\d+\.\d+)/", out):
        if any(ipaddress.IPv4Address(address) in net for net in nets):
            return address
    return None


def register(source: str, target: str, extension: str, password: str | None, challenge: str = "") -> str:
    """One REGISTER over UDP (with a digest answer to ``challenge`` when given); the reply's first lines."""
    call_id = uuid.uuid4().hex
    uri = f"sip:{target}"
    lines = [
        f"REGISTER {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP {source}:5099;branch=z9hG4bK{uuid.uuid4().hex[:16]};rport",
        "Max-Forwards: 70",
        f"From: <sip:{extension}@{target}>;tag={uuid.uuid4().hex[:8]}",
        f"To: <sip:{extension}@{target}>",
        f"Call-ID: {call_id}",
        f"CSeq: {2 if challenge else 1} REGISTER",
        f"Contact: <sip:{extension}@{source}:5099>",
        "Expires: 60",
    ]
    if challenge and password is not None:
        realm = re.search(r'realm="([^"]+)"', challenge)
        nonce = re.search(r'nonce="([^"]+)"', challenge)
        assert realm and nonce, challenge
        ha1 = hashlib.md5(f"{extension}:{realm[1]}:{password}".encode()).hexdigest()
        ha2 = hashlib.md5(f"REGISTER:{uri}".encode()).hexdigest()
        response = hashlib.md5(f"{ha1}:{nonce[1]}:{ha2}".encode()).hexdigest()
        lines.append(f'Authorization: Digest username="{extension}", realm="{realm[1]}", nonce="{nonce[1]}", '
                     f'uri="{uri}", response="{response}", algorithm=MD5')
    message = "\r\n".join([*lines, "Content-Length: 0", "", ""]).encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 5099))
        sock.settimeout(5)
        sock.sendto(message, (target, 5060))
        return sock.recv(65535).decode("utf-8", "replace")


def test_register_with_a_wrong_password_is_refused(nodes: Nodes, pbx: str) -> None:
    host = nodes(pbx)
    pjsip = rendered(host, PJSIP)
    source = _local_address_in(_sip_sources(pjsip))
    if source is None:
        pytest.skip("the deploy host has no address the SIP ACL admits (operators' or trunk networks)")
    extension = re.findall(r"^\[(\d+)\]\(phone\)$", pjsip, flags=re.MULTILINE)[0]
    target = MANIFEST.host(pbx).address  # type: ignore[union-attr]
    first = register(source, target, extension, None)
    assert first.startswith("SIP/2.0 401"), first.splitlines()[0]
    second = register(source, target, extension, "wrong-password-" + uuid.uuid4().hex[:8], challenge=first)
    assert second.split(" ")[1] in {"401", "403"}, second.splitlines()[0]
    events = f'SecurityEvent="({"|".join(REFUSAL_EVENTS)})".*AccountID="{extension}"'
    log = host.run(f"grep -cE '{events}' {SECURITY_LOG}")
    assert int(str(log.stdout).strip() or 0) > 0, f"no {' or '.join(REFUSAL_EVENTS)} event in the security log"
