"""The region's own certificate authority, its host certificates, and the deploy SSH key.

A ministry's closed network has no public CA, so each region gets its own: generated once, kept in the vault,
and used to issue the TLS certificates of the CRM, Prometheus and SIP. Keys are ECDSA P-256 (short, fast, and
accepted by every TLS stack we ship) and are stored as unencrypted PKCS#8 PEM because the vault is their
encryption. The ``*_problem`` functions say in plain words why an existing certificate cannot be kept, so
``secrets init`` keeps what is still good and ``secrets check`` can explain what is not.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

RENEW_BEFORE = timedelta(days=30)
# Backdated so that a host whose clock is a little behind still accepts a certificate issued just now.
BACKDATE = timedelta(hours=1)
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, both PEM (the key unencrypted PKCS#8: the vault encrypts it)."""

    cert_pem: str
    key_pem: str


@dataclass(frozen=True)
class SshKeyPair:
    """An SSH key pair in OpenSSH formats, as ``ssh`` and ``authorized_keys`` want them."""

    private_openssh: str
    public_openssh: str


def _new_key() -> ec.EllipticCurvePrivateKey:
    """A fresh ECDSA P-256 private key."""
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: CertificateIssuerPrivateKeyTypes) -> str:
    """The private key as unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")


def _cert_pem(cert: x509.Certificate) -> str:
    """The certificate as PEM text."""
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _load_issuer_key(key_pem: str) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    """Load a CA's PEM private key: ECDSA (ours) or RSA, the kinds that sign with SHA-256.

    Raises ValueError if it is not such a key.
    """
    try:
        key = serialization.load_pem_private_key(key_pem.encode("ascii"), password=None)
    except (TypeError, UnicodeEncodeError, UnsupportedAlgorithm) as err:
        raise ValueError("the CA's private key cannot be loaded") from err
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError(f"the CA's private key is {type(key).__name__}, not ECDSA or RSA")
    return key


def make_ca(common_name: str, days: int = 3650) -> KeyPair:
    """Create the region's self-signed CA; it may issue end-entity certificates only (path length 0).

    ``common_name`` may be Cyrillic: it is encoded as UTF8String, which every current TLS stack displays.
    """
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert_pem=_cert_pem(cert), key_pem=_key_pem(key))


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    """KeyUsage for a CA (sign certificates and CRLs) or for a TLS end entity (digital signature)."""
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _san(hostname: str, fqdn: str, addresses: list[str], names: Sequence[str] = ()) -> x509.SubjectAlternativeName:
    """SubjectAlternativeName with the host's DNS names (deduplicated, in order), service names such as the
    CRM's, and IP addresses."""
    dns_names = list(dict.fromkeys(name for name in (hostname, fqdn, *names) if name))
    ips = list(dict.fromkeys(ipaddress.ip_address(address) for address in addresses))
    general: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    general += [x509.IPAddress(ip) for ip in ips]
    return x509.SubjectAlternativeName(general)


