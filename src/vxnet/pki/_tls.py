"""TLS 1.3 with client certificates, from the cluster CA's files: the contexts both ends use.

Both contexts speak TLS 1.3 only and require the other end's certificate, verified against the
cluster CA (expiry included). A client also checks that the server's certificate names the
address it dialled (an IP address or DNS name in its subject alternative names). What a verified
peer may do is decided by its role (:func:`peer_role`), by whoever serves it.

Certificates rotate in place: :meth:`Tls.reload` reads the files again and, only when every
check passes, puts the new contexts in force. Whoever holds a :class:`Tls` reads its contexts at
each new connection (a :data:`TlsContext` callable where a plain context is expected), so new
connections take the new certificate while established ones, the log's quorum among them, are
kept as they are.
"""

from __future__ import annotations

import datetime
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from vxnet.pki._ca import PkiError, role_of

if TYPE_CHECKING:
    import logging
    from pathlib import Path

__all__ = [
    "Tls",
    "TlsContext",
    "TlsFiles",
    "context_now",
    "peer_names",
    "peer_role",
    "reload_logged",
    "tls_of",
]

TlsContext: TypeAlias = ssl.SSLContext | Callable[[], ssl.SSLContext]
"""A TLS context, or a callable answering the one in force (asked at every new connection, so
that a reloaded :class:`Tls` takes effect without restarting whoever serves or dials)."""


def context_now(tls: TlsContext) -> ssl.SSLContext:
    """The context in force of ``tls``, for the connection being made now."""
    return tls if isinstance(tls, ssl.SSLContext) else tls()


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The CA certificate, and this process's own certificate and key (PEM files)."""

    ca: Path
    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class _Loaded:
    """What one reading of the files gave: swapped in as a whole."""

    certificate: x509.Certificate
    role: str
    ca_pem: bytes
    server: ssl.SSLContext
    client: ssl.SSLContext
    server_optional: ssl.SSLContext


class Tls:
    """The server and client contexts of a process holding ``files``, and its own role.

    :attr:`server`, :attr:`client` and :attr:`server_optional` are the contexts in force: read
    them when a connection is made, not once, so that :meth:`reload` reaches new connections.

    Raises:
        PkiError: A file cannot be read, the key does not match the certificate, or the
            certificate carries no vxnet role.
    """

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self._loaded = _load(files)

    @property
    def role(self) -> str:
        return self._loaded.role

    @property
    def certificate(self) -> x509.Certificate:
        """This process's own certificate, as last loaded."""
        return self._loaded.certificate

    @property
    def server(self) -> ssl.SSLContext:
        return self._loaded.server

    @property
    def client(self) -> ssl.SSLContext:
        return self._loaded.client

    @property
    def server_optional(self) -> ssl.SSLContext:
        """A server context that lets clients without a certificate in (one from another CA,
        or expired, still fails the handshake); what they may do is then up to the server."""
        return self._loaded.server_optional

    def reload(self) -> x509.Certificate:
        """Read the files again and put their contexts in force for new connections; the new
        certificate. Established connections keep the certificate they were made with.

        Nothing changes unless the new files pass every check: besides what the constructor
        checks, the certificate must keep this process's role, come from a CA in the CA file,
        and be valid now (a reload never swaps in what peers would refuse).

        Raises:
            PkiError: The new files cannot be used (the message says why); the contexts in
                force stay.
        """
        fresh = _load(self.files)
        if fresh.role != self.role:
            raise PkiError(
                f"{self.files.cert}: a certificate of role {fresh.role}; this process holds a "
                f"{self.role}'s"
            )
        _check_issued_by_ca(fresh, self.files)
        now = datetime.datetime.now(datetime.UTC)
        cert = fresh.certificate
        if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc:
            raise PkiError(
                f"{self.files.cert}: valid from {cert.not_valid_before_utc:%Y-%m-%d %H:%M} to "
                f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC, not now"
            )
        self._loaded = fresh
        return cert


