"""A cluster CA on disk: create it, issue role certificates from it, describe what a file holds.

Files in the CA directory ``DIR``:

* ``ca.pem``, ``ca-key.pem``: the CA (self-signed, ``CA:TRUE, pathlen:0``, 10 years by default);
* ``gossip.key``: a 32-byte gossip encryption key, base64 as ``serf keygen`` prints it (the
  agents' ``gossip.keys``);
* ``<name>.pem``, ``<name>-key.pem``: each certificate issued (1 year by default).

Every key file is created with mode 0600 (never visible to others, even for an instant) and
nothing is overwritten unless ``force`` is given. Rotation: issue a new certificate under the same
name with ``force`` before the old one expires and reload the process (``SIGHUP``); the CA stays.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

__all__ = [
    "CA_CERT",
    "CA_KEY",
    "GOSSIP_KEY",
    "ROLES",
    "Issued",
    "PkiError",
    "describe",
    "init_ca",
    "issue",
    "role_of",
]

CA_CERT: Final = "ca.pem"
CA_KEY: Final = "ca-key.pem"
GOSSIP_KEY: Final = "gossip.key"
ROLES: Final = ("master", "agent", "operator")
ROLE_URI: Final = "vxnet://role/"
MAX_DAYS: Final = 3650 * 2
_NAME = re.compile(r"[a-z0-9]([a-z0-9.-]{0,62}[a-z0-9])?")
_DNS = re.compile(
    r"(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
)
# Servers (masters, agents' local API) and clients (peers, agents, operators) by role.
_USAGES: Final = {
    "master": [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
    "agent": [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
    "operator": [ExtendedKeyUsageOID.CLIENT_AUTH],
}


class PkiError(Exception):
    """A request that cannot be carried out; the message says why (and names the file)."""


@dataclass(frozen=True, slots=True)
class Issued:
    """The files a certificate was written to."""

    cert: Path
    key: Path


def init_ca(
    directory: Path, *, name: str = "vxnet cluster CA", days: int = 3650, force: bool = False
) -> list[Path]:
    """Create the CA and the gossip key in ``directory`` (made 0700 if missing); the files.

    Raises:
        PkiError: A file exists (without ``force``), or ``days`` is out of range.
    """
    _check_days(days)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    paths = [directory / CA_CERT, directory / CA_KEY, directory / GOSSIP_KEY]
    if not force:
        _refuse_existing(paths)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vxnet"),
        ]
    )
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_secret(paths[1], _key_pem(key), force)
    _write_public(paths[0], cert.public_bytes(serialization.Encoding.PEM), force)
    _write_secret(paths[2], base64.b64encode(secrets.token_bytes(32)) + b"\n", force)
    return paths


def issue(
    directory: Path,
    role: str,
    name: str,
    *,
    ips: Sequence[str] = (),
    dns: Sequence[str] = (),
    days: int = 365,
    force: bool = False,
) -> Issued:
    """Issue a ``role`` certificate for ``name`` from the CA in ``directory``, valid for the
    addresses ``ips`` and the DNS names ``dns`` (and ``name`` itself when it is a DNS name).

    Raises:
        PkiError: An unknown role, a bad name, address or DNS name, no CA in ``directory``, a
            file that exists (without ``force``), or ``days`` beyond the CA's own expiry.
    """
    if role not in ROLES:
        raise PkiError(f"role {role!r}: expected one of {', '.join(ROLES)}")
    if not _NAME.fullmatch(name):
        raise PkiError(
            f"name {name!r}: lower-case letters, digits, '.' and '-', at most 64 characters, "
            "starting and ending with a letter or digit"
        )
    _check_days(days)
    addresses = []
    for text in ips:
        try:
            addresses.append(ipaddress.ip_address(text))
        except ValueError:
            raise PkiError(f"--ip {text!r}: not an IPv4 or IPv6 address") from None
    names = [n.lower().rstrip(".") for n in dns]
    for text, n in zip(dns, names, strict=True):
        if len(n) > 253 or not _DNS.fullmatch(n):
            raise PkiError(f"--dns {text!r}: not a DNS name")
    if name not in names and _DNS.fullmatch(name):
        names.insert(0, name)
    ca_cert, ca_key = _load_ca(directory)
    now = _now()
    until = now + datetime.timedelta(days=days)
    if until > ca_cert.not_valid_after_utc:
        raise PkiError(
            f"{directory / CA_CERT}: the CA expires {ca_cert.not_valid_after_utc:%Y-%m-%d}, "
            f"before the {days} days asked for"
        )
    paths = Issued(directory / f"{name}.pem", directory / f"{name}-key.pem")
    if not force:
        _refuse_existing([paths.cert, paths.key])
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(ROLE_URI + role)]
    sans += [x509.DNSName(n) for n in dict.fromkeys(names)]
    sans += [x509.IPAddress(a) for a in dict.fromkeys(addresses)]
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, name),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vxnet"),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(_USAGES[role]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_secret(paths.key, _key_pem(key), force)
    _write_public(paths.cert, cert.public_bytes(serialization.Encoding.PEM), force)
    return paths


def role_of(cert: x509.Certificate) -> str | None:
    """The vxnet role a certificate carries, or ``None`` (none, several, or an unknown one)."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    roles = [
        uri.removeprefix(ROLE_URI)
        for uri in sans.get_values_for_type(x509.UniformResourceIdentifier)
        if uri.startswith(ROLE_URI)
    ]
    return roles[0] if len(roles) == 1 and roles[0] in ROLES else None


