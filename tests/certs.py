"""Certificates for TLS tests: a :class:`Tls` from a CA directory, and an expired certificate."""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from vxnet.pki import CA_CERT, CA_KEY, Tls, TlsFiles

if TYPE_CHECKING:
    from pathlib import Path


def tls_of(pki: Path, name: str) -> Tls:
    return Tls(TlsFiles(pki / CA_CERT, pki / f"{name}.pem", pki / f"{name}-key.pem"))


def expired_certificate(pki: Path, role: str = "operator") -> Tls:
    """A certificate of ``role`` from the cluster's own CA whose validity ended yesterday."""
    ca = x509.load_pem_x509_certificate((pki / CA_CERT).read_bytes())
    ca_key = serialization.load_pem_private_key((pki / CA_KEY).read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=30))
        .not_valid_after(now - datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"vxnet://role/{role}")]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    (pki / "old.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (pki / "old-key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return tls_of(pki, "old")
