"""What a bundle contains, as data: the lock, the SBOM, the checksum list, and APT's answers about packages.

Pure functions only (no build root, no network, no gpg): the build in :mod:`ekc.bundle.build` produces these
records and the checks read them back, and unit tests exercise them without a machine.

The lock (``bundle.lock``, JSON) records what was asked for and every deb (name, version, arch, sha256,
size, archive path) and wheel (name, version, sha256, file name), sorted, so that a rebuild can demand
exactly the same bytes. The SBOM is CycloneDX 1.5 with package URLs (``pkg:deb/debian/...``,
``pkg:pypi/...``), deterministic: no timestamp, a serial number derived from the content.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import quote

SUITE = "forky"
ARCHITECTURE = "amd64"
REPO_SUITE = "ekc"
COMPONENT = "main"
LOCK_FORMAT = 1
LOCK_NAME = "bundle.lock"
SBOM_NAME = "sbom.cdx.json"
KEYRING_NAME = "keyring.asc"
SUMS_NAME = "SHA256SUMS"
SUMS_SIGNATURE = "SHA256SUMS.asc"
NODE_KEYRING = "/etc/apt/keyrings/ekc-bundle.asc"
_SIMULATED = re.compile(r"^Inst (?P<name>[^\s:]+)(?::\S+)? (?:\[\S+\] )?\((?P<version>\S+) .*\[(?P<arch>[^\]]+)\]\)")
_WHEEL_NAME = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(?:-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$")
_SUMS_LINE = re.compile(r"^(?P<digest>[0-9a-f]{64}) [ *](?P<path>.+)$")


class BundleError(RuntimeError):
    """A bundle could not be built or checked; the message says what and why, and what to do."""


@dataclass(frozen=True, order=True)
class DebEntry:
    """One Debian package in the bundle, as the archive's signed index describes it."""

    name: str
    version: str
    arch: str
    sha256: str
    size: int
    # The path in the archive and below the bundle's apt/: pool/main/c/chrony/chrony_4.9-2_amd64.deb
    filename: str


@dataclass(frozen=True, order=True)
class WheelEntry:
    """One Python wheel in the bundle."""

    name: str  # normalised (PEP 503): lower case, runs of -_. as one -
    version: str
    sha256: str
    filename: str


@dataclass(frozen=True)
class BundleLock:
    """Exact content of a bundle: what was asked for, and every deb and wheel with its hash, sorted."""

    suite: str
    architecture: str
    python: str
    packages: tuple[str, ...]
    python_requirements: tuple[str, ...]
    debs: tuple[DebEntry, ...]
    wheels: tuple[WheelEntry, ...] = ()
    format: int = LOCK_FORMAT

    def to_json(self) -> str:
        """The lock file's text: JSON, keys and entries sorted, one trailing newline."""
        data = asdict(self)
        data["debs"] = [asdict(d) for d in sorted(self.debs)]
        data["wheels"] = [asdict(w) for w in sorted(self.wheels)]
        return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> BundleLock:
        """Read a lock file; raise :class:`BundleError` if it is not one this version understands."""
        try:
            data = json.loads(text)
            if data.get("format") != LOCK_FORMAT:
                raise BundleError(f"lock format {data.get('format')!r} is not {LOCK_FORMAT}")
            return cls(
                suite=data["suite"],
                architecture=data["architecture"],
                python=data["python"],
                packages=tuple(data["packages"]),
                python_requirements=tuple(data["python_requirements"]),
                debs=tuple(sorted(DebEntry(**d) for d in data["debs"])),
                wheels=tuple(sorted(WheelEntry(**w) for w in data["wheels"])),
            )
        except (ValueError, KeyError, TypeError) as error:
            raise BundleError(f"not a bundle lock: {error}") from error

    def digest(self) -> str:
        """A short content hash of the lock: the bundle's version in its SBOM."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]


def normalise_pypi_name(name: str) -> str:
    """A Python project name in PEP 503 form (``Foo_Bar.baz`` → ``foo-bar-baz``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_name_version(filename: str) -> tuple[str, str]:
    """Project name (normalised) and version from a wheel's file name."""
    match = _WHEEL_NAME.match(filename)
    if not match:
        raise BundleError(f"{filename}: not a wheel file name")
    return normalise_pypi_name(match["name"]), match["version"]


def parse_simulation(text: str) -> list[tuple[str, str, str]]:
    """(name, version, arch) of every ``Inst`` line of ``apt-get install -s`` output, sorted."""
    found = {(m["name"], m["version"], m["arch"]) for m in map(_SIMULATED.match, text.splitlines()) if m}
    return sorted(found)


def parse_stanzas(text: str) -> list[dict[str, str]]:
    """Debian control stanzas (``apt-cache show``, Packages, Release) as dicts of their single-line fields."""
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in [*text.splitlines(), ""]:
        if not line.strip():
            if current:
                stanzas.append(current)
            current = {}
        elif not line[0].isspace() and ":" in line:
            name, value = line.split(":", 1)
            current[name] = value.strip()
    return stanzas


def purl_part(text: str) -> str:
    """``text`` percent-encoded for a package URL; ``:`` stays as it is (packageurl's rule)."""
    return quote(text, safe="").replace("%3A", ":")


def deb_purl(deb: DebEntry, distro: str = SUITE) -> str:
    """The package URL of a Debian package: ``pkg:deb/debian/<name>@<version>?arch=<arch>&distro=<suite>``."""
    return f"pkg:deb/debian/{purl_part(deb.name)}@{purl_part(deb.version)}?arch={deb.arch}&distro={distro}"


def wheel_purl(wheel: WheelEntry) -> str:
    """The package URL of a Python project: ``pkg:pypi/<name>@<version>``."""
    return f"pkg:pypi/{purl_part(wheel.name)}@{purl_part(wheel.version)}"


def _component(kind: str, name: str, version: str, purl: str, sha256: str, filename: str) -> dict[str, object]:
    """One CycloneDX component with its hash and where it lies in the bundle."""
    return {
        "type": "library",
        "bom-ref": purl,
        "name": name,
        "version": version,
        "purl": purl,
        "hashes": [{"alg": "SHA-256", "content": sha256}],
        "properties": [{"name": "ekc:kind", "value": kind}, {"name": "ekc:file", "value": filename}],
    }


def make_sbom(lock: BundleLock, *, region: str, fingerprint: str) -> dict[str, object]:
    """The bundle's CycloneDX 1.5 SBOM: one component per deb and per wheel.

    Deterministic: no timestamp, and the serial number is a UUID derived from the content, so the same
    lock and key always give the same file.
    """
    components = [
        _component("deb", d.name, d.version, deb_purl(d, lock.suite), d.sha256, f"apt/{d.filename}")
        for d in sorted(lock.debs)
    ]
    components += [
        _component("wheel", w.name, w.version, wheel_purl(w), w.sha256, f"wheels/{w.filename}")
        for w in sorted(lock.wheels)
    ]
    metadata = {
        "tools": {"components": [{"type": "application", "name": "ekc"}]},
        "component": {
            "type": "platform",
            "bom-ref": f"ekc-bundle-{region}",
            "name": f"ekc-bundle-{region}",
            "version": lock.digest(),
            "properties": [
                {"name": f"ekc:{name}", "value": value}
                for name, value in (
                    ("signing-key-fingerprint", fingerprint),
                    ("suite", lock.suite),
                    ("architecture", lock.architecture),
                    ("python", lock.python),
                )
            ],
        },
    }
    body = {"metadata": metadata, "components": components}
    content = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).digest()
    serial = uuid.UUID(bytes=content[:16], version=5)
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{serial}",
        "version": 1,
        **body,
    }


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bundle_files(out: Path) -> list[str]:
    """Every file below ``out`` as a POSIX path relative to it, sorted, the checksum files excluded."""
    found = []
    for path in out.rglob("*"):
        rel = path.relative_to(out).as_posix()
        if (path.is_file() or path.is_symlink()) and rel not in (SUMS_NAME, SUMS_SIGNATURE):
            found.append(rel)
    return sorted(found)


