"""verify: prove with testinfra that the hosts are what the render says, one readable test per check.

The checks are data derived from the build manifest (never from the spec directly), so what is verified is
exactly what was rendered, reviewed and applied:

- every wanted package is installed, and at the bundle lock's exact version when a lock is given;
- every managed file has the rendered sha256, mode, owner and group; every absent path is absent;
- every service is enabled and running, except a unit that skips itself in a container
  (``ConditionVirtualization=``): that check is *skipped* as "not provable in a container", never passed;
- nothing listens on a non-loopback address unless the flow matrix has its port;
- the firewall drops a connection the matrix does not allow from a given source, and admits one it does;
- a database cluster's members are in it, with one leader, and its etcd members are healthy (``cluster``).

``run_verify`` runs ``tests/verify/test_hosts.py`` in a pytest subprocess (testinfra's ssh backend,
``--hosts=ssh://root@<address>`` per host) with the build directory in ``$EKC_VERIFY_BUILD``, and reads the
JUnit XML back into a per-host summary. The pure pieces (which checks, their ids, the firewall probes, the
``ss`` parser, the JUnit reader) live here so they are unit tested without hosts.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ekc.bundle.lock import BundleLock
from ekc.engines.live import FileState
from ekc.render.manifest import BuildManifest, Flow, HostManifest, ManagedFile, ServiceState
from ekc.verify.cluster import ClusterCheck, cluster_checks

DEPLOY_SOURCE = "deploy host"  # how the flow matrix labels the deploy host (ekc.render.flows)
DENIED_PORTS = (9100, 5432, 8088)  # first choices: real services that the matrix restricts to some sources
DISCARD_PORT = 9  # last resort: a port no component uses
PROBE_TIMEOUT = 3.0
NOT_PROVABLE = "not provable in a container"
ProbeResult = Literal["connected", "refused", "timeout", "nobind", "error"]

# Runs on the probing machine with python3: bind to the source address (so the firewall judges that
# address), connect, print one word. argv: source, target, port, timeout.
PROBE_CODE = (
    "import socket,sys\n"
    "s=socket.socket();s.settimeout(float(sys.argv[4]))\n"
    "try:s.bind((sys.argv[1],0))\n"
    "except OSError as e:print('nobind',e);sys.exit()\n"
    "try:s.connect((sys.argv[2],int(sys.argv[3])));print('connected')\n"
    "except socket.timeout:print('timeout')\n"
    "except ConnectionRefusedError:print('refused')\n"
    "except OSError as e:print('error',e)\n"
)


# --- the checks (pure) -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PackageCheck:
    """A wanted package; ``version`` is the bundle lock's exact version (None: any version)."""

    host: str
    package: str
    version: str | None = None

    @property
    def id(self) -> str:
        return f"{self.host}:{self.package}"


@dataclass(frozen=True)
class FileCheck:
    """A managed file and the attributes the render gives it."""

    host: str
    file: ManagedFile

    @property
    def id(self) -> str:
        return f"{self.host}:{self.file.path}"


@dataclass(frozen=True)
class AbsentCheck:
    """A path that must not exist."""

    host: str
    path: str

    @property
    def id(self) -> str:
        return f"{self.host}:{self.path}"


@dataclass(frozen=True)
class ServiceCheck:
    """A systemd unit and the state it must be in."""

    host: str
    service: ServiceState

    @property
    def id(self) -> str:
        return f"{self.host}:{self.service.name}"


@dataclass(frozen=True)
class PortsCheck:
    """Every non-loopback listener of a host must be in its part of the flow matrix."""

    host: str
    flows: tuple[Flow, ...]

    @property
    def id(self) -> str:
        return self.host


@dataclass(frozen=True)
class FirewallProbe:
    """A TCP connection from ``source`` to a host's port, and whether the matrix admits it.

    ``source_host`` is the manifest host to probe from, or None for the deploy host (the machine verify runs
    on). ``why`` explains the expectation from the matrix, for the test's message.
    """

    host: str
    address: str
    source: str
    source_address: str
    source_host: str | None
    port: int
    admitted: bool
    why: str

    @property
    def id(self) -> str:
        return f"{self.host}:tcp/{self.port} from {self.source}"


