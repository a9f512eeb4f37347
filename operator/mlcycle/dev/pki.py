"""Certificates for a loopback-only cluster: one CA, a serving cert, client certs, SA keys."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

# Long enough that a stack left up for weeks keeps working; these keys never leave loopback.
_VALIDITY = datetime.timedelta(days=365)
_APISERVER_DNS_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class ClusterPki:
    ca: KeyPair
    apiserver: KeyPair
    admin: KeyPair
    service_account_key: Path
    service_account_pub: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _issue(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    is_ca: bool = False,
    server_names: tuple[str, ...] = (),
    server_ips: tuple[str, ...] = (),
    client: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if is_ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    usages = []
    if server_names or server_ips:
        usages.append(x509.oid.ExtendedKeyUsageOID.SERVER_AUTH)
        alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in server_names]
        alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in server_ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    if client:
        usages.append(x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH)
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write_pair(
    directory: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> KeyPair:
    pair = KeyPair(cert=directory / f"{stem}.crt", key=directory / f"{stem}.key")
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(pair.key, key)
    return pair


def pki_paths(directory: Path) -> ClusterPki:
    return ClusterPki(
        ca=KeyPair(directory / "ca.crt", directory / "ca.key"),
        apiserver=KeyPair(directory / "apiserver.crt", directory / "apiserver.key"),
        admin=KeyPair(directory / "admin.crt", directory / "admin.key"),
        service_account_key=directory / "sa.key",
        service_account_pub=directory / "sa.pub",
    )


def ensure_cluster_pki(directory: Path) -> ClusterPki:
    """Create the cluster's keys once; a restarted stack reuses them so kubeconfigs stay valid."""
    paths = pki_paths(directory)
    if paths.service_account_pub.exists():
        return paths
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("mlcycle-local-ca")
    _write_pair(directory, "ca", _issue(ca_name, ca_key, ca_name, ca_key, is_ca=True), ca_key)

    serving_key = ec.generate_private_key(ec.SECP256R1())
    serving = _issue(
        _name("kube-apiserver"),
        serving_key,
        ca_name,
        ca_key,
        server_names=_APISERVER_DNS_NAMES,
        server_ips=("127.0.0.1", "10.96.0.1"),
    )
    _write_pair(directory, "apiserver", serving, serving_key)

    # Every local component (controller-manager, scheduler, node agent, tests) acts as
    # cluster admin: there is one trusted user on this machine, and RBAC is still on
    # for the service accounts that workloads and the Helm chart use.
    admin_key = ec.generate_private_key(ec.SECP256R1())
    admin = _issue(
        _name("mlcycle-admin", "system:masters"), admin_key, ca_name, ca_key, client=True
    )
    _write_pair(directory, "admin", admin, admin_key)

    sa_key = ec.generate_private_key(ec.SECP256R1())
    _write_key(paths.service_account_key, sa_key)
    paths.service_account_pub.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return paths