def sha256sums_text(out: Path) -> str:
    """``SHA256SUMS`` for ``out`` in ``sha256sum`` format (``sha256sum -c`` can check it)."""
    return "".join(f"{file_sha256(out / rel)}  {rel}\n" for rel in bundle_files(out))


def parse_sha256sums(text: str) -> tuple[dict[str, str], list[str]]:
    """Entries (path → digest) of a ``SHA256SUMS`` text and the problems of lines that are not entries.

    A path that is absolute, climbs with ``..`` or is listed twice is a problem: a checksum list must not
    point outside the bundle or say two things about one file.
    """
    entries: dict[str, str] = {}
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        match = _SUMS_LINE.match(line)
        if not match:
            problems.append(f"{SUMS_NAME}:{number}: not a '<sha256>  <path>' line")
            continue
        path = match["path"]
        if path.startswith("/") or ".." in path.split("/") or path in entries:
            problems.append(f"{SUMS_NAME}:{number}: {path}: absolute, outside the bundle or listed twice")
            continue
        entries[path] = match["digest"]
    return entries, problems


def lock_differences(lock: BundleLock, debs: Iterable[DebEntry], wheels: Iterable[WheelEntry]) -> list[str]:
    """How what a build got differs from its lock: missing, extra, other version or other bytes."""
    problems: list[str] = []
    for kind, want, got in (("deb", lock.debs, tuple(debs)), ("wheel", lock.wheels, tuple(wheels))):
        wanted = {(e.name, getattr(e, "arch", "")): e for e in want}
        have = {(e.name, getattr(e, "arch", "")): e for e in got}
        for key in sorted(wanted.keys() - have.keys()):
            problems.append(f"{kind} {key[0]}: in the lock but not in this build")
        for key in sorted(have.keys() - wanted.keys()):
            problems.append(f"{kind} {key[0]}: in this build but not in the lock")
        for key in sorted(wanted.keys() & have.keys()):
            old, new = wanted[key], have[key]
            if old.version != new.version:
                problems.append(f"{kind} {key[0]}: version {new.version}, the lock says {old.version}")
            elif old.sha256 != new.sha256:
                problems.append(f"{kind} {key[0]} {new.version}: sha256 {new.sha256}, the lock says {old.sha256}")
    return problems


def node_sources(uri: str) -> str:
    """The deb822 APT source a node uses for the bundle (``uri`` like ``http://10.54.0.1:8080/apt``)."""
    return f"Types: deb\nURIs: {uri}\nSuites: {REPO_SUITE}\nComponents: {COMPONENT}\nSigned-By: {NODE_KEYRING}\n"


def signed_release_hashes(text: str) -> dict[str, str]:
    """path → SHA256 from the ``SHA256:`` field of a Release text."""
    hashes: dict[str, str] = {}
    inside = False
    for line in text.splitlines():
        if not line[:1].isspace():
            inside = line.startswith("SHA256:")
        elif inside and len(line.split()) == 3:
            digest, _size, path = line.split()
            hashes[path] = digest
    return hashes