def describe(path: Path) -> list[str]:
    """What ``path`` holds, as lines: a certificate's subject, role, names, validity and
    fingerprint; a key's type and file mode; a gossip key's length.

    Raises:
        PkiError: The file cannot be read or holds none of these.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PkiError(f"{path}: {exc.strerror or exc}") from None
    if b"-----BEGIN CERTIFICATE-----" in data:
        return _describe_cert(x509.load_pem_x509_certificate(data))
    mode = f"mode {path.stat().st_mode & 0o777:04o}"
    if b"PRIVATE KEY-----" in data:
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise PkiError(f"{path}: not a readable private key ({exc})") from None
        kind = f"EC {key.curve.name}" if isinstance(key, ec.EllipticCurvePrivateKey) else "not EC"
        return [f"private key: {kind}, {mode}"]
    try:
        raw = base64.b64decode(data.strip(), validate=True)
    except ValueError:
        raw = b""
    if len(raw) in (16, 24, 32):
        return [f"gossip key: {len(raw)} bytes (AES-{len(raw) * 8}), {mode}"]
    raise PkiError(f"{path}: neither a PEM certificate, a PEM private key nor a gossip key")


def _describe_cert(cert: x509.Certificate) -> list[str]:
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = sans.get_values_for_type(x509.DNSName)
        ips = [str(a) for a in sans.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        dns, ips = [], []
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    after = cert.not_valid_after_utc
    left = (after - _now()).days
    state = f"expired {-left} days ago" if after <= _now() else f"{left} days left"
    return [
        f"subject: {cert.subject.rfc4514_string()}",
        f"issuer: {cert.issuer.rfc4514_string()}",
        f"role: {'CA' if is_ca else (role_of(cert) or 'none')}",
        f"dns: {', '.join(dns) or '-'}",
        f"ip: {', '.join(ips) or '-'}",
        f"valid: {cert.not_valid_before_utc:%Y-%m-%d %H:%M} to {after:%Y-%m-%d %H:%M} UTC "
        f"({state})",
        f"serial: {cert.serial_number:x}",
        f"sha256: {cert.fingerprint(hashes.SHA256()).hex(':')}",
    ]


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes())
        key = serialization.load_pem_private_key((directory / CA_KEY).read_bytes(), None)
    except FileNotFoundError as exc:
        raise PkiError(f"{exc.filename}: no CA here (create one with `vxnet pki init`)") from None
    except (OSError, ValueError, TypeError) as exc:
        raise PkiError(f"{directory}: the CA cannot be read ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{directory / CA_KEY}: not an EC key")
    return cert, key


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """A CA signs certificates (and revocation lists); the others sign their handshakes."""
    unused = ("content_commitment", "key_encipherment", "data_encipherment", "key_agreement")
    return x509.KeyUsage(
        digital_signature=not ca,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
        **dict.fromkeys(unused, False),
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _check_days(days: int) -> None:
    if not 1 <= days <= MAX_DAYS:
        raise PkiError(f"days {days}: expected 1 to {MAX_DAYS}")


def _refuse_existing(paths: Sequence[Path]) -> None:
    existing = [str(p) for p in paths if p.exists()]
    if existing:
        raise PkiError(f"{', '.join(existing)}: exists (--force replaces it)")


def _write_secret(path: Path, data: bytes, force: bool) -> None:
    """Write ``data`` to a new file of mode 0600 (created so, never wider), atomically."""
    _write(path, data, 0o600, force)


def _write_public(path: Path, data: bytes, force: bool) -> None:
    _write(path, data, 0o644, force)


def _write(path: Path, data: bytes, mode: int, force: bool) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # whatever the umask
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    if not force and path.exists():
        tmp.unlink()
        raise PkiError(f"{path}: exists (--force replaces it)")
    tmp.replace(path)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
