"""TLS on a trio TCP stream, done by OpenSSL on the socket itself: :func:`tls_over`.

trio's own ``SSLStream`` runs TLS through memory buffers and a state machine in Python, which
costs tens of microseconds per record: on the log and the API that halved the appends a master
could coordinate. Here the socket is handed to :mod:`ssl` in non-blocking mode, each read and
write is one call into OpenSSL, and the task waits on the socket only when OpenSSL says it must
(``SSLWantReadError``/``SSLWantWriteError``), so records already decrypted inside OpenSSL are
never waited for. TLS has no half-close: :meth:`TlsStream.aclose` sends ``close_notify`` and
closes; a peer's end (``close_notify`` or a plain TCP close) reads as ``b""``.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from typing import TYPE_CHECKING, TypeVar

import trio

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["TlsStream", "tls_over"]

T = TypeVar("T")
READ_SIZE = 65536


class TlsStream(trio.abc.Stream):
    """A TLS connection whose handshake is done (from :func:`tls_over`)."""

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self._sock = sock
        self._sending = False
        self._receiving = False
        self._closed = False

    def getpeercert(self, binary_form: bool = True) -> bytes | None:
        """The peer's certificate, DER whatever ``binary_form`` says (``None``: it sent none)."""
        return self._sock.getpeercert(binary_form=True)

    @property
    def socket(self) -> ssl.SSLSocket:
        return self._sock

    async def _call(self, op: Callable[..., T], *args: object) -> T:
        """``op(*args)`` on the socket, waiting for it as OpenSSL asks until it completes."""
        if self._closed:
            raise trio.ClosedResourceError("the TLS stream is closed")
        while True:
            try:
                result = op(*args)
            except ssl.SSLWantReadError:
                await trio.lowlevel.wait_readable(self._sock)
            except ssl.SSLWantWriteError:
                await trio.lowlevel.wait_writable(self._sock)
            except (ssl.SSLError, OSError) as exc:
                if self._closed:
                    raise trio.ClosedResourceError("the TLS stream is closed") from None
                raise trio.BrokenResourceError(f"TLS connection broken: {exc}") from exc
            else:
                return result

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this TLS stream")
        self._sending = True
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            view = memoryview(data)
            while view:
                sent = await self._call(self._sock.send, view)
                view = view[sent:]
            await trio.lowlevel.cancel_shielded_checkpoint()
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.wait_writable(self._sock)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this TLS stream")
        self._receiving = True
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            size = max_bytes or READ_SIZE
            try:
                data = await self._call(self._sock.recv, size)
            except trio.BrokenResourceError as exc:
                if isinstance(exc.__cause__, ssl.SSLZeroReturnError | ssl.SSLEOFError):
                    data = b""  # the peer said close_notify, or closed without it
                else:
                    raise
            await trio.lowlevel.cancel_shielded_checkpoint()
            return data
        finally:
            self._receiving = False

    async def aclose(self) -> None:
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        with contextlib.suppress(ssl.SSLError, OSError, ValueError):
            self._sock.unwrap()  # our close_notify; theirs is not waited for
        trio.lowlevel.notify_closing(self._sock)
        self._sock.close()
        await trio.lowlevel.checkpoint()


async def tls_over(
    tcp: trio.SocketStream,
    context: ssl.SSLContext,
    *,
    server_side: bool,
    server_hostname: str | None = None,
) -> TlsStream:
    """TLS on ``tcp`` (which is taken over: do not use it afterwards), the handshake done.

    Raises:
        trio.BrokenResourceError: The handshake failed (its cause says why: a certificate that
            does not verify, a peer that speaks no TLS, a reset).
    """
    raw = socket.socket(fileno=tcp.socket.detach())
    raw.setblocking(False)
    try:
        sock = context.wrap_socket(
            raw,
            server_side=server_side,
            server_hostname=server_hostname,
            do_handshake_on_connect=False,
            suppress_ragged_eofs=True,
        )
    except (ssl.SSLError, OSError, ValueError) as exc:
        raw.close()
        raise trio.BrokenResourceError(f"TLS set-up failed: {exc}") from exc
    stream = TlsStream(sock)
    try:
        await stream._call(sock.do_handshake)
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return stream
