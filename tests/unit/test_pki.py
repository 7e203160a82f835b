"""The region CA, host certificates and the deploy SSH key, checked with openssl and ssh-keygen."""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from ekc.crypto.pki import (
    KeyPair,
    ca_problem,
    cert_matches,
    cert_problem,
    issue_host_cert,
    key_matches_cert,
    make_ca,
    make_ssh_keypair,
    ssh_key_problem,
)

CA_NAME = "ЕКЦ Тверской области CA"
ADDRESSES = ["10.20.0.5", "fd00:20::5"]


@pytest.fixture(scope="module")
def ca() -> KeyPair:
    return make_ca(CA_NAME)


@pytest.fixture(scope="module")
def host(ca: KeyPair) -> KeyPair:
    return issue_host_cert(ca, "crm1", "crm1.ekc.tver.local", ADDRESSES)


def _host_problem(cert_pem: str, ca_cert_pem: str, addresses: list[str] = ADDRESSES) -> str | None:
    """Why ``cert_pem`` cannot be kept for host crm1 under the CA ``ca_cert_pem``."""
    return cert_problem(
        cert_pem, hostname="crm1", fqdn="crm1.ekc.tver.local", addresses=addresses, ca_cert_pem=ca_cert_pem
    )


def _cert(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode("ascii"))


def _openssl_verify(tmp_path: Path, ca: KeyPair, host: KeyPair) -> subprocess.CompletedProcess[str]:
    (tmp_path / "ca.pem").write_text(ca.cert_pem)
    (tmp_path / "host.pem").write_text(host.cert_pem)
    command = ["openssl", "verify", "-x509_strict", "-purpose", "sslserver", "-CAfile", "ca.pem", "host.pem"]
    return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, check=False)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_host_cert_verifies_against_its_ca_with_openssl(tmp_path: Path, ca: KeyPair, host: KeyPair) -> None:
    result = _openssl_verify(tmp_path, ca, host)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "host.pem: OK"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_host_cert_does_not_verify_against_another_ca(tmp_path: Path, host: KeyPair) -> None:
    assert _openssl_verify(tmp_path, make_ca("other"), host).returncode != 0


def test_host_cert_has_the_hosts_names_and_addresses(host: KeyPair) -> None:
    san = _cert(host.cert_pem).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["crm1", "crm1.ekc.tver.local"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.20.0.5"),
        ipaddress.ip_address("fd00:20::5"),
    ]


def test_host_cert_is_a_tls_server_and_client_end_entity(ca: KeyPair, host: KeyPair) -> None:
    extensions = _cert(host.cert_pem).extensions
    assert extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    usages = extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    aki = extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ca_ski = _cert(ca.cert_pem).extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest


def test_ca_is_a_critical_path_length_zero_ca(ca: KeyPair) -> None:
    extensions = _cert(ca.cert_pem).extensions
    constraints = extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    assert extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest


def test_ca_common_name_is_cyrillic_utf8string(ca: KeyPair) -> None:
    cert = _cert(ca.cert_pem)
    name = CA_NAME.encode("utf-8")
    assert cert.subject.rfc4514_string() == f"CN={CA_NAME}"
    # ASN.1 UTF8String: tag 0x0c, then the length, then the UTF-8 bytes.
    assert b"\x0c" + bytes([len(name)]) + name in cert.tbs_certificate_bytes


def test_private_keys_are_unencrypted_pkcs8_pem(ca: KeyPair, host: KeyPair) -> None:
    for pair in (ca, host):
        assert pair.key_pem.startswith("-----BEGIN PRIVATE KEY-----\n")
        assert key_matches_cert(pair.cert_pem, pair.key_pem)


def test_fresh_host_cert_matches_its_requirement(ca: KeyPair, host: KeyPair) -> None:
    assert cert_matches(
        host.cert_pem,
        hostname="crm1",
        fqdn="crm1.ekc.tver.local",
        addresses=ADDRESSES,
        ca_cert_pem=ca.cert_pem,
    )


def test_host_cert_with_other_addresses_does_not_match(ca: KeyPair, host: KeyPair) -> None:
    problem = _host_problem(host.cert_pem, ca.cert_pem, addresses=["10.20.0.6"])
    assert problem == "its names or addresses (subjectAltName) differ from the host's"


def test_host_cert_from_another_ca_does_not_match(host: KeyPair) -> None:
    other = make_ca("other")
    assert _host_problem(host.cert_pem, other.cert_pem) == "it was not issued by the region CA"


def test_host_cert_expiring_within_30_days_does_not_match(ca: KeyPair) -> None:
    short = issue_host_cert(ca, "crm1", "crm1.ekc.tver.local", ADDRESSES, days=10)
    assert _host_problem(short.cert_pem, ca.cert_pem) == "it expires within 30 days"


def test_host_cert_never_outlives_its_ca() -> None:
    young_ca = make_ca("short-lived", days=100)
    cert = _cert(issue_host_cert(young_ca, "a", "a.local", []).cert_pem)
    ca_end = _cert(young_ca.cert_pem).not_valid_after_utc
    assert cert.not_valid_after_utc <= ca_end
    assert cert.not_valid_after_utc > ca_end - timedelta(days=1)


def test_issuing_with_a_ca_key_that_is_not_the_cas_is_refused(ca: KeyPair) -> None:
    mixed = KeyPair(cert_pem=ca.cert_pem, key_pem=make_ca("other").key_pem)
    with pytest.raises(ValueError, match="does not belong to the CA certificate"):
        issue_host_cert(mixed, "crm1", "crm1.local", [])


def test_ca_problem_accepts_a_fresh_ca_and_names_what_is_wrong_otherwise(ca: KeyPair, host: KeyPair) -> None:
    assert ca_problem(ca) is None
    assert ca_problem(host) == "its certificate is not a CA certificate"
    assert ca_problem(KeyPair(ca.cert_pem, host.key_pem)) == (
        "its private key is missing, unreadable, or not the certificate's key"
    )
    assert ca_problem(KeyPair("garbage", ca.key_pem)) == "its certificate is not a valid PEM certificate"


def test_ssh_keypair_is_ed25519_in_openssh_formats() -> None:
    pair = make_ssh_keypair("ekc-deploy@tver")
    assert pair.private_openssh.startswith("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    assert pair.public_openssh.startswith("ssh-ed25519 AAAA")
    assert pair.public_openssh.endswith(" ekc-deploy@tver")
    assert ssh_key_problem(pair) is None


def test_ssh_key_problem_detects_a_public_key_from_another_pair() -> None:
    one, two = make_ssh_keypair("one"), make_ssh_keypair("two")
    mixed = type(one)(private_openssh=one.private_openssh, public_openssh=two.public_openssh)
    assert ssh_key_problem(mixed) == "its public key does not belong to its private key"


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen (openssh-client) is not installed")
def test_ssh_keygen_accepts_both_halves_of_the_key(tmp_path: Path) -> None:
    pair = make_ssh_keypair("ekc-deploy@tver")
    private, public = tmp_path / "id_ed25519", tmp_path / "id_ed25519.pub"
    private.write_text(pair.private_openssh)
    private.chmod(0o600)
    public.write_text(pair.public_openssh + "\n")
    listed = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(public)], capture_output=True, text=True, check=False
    )
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.rstrip().endswith("ekc-deploy@tver (ED25519)")
    derived = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(private)], capture_output=True, text=True, check=False
    )
    assert derived.returncode == 0, derived.stderr
    assert derived.stdout.split()[:2] == pair.public_openssh.split()[:2]
