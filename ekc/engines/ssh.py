"""How ekc logs in to the hosts: OpenSSH as root with the region's deploy key, one ``sh -s`` per host and task.

Everything that reads or changes a host without an engine (the live plan, verify's reachability check, the
fast path, incidents) runs a POSIX script through :func:`run_on_host`; :func:`on_hosts` does it for many
hosts at once and collects every host that did not answer into one error. :func:`shared_connections` keeps
one SSH connection per host open for the calls made inside it (OpenSSH connection sharing), so a plan
followed by a push pays the key exchange once.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from ekc.render.manifest import BuildManifest, HostManifest

MAX_PARALLEL = 16
SSH_EXIT_ERROR = 255  # ssh's own failure (connection, authentication, host key), not the remote command's
# How long a shared connection outlives its last use: long enough for one apply, short enough that a
# crashed ekc leaves nothing behind for long.
CONTROL_PERSIST_S = 60
T = TypeVar("T")


class LiveError(RuntimeError):
    """The hosts could not be read; the message names the host and says why."""


class UnreachableHosts(LiveError):
    """One or more hosts did not answer over SSH (network, key or host key)."""

    def __init__(self, failures: dict[str, str]):
        self.failures = dict(sorted(failures.items()))
        named = "; ".join(f"{host} ({why})" for host, why in self.failures.items())
        super().__init__(f"cannot reach {named}" if len(failures) == 1
                         else f"cannot reach {len(failures)} hosts: {named}")


@dataclass(frozen=True)
class SshAccess:
    """How ekc logs in to the hosts: root, with the region's deploy key only, never a password.

    Host keys are trusted on first contact and checked ever after (``accept-new``) against ``known_hosts``
    (default: the operator's own file): inside a closed contour there is no other source of truth for them,
    and a key that changes later is refused. With ``control_dir`` the calls share one connection per host
    (see :func:`shared_connections`).
    """

    identity: Path
    known_hosts: Path | None = None
    connect_timeout: int = 10
    user: str = "root"
    control_dir: Path | None = None

    def options(self) -> dict[str, str]:
        """The OpenSSH client options, as ``ssh_config`` keywords and values."""
        options = {
            "BatchMode": "yes",
            "IdentitiesOnly": "yes",
            "IdentityFile": str(self.identity),
            "PasswordAuthentication": "no",
            "StrictHostKeyChecking": "accept-new",
            "ConnectTimeout": str(self.connect_timeout),
            "LogLevel": "ERROR",
        }
        if self.known_hosts is not None:
            options["UserKnownHostsFile"] = str(self.known_hosts)
        if self.control_dir is not None:
            options |= {"ControlMaster": "auto", "ControlPath": f"{self.control_dir}/%C",
                        "ControlPersist": str(CONTROL_PERSIST_S)}
        return options

    def argv(self, address: str) -> list[str]:
        """``ssh`` with every option, logging in to ``address`` (append the remote command)."""
        argv = ["ssh"]
        for key, value in self.options().items():
            argv += ["-o", f"{key}={value}"]
        return [*argv, f"{self.user}@{address}"]

    def config_text(self, control_dir: Path | None = None) -> str:
        """The same options as an ``ssh_config`` file (for testinfra's ``--ssh-config``)."""
        options = replace(self, control_dir=None).options()
        lines = ["Host *"] + [f"    {key} {value}" for key, value in options.items()]
        if control_dir is not None:
            lines.append(f"    ControlPath {control_dir}/%C")
        return "\n".join(lines) + "\n"


@contextmanager
def shared_connections(access: SshAccess, addresses: Sequence[str] = ()) -> Iterator[SshAccess]:
    """``access`` with connection sharing: the first call to a host opens a connection the later ones reuse.

    On leaving, the shared connections to ``addresses`` (and the sockets' directory) are closed; a host not
    listed there closes its own after ``CONTROL_PERSIST_S`` seconds without use.
    """
    with tempfile.TemporaryDirectory(prefix="ekc-ssh-") as tmp:
        shared = replace(access, control_dir=Path(tmp))
        try:
            yield shared
        finally:
            for address in addresses:
                subprocess.run([*shared.argv(address)[:-1], "-O", "exit", f"{shared.user}@{address}"],
                               capture_output=True, timeout=10, check=False)


def run_on_host(access: SshAccess, host: str, address: str, script: str, timeout: float = 300) -> str:
    """Run a POSIX ``script`` on a host (one ``sh -s``) and return its output; raise naming the host if not."""
    try:
        done = subprocess.run([*access.argv(address), "sh", "-s"], input=script, capture_output=True,
                              text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise UnreachableHosts({host: f"{address}: no answer within {timeout:.0f} s"}) from None
    if done.returncode == SSH_EXIT_ERROR:
        why = (done.stderr.strip().splitlines() or ["ssh failed"])[-1]
        raise UnreachableHosts({host: f"{address}: {why}"})
    return done.stdout


def check_reachable(manifest: BuildManifest, access: SshAccess) -> None:
    """Log in to every host of ``manifest`` at once; raise one error naming every host that did not answer."""
    on_hosts(manifest.hosts, lambda h: run_on_host(access, h.name, h.address, "true\n", 60))


def on_hosts(hosts: Sequence[HostManifest], task: Callable[[HostManifest], T]) -> dict[str, T]:
    """Run ``task(host)`` for every host at once; collect every unreachable host into one error."""
    answers: dict[str, T] = {}
    failures: dict[str, str] = {}
    if not hosts:
        return answers
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(hosts))) as pool:
        futures = {h.name: pool.submit(task, h) for h in hosts}
        for name, future in futures.items():
            try:
                answers[name] = future.result()
            except UnreachableHosts as exc:
                failures.update(exc.failures)
    if failures:
        raise UnreachableHosts(failures)
    return answers
