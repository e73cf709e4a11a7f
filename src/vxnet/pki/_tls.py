"""TLS 1.3 with client certificates, from the cluster CA's files: the contexts both ends use.

Both contexts speak TLS 1.3 only and require the other end's certificate, verified against the
cluster CA (expiry included). A client also checks that the server's certificate names the
address it dialled (an IP address or DNS name in its subject alternative names). What a verified
peer may do is decided by its role (:func:`peer_role`), by whoever serves it.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography import x509

from vxnet.pki._ca import PkiError, role_of

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["Tls", "TlsFiles", "peer_role", "tls_of"]


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The CA certificate, and this process's own certificate and key (PEM files)."""

    ca: Path
    cert: Path
    key: Path


class Tls:
    """The server and client contexts of a process holding ``files``, and its own role.

    Raises:
        PkiError: A file cannot be read, the key does not match the certificate, or the
            certificate carries no vxnet role.
    """

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        try:
            own = x509.load_pem_x509_certificate(files.cert.read_bytes())
        except (OSError, ValueError) as exc:
            raise PkiError(f"{files.cert}: not a readable certificate ({exc})") from None
        role = role_of(own)
        if role is None:
            raise PkiError(f"{files.cert}: carries no vxnet role (issue it with `vxnet pki`)")
        self.role: str = role
        self.server = self._context(ssl.PROTOCOL_TLS_SERVER)
        self.client = self._context(ssl.PROTOCOL_TLS_CLIENT)
        # A server that lets clients without a certificate in (one from another CA, or expired,
        # still fails the handshake); what they may do is then up to the server.
        self.server_optional = self._context(ssl.PROTOCOL_TLS_SERVER)
        self.server_optional.verify_mode = ssl.CERT_OPTIONAL

    def _context(self, protocol: int) -> ssl.SSLContext:
        context = ssl.SSLContext(protocol)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.verify_mode = ssl.CERT_REQUIRED
        try:
            context.load_verify_locations(cafile=self.files.ca)
        except (OSError, ssl.SSLError) as exc:
            raise PkiError(f"{self.files.ca}: not a readable CA certificate ({exc})") from None
        try:
            context.load_cert_chain(self.files.cert, self.files.key)
        except (OSError, ssl.SSLError) as exc:
            raise PkiError(
                f"{self.files.cert}, {self.files.key}: not a certificate and its key ({exc})"
            ) from None
        return context


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


def peer_role(der: bytes | None) -> str | None:
    """The role of the peer certificate ``der`` (as ``getpeercert(binary_form=True)`` gives it,
    after a verified handshake), or ``None``."""
    if der is None:
        return None
    return role_of(x509.load_der_x509_certificate(der))