def issue_host_cert(ca: KeyPair, hostname: str, fqdn: str, addresses: list[str], days: int = 825,
                    names: Sequence[str] = ()) -> KeyPair:
    """Issue a TLS server+client certificate for one host, signed by the region CA.

    The certificate never outlives its CA (an end date past the CA's would fail validation anyway).
    Raises ValueError if the CA's key does not belong to its certificate or an address is not an IP.
    """
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.encode("ascii"))
    ca_key = _load_issuer_key(ca.key_pem)
    if ca_key.public_key() != ca_cert.public_key():
        raise ValueError("the CA's private key does not belong to the CA certificate")
    key = _new_key()
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, fqdn or hostname)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(_san(hostname, fqdn, addresses, names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(_authority_key_id(ca_cert), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return KeyPair(cert_pem=_cert_pem(cert), key_pem=_key_pem(key))


def _authority_key_id(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    """AuthorityKeyIdentifier pointing at the CA's SubjectKeyIdentifier (or its key, if it has none)."""
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key())  # type: ignore[arg-type]
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _sans_of(cert: x509.Certificate) -> tuple[set[str], set[IPAddress]]:
    """The DNS names and IP addresses in a certificate's SubjectAlternativeName (empty if it has none)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set(), set()
    ips = {ip for ip in san.get_values_for_type(x509.IPAddress) if isinstance(ip, IPAddress)}
    return set(san.get_values_for_type(x509.DNSName)), ips


def _expiry_problem(cert: x509.Certificate, what: str) -> str | None:
    """Why ``cert`` is not usable for long enough, or None if it is valid now and past the renewal margin."""
    now = datetime.now(UTC)
    if cert.not_valid_before_utc > now:
        return f"{what} is not valid yet"
    if cert.not_valid_after_utc <= now:
        return f"{what} has expired"
    if cert.not_valid_after_utc <= now + RENEW_BEFORE:
        return f"{what} expires within {RENEW_BEFORE.days} days"
    return None


def cert_problem(
    cert_pem: str, *, hostname: str, fqdn: str, addresses: list[str], ca_cert_pem: str, names: Sequence[str] = ()
) -> str | None:
    """Why a host certificate cannot be kept, in plain words, or None if it can.

    It can be kept when it parses, its SANs are exactly the host's names and addresses, the CA signed it,
    and it does not expire within 30 days. The message never contains key material.
    """
    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode("ascii"))
        ca_cert = x509.load_pem_x509_certificate(ca_cert_pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        return "the certificate or the CA certificate is not a valid PEM certificate"
    want = _san(hostname, fqdn, addresses, names)
    want_dns = set(want.get_values_for_type(x509.DNSName))
    if _sans_of(cert) != (want_dns, set(want.get_values_for_type(x509.IPAddress))):
        return "its names or addresses (subjectAltName) differ from the host's"
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return "it was not issued by the region CA"
    return _expiry_problem(cert, "it")


def cert_matches(cert_pem: str, *, hostname: str, fqdn: str, addresses: list[str], ca_cert_pem: str) -> bool:
    """Whether an existing host certificate can be kept on re-init (see :func:`cert_problem`)."""
    problem = cert_problem(
        cert_pem, hostname=hostname, fqdn=fqdn, addresses=addresses, ca_cert_pem=ca_cert_pem
    )
    return problem is None


def key_matches_cert(cert_pem: str, key_pem: str) -> bool:
    """Whether ``key_pem`` is the private key of the certificate ``cert_pem`` (False if either won't load)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode("ascii"))
        key = serialization.load_pem_private_key(key_pem.encode("ascii"), password=None)
    except (ValueError, TypeError, UnicodeEncodeError, UnsupportedAlgorithm):
        return False
    return bool(key.public_key() == cert.public_key())


def ca_problem(ca: KeyPair) -> str | None:
    """Why a stored CA cannot be kept, in plain words, or None if it can still issue host certificates."""
    try:
        cert = x509.load_pem_x509_certificate(ca.cert_pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        return "its certificate is not a valid PEM certificate"
    if not key_matches_cert(ca.cert_pem, ca.key_pem):
        return "its private key is missing, unreadable, or not the certificate's key"
    try:
        _load_issuer_key(ca.key_pem)
    except ValueError:
        return "its private key is neither ECDSA nor RSA"
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return "its certificate is not a CA certificate"
    if not constraints.ca:
        return "its certificate is not a CA certificate"
    return _expiry_problem(cert, "the CA certificate")


def make_ssh_keypair(comment: str) -> SshKeyPair:
    """A new Ed25519 SSH key pair; ``comment`` ends the public line (e.g. ``ekc-deploy@<region>``)."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode("ascii")
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    public_line = public.decode("ascii") + (f" {comment}" if comment else "")
    return SshKeyPair(private_openssh=private, public_openssh=public_line)


def ssh_key_problem(pair: SshKeyPair) -> str | None:
    """Why a stored SSH key pair cannot be kept, or None if the private key loads and matches the public."""
    try:
        key = serialization.load_ssh_private_key(pair.private_openssh.encode("ascii"), password=None)
    except (ValueError, TypeError, UnicodeEncodeError, UnsupportedAlgorithm):
        return "its private key is not an unencrypted OpenSSH private key"
    try:
        public = serialization.load_ssh_public_key(" ".join(pair.public_openssh.split()[:2]).encode("ascii"))
    except (ValueError, UnicodeEncodeError, UnsupportedAlgorithm):
        return "its public key is not an OpenSSH public key"
    if key.public_key() != public:
        return "its public key does not belong to its private key"
    return None