@dataclass(frozen=True)
class VerifyChecks:
    """Every check of a verify run, by kind; each becomes one parametrized test."""

    packages: tuple[PackageCheck, ...] = ()
    locked: tuple[PackageCheck, ...] = ()
    files: tuple[FileCheck, ...] = ()
    absent: tuple[AbsentCheck, ...] = ()
    services: tuple[ServiceCheck, ...] = ()
    ports: tuple[PortsCheck, ...] = ()
    denied: tuple[FirewallProbe, ...] = ()
    admitted: tuple[FirewallProbe, ...] = ()
    clusters: tuple[ClusterCheck, ...] = ()


def verify_checks(manifest: BuildManifest, hosts: Sequence[str], lock: BundleLock | None = None) -> VerifyChecks:
    """The checks of ``hosts`` (names), derived from the manifest and, for versions, the bundle lock."""
    chosen = [h for h in manifest.hosts if h.name in set(hosts)]
    versions = {d.name: d.version for d in lock.debs} if lock is not None else {}
    probes = [p for h in chosen for p in firewall_probes(manifest, h)]
    return VerifyChecks(
        packages=tuple(PackageCheck(h.name, p) for h in chosen for p in h.packages),
        locked=tuple(PackageCheck(h.name, p, versions[p]) for h in chosen for p in h.packages if p in versions),
        files=tuple(FileCheck(h.name, f) for h in chosen for f in h.files),
        absent=tuple(AbsentCheck(h.name, p) for h in chosen for p in h.absent),
        services=tuple(ServiceCheck(h.name, s) for h in chosen for s in h.services),
        ports=tuple(PortsCheck(h.name, tuple(f for f in manifest.flows if f.target == h.name)) for h in chosen),
        denied=tuple(p for p in probes if not p.admitted),
        admitted=tuple(p for p in probes if p.admitted),
        clusters=cluster_checks(chosen),
    )


def admits(flows: Sequence[Flow], target: str, source_address: str, proto: str, port: int) -> bool:
    """Whether the matrix lets ``source_address`` reach ``port``/``proto`` on host ``target``."""
    address = ipaddress.ip_address(source_address)
    return any(
        f.target == target and f.proto == proto and f.port <= port <= (f.port_end or f.port)
        and address in ipaddress.ip_network(f.source_cidr, strict=False)
        for f in flows
    )


def deploy_address(manifest: BuildManifest) -> str | None:
    """The deploy host's address, as the flow matrix records it (it may reach SSH on every host)."""
    for flow in manifest.flows:
        if flow.source == DEPLOY_SOURCE:
            return flow.source_cidr.split("/")[0]
    return None


def probe_sources(manifest: BuildManifest, host: HostManifest) -> list[tuple[str, str, str | None]]:
    """Where a host can be probed from: every other node (in manifest order), then the deploy host."""
    sources: list[tuple[str, str, str | None]] = [(h.name, h.address, h.name) for h in manifest.hosts
                                                  if h.name != host.name]
    deploy = deploy_address(manifest)
    if deploy is not None and deploy not in {h.address for h in manifest.hosts}:
        sources.append((DEPLOY_SOURCE, deploy, None))
    return sources


def firewall_probes(manifest: BuildManifest, host: HostManifest) -> tuple[FirewallProbe, ...]:
    """One connection the matrix refuses and one it admits (SSH), from the first source that has each.

    The refused one prefers a real, restricted service port (node_exporter's 9100 from a node that is not
    the monitoring node, PostgreSQL from a node that is not a client) over a port nobody uses.
    """
    flows = [f for f in manifest.flows if f.target == host.name]
    matrix_ports = sorted({f.port for f in flows if f.proto == "tcp"})
    candidates = list(dict.fromkeys([*DENIED_PORTS, *matrix_ports, DISCARD_PORT]))
    probes: list[FirewallProbe] = []
    sources = probe_sources(manifest, host)
    denied = next(((s, p) for s in sources for p in candidates if not admits(flows, host.name, s[1], "tcp", p)),
                  None)
    if denied is not None:
        (name, address, source_host), port = denied
        probes.append(FirewallProbe(host.name, host.address, name, address, source_host, port, False,
                                    _matrix_says(flows, host.name, port, name, address)))
    ssh = next((s for s in sources if admits(flows, host.name, s[1], "tcp", 22)), None)
    if ssh is not None:
        name, address, source_host = ssh
        probes.append(FirewallProbe(host.name, host.address, name, address, source_host, 22, True,
                                    _matrix_says(flows, host.name, 22, name, address)))
    return tuple(probes)