def _load(files: TlsFiles) -> _Loaded:
    before = _contents(files)
    try:
        own = x509.load_pem_x509_certificate(files.cert.read_bytes())
    except (OSError, ValueError) as exc:
        raise PkiError(f"{files.cert}: not a readable certificate ({exc})") from None
    role = role_of(own)
    if role is None:
        raise PkiError(f"{files.cert}: carries no vxnet role (issue it with `vxnet pki`)")
    server_optional = _context(files, ssl.PROTOCOL_TLS_SERVER)
    server_optional.verify_mode = ssl.CERT_OPTIONAL
    loaded = _Loaded(
        own,
        role,
        before[0],
        _context(files, ssl.PROTOCOL_TLS_SERVER),
        _context(files, ssl.PROTOCOL_TLS_CLIENT),
        server_optional,
    )
    # Each context reads the files itself: they must all have read the same ones.
    if _contents(files) != before:
        raise PkiError(f"{files.cert}, {files.key}, {files.ca}: changed while being read")
    return loaded


def _contents(files: TlsFiles) -> tuple[bytes, bytes, bytes]:
    try:
        return files.ca.read_bytes(), files.cert.read_bytes(), files.key.read_bytes()
    except OSError as exc:
        raise PkiError(f"{exc.filename}: cannot be read ({exc.strerror or exc})") from None


def _context(files: TlsFiles, protocol: int) -> ssl.SSLContext:
    # A new context each time: the CA file's certificates are the only ones trusted (loading
    # into a context in use would only ever add to them).
    context = ssl.SSLContext(protocol)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.verify_mode = ssl.CERT_REQUIRED
    try:
        context.load_verify_locations(cafile=files.ca)
    except (OSError, ssl.SSLError) as exc:
        raise PkiError(f"{files.ca}: not a readable CA certificate ({exc})") from None
    try:
        context.load_cert_chain(files.cert, files.key)
    except (OSError, ssl.SSLError) as exc:
        raise PkiError(
            f"{files.cert}, {files.key}: not a certificate and its key ({exc})"
        ) from None
    return context


def _check_issued_by_ca(loaded: _Loaded, files: TlsFiles) -> None:
    """Raise :class:`PkiError` unless one of the CA file's certificates signed the own one."""
    try:
        cas = x509.load_pem_x509_certificates(loaded.ca_pem)
    except ValueError as exc:
        raise PkiError(f"{files.ca}: not a readable CA certificate ({exc})") from None
    for ca in cas:
        try:
            loaded.certificate.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return
    raise PkiError(f"{files.cert}: not issued by the CA in {files.ca}")


def _described(cert: x509.Certificate) -> str:
    """``serial …, expires …``: how the logs name a certificate."""
    return f"serial {cert.serial_number:x}, expires {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"


def reload_logged(tls: Tls | None, log: logging.Logger) -> bool:
    """:meth:`Tls.reload`, said in ``log`` (a daemon's answer to SIGHUP): whether it took.

    A bad file is logged as an error and the certificate in force stays; it never raises.
    """
    if tls is None:
        log.info("no [tls] certificate to reload (plain TCP)")
        return False
    try:
        cert = tls.reload()
    except PkiError as exc:
        log.error(
            "TLS certificate not reloaded, keeping the certificate in force (%s): %s",
            _described(tls.certificate),
            exc,
        )
        return False
    log.info("reloaded TLS certificate %s (%s)", tls.files.cert, _described(cert))
    return True


def tls_of(ca: str | None, cert: str | None, key: str | None, role: str) -> Tls | None:
    """The :class:`Tls` of a process whose certificate must have ``role``, from a config's
    ``[tls]`` file names; ``None`` when they are not given (plain TCP).

    Raises:
        PkiError: A file cannot be used (the message names it), or the certificate is not of
            ``role``.
    """
    from pathlib import Path

    if ca is None or cert is None or key is None:
        return None
    tls = Tls(TlsFiles(Path(ca), Path(cert), Path(key)))
    if tls.role != role:
        raise PkiError(f"{cert}: a certificate of role {tls.role}; this process needs a {role}'s")
    return tls


def peer_names(der: bytes | None) -> set[str]:
    """The addresses and DNS names (lower case) the peer certificate ``der`` names in its
    subject alternative names: where its holder may claim to be."""
    if der is None:
        return set()
    cert = x509.load_der_x509_certificate(der)
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    ips = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    return ips | {name.lower() for name in sans.get_values_for_type(x509.DNSName)}


def peer_role(der: bytes | None) -> str | None:
    """The role of the peer certificate ``der`` (as ``getpeercert(binary_form=True)`` gives it,
    after a verified handshake), or ``None``."""
    if der is None:
        return None
    return role_of(x509.load_der_x509_certificate(der))