def _matrix_says(flows: Sequence[Flow], host: str, port: int, source: str, address: str) -> str:
    """What the matrix says about ``port`` for a probe, in words: who may reach it, and whether the source may."""
    allowed = sorted({f"{f.source} ({f.source_cidr})" for f in flows if f.proto == "tcp"
                      and f.port <= port <= (f.port_end or f.port)})
    purposes = sorted({f.purpose for f in flows if f.proto == "tcp" and f.port <= port <= (f.port_end or f.port)})
    what = f"tcp/{port}" + (f" ({', '.join(purposes)})" if purposes else "")
    who = f"only from {', '.join(allowed)}" if allowed else "from nowhere"
    verdict = "admits" if admits(flows, host, address, "tcp", port) else "does not admit"
    return f"the flow matrix {verdict} {what} from {source} ({address}); it admits it {who}"


# --- what the hosts answer (pure) --------------------------------------------------------------------------


@dataclass(frozen=True)
class Listener:
    """A listening socket from ``ss -Hltnu``."""

    proto: str
    address: str
    port: int

    @property
    def loopback(self) -> bool:
        """Bound to a loopback address (or to the loopback interface)."""
        if self.address.endswith("%lo"):
            return True
        try:
            ip = ipaddress.ip_address(self.address.split("%")[0])
        except ValueError:
            return False
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        return ip.is_loopback or (mapped is not None and mapped.is_loopback)


def parse_listeners(text: str) -> list[Listener]:
    """The listening sockets in ``ss -Hltnu`` output (netid, state, queues, local address:port, peer)."""
    listeners = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 5 or fields[0] not in ("tcp", "udp"):
            continue
        address, _, port = fields[4].rpartition(":")
        if port.isdigit():
            listeners.append(Listener(fields[0], address.strip("[]") or "*", int(port)))
    return listeners


def unexpected_listeners(listeners: Sequence[Listener], flows: Sequence[Flow],
                         ephemeral: tuple[int, int] | None = None) -> list[str]:
    """Non-loopback listeners whose port and protocol no flow to the host mentions, e.g. ``tcp/8080 on *``.

    ``ephemeral`` is the host's ``ip_local_port_range``: an unconnected UDP socket there is a client's (the
    DNS resolver PJSIP opens at start, on a port the kernel picks), not a service anyone is meant to reach;
    the firewall drops what comes to it like to any other port outside the matrix. TCP is never excused.
    """
    def listed(item: Listener) -> bool:
        return any(f.proto == item.proto and f.port <= item.port <= (f.port_end or f.port) for f in flows)

    def client(item: Listener) -> bool:
        return ephemeral is not None and item.proto == "udp" and ephemeral[0] <= item.port <= ephemeral[1]

    found = [f"{item.proto}/{item.port} on {item.address}" for item in listeners
             if not item.loopback and not listed(item) and not client(item)]
    return list(dict.fromkeys(found))


def file_problems(want: ManagedFile, seen: FileState) -> list[str]:
    """How a file on the host differs from the render, in words (empty when it matches)."""
    if seen.kind == "missing":
        return [f"{want.path} is missing"]
    if seen.kind == "notfile":
        return [f"{want.path} is not a regular file"]
    problems = []
    if seen.sha256 != want.sha256:
        problems.append(f"content differs from the render (sha256 {seen.sha256[:12]}…, rendered {want.sha256[:12]}…)")
    for name, have, wanted in (("mode", seen.mode, want.mode), ("owner", seen.owner, want.owner),
                               ("group", seen.group, want.group)):
        if have != wanted:
            problems.append(f"{name} {have}, rendered {wanted}")
    return problems


def probe_command(source_address: str, target: str, port: int, timeout: float = PROBE_TIMEOUT) -> str:
    """The shell command that makes one TCP connection from ``source_address`` and prints its result."""
    code = PROBE_CODE.replace("'", "'\"'\"'")
    return f"python3 -c '{code}' {source_address} {target} {port} {timeout}"


def probe_result(output: str) -> tuple[ProbeResult, str]:
    """The first word of the probe's output, and the rest (an error message)."""
    word, _, rest = output.strip().partition(" ")
    known: tuple[ProbeResult, ...] = ("connected", "refused", "timeout", "nobind", "error")
    for result in known:
        if word == result:
            return result, rest
    return "error", output.strip() or "no output"


# --- running pytest and reading its JUnit XML ----------------------------------------------------------------


