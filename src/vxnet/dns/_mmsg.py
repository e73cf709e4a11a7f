"""Batched UDP: ``recvmmsg`` and ``sendmmsg`` (Linux) through ctypes, for the DNS hot path.

Two system calls per query (``recvfrom``, ``sendto``) are most of what a Python DNS server
spends; Knot DNS batches them. :class:`Batch` does the same: one ``recvmmsg`` fills up to
``size`` preallocated buffers with queries and their senders' addresses, and one ``sendmmsg``
sends the replies queued meanwhile, each to the address its query came from. Everything lives in
memory allocated once; per packet only a few bytes are copied and two header fields written
(with ``struct`` on a memoryview, much cheaper than ctypes attribute access).

Reply ``k`` of a batch goes to the sender of query ``k`` in the common case (every query
answered), so the outgoing headers are filled once with those addresses and only the reply's
length is written per packet; a batch in which a query went unanswered rewrites the address
pointers it shifted and restores them after sending.

With ``timestamps`` the kernel stamps every query when it arrives (``SO_TIMESTAMPNS``, a
control message per datagram): :meth:`Batch.waited` gives how long a batch's queries had
waited, the receive queue included, when their replies went out.

Layout (x86-64 and other LP64 Linux ABIs): ``struct mmsghdr`` is a ``struct msghdr`` (56 bytes:
name pointer, name length, iovec pointer, iovec count, control pointer, control length, flags)
followed by ``msg_len``, 64 bytes in all; ``struct iovec`` is a pointer and a length, 16 bytes;
a timestamp's control message is a ``struct cmsghdr`` (length, level, type: 16 bytes) and a
``struct timespec`` (16 bytes). :func:`available` says whether this machine qualifies (else the
server reads one packet at a time).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import socket
import struct
import sys
from typing import TYPE_CHECKING

from vxnet.dns._rrl import DROP, truncated

if TYPE_CHECKING:
    from collections.abc import Callable

    from vxnet.dns._rrl import RateLimiter

__all__ = ["Batch", "available"]

MSG_DONTWAIT = 0x40
MSG_WAITFORONE = 0x10000
SO_TIMESTAMPNS = 35  # also the control message's type (SCM_TIMESTAMPNS)
CONTROL = 32  # CMSG_SPACE(sizeof(struct timespec))
MMSGHDR = 64
MSGHDR_CONTROLLEN = 40
MSGHDR_IOV = 16
MSG_LEN = 56
IOVEC = 16
NAME_SIZE = 128  # a sockaddr_storage
BUFFER = 4096  # queries longer than this are not DNS queries anyone sends

_U32 = struct.Struct("=I")
_U64 = struct.Struct("=Q")
_STAMP = struct.Struct("=QiiqQ")  # cmsg_len, cmsg_level, cmsg_type, tv_sec, tv_nsec


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux") or struct.calcsize("P") != 8:
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.recvmmsg.argtypes = [
            ctypes.c_int,
            ctypes.c_void_p,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_void_p,
        ]
        libc.sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()


def available() -> bool:
    """Whether batched UDP works here (Linux, 64-bit, a libc with recvmmsg and sendmmsg)."""
    return _LIBC is not None


class Batch:
    """Receive and send up to ``size`` datagrams per system call on ``sock``."""

    def __init__(self, sock: socket.socket, size: int = 64, *, timestamps: bool = False) -> None:
        if _LIBC is None:
            raise OSError(errno.ENOSYS, "recvmmsg/sendmmsg are not available here")
        self.libc = _LIBC
        self.fd = sock.fileno()
        self.size = size
        self.data = ctypes.create_string_buffer(size * BUFFER)
        self.names = ctypes.create_string_buffer(size * NAME_SIZE)
        self.out = ctypes.create_string_buffer(size * BUFFER)
        self.recv_iov = ctypes.create_string_buffer(size * IOVEC)
        self.send_iov = ctypes.create_string_buffer(size * IOVEC)
        self.recv_msgs = ctypes.create_string_buffer(size * MMSGHDR)
        self.send_msgs = ctypes.create_string_buffer(size * MMSGHDR)
        self.control = ctypes.create_string_buffer(size * CONTROL if timestamps else 1)
        if timestamps:
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        data, names, out = (ctypes.addressof(b) for b in (self.data, self.names, self.out))
        recv_iov, send_iov = ctypes.addressof(self.recv_iov), ctypes.addressof(self.send_iov)
        control = ctypes.addressof(self.control)
        # every address of the socket's family has one length (sockaddr_in, sockaddr_in6)
        name_length = 28 if sock.family == socket.AF_INET6 else 16
        for i in range(size):
            struct.pack_into("=QQ", self.recv_iov, i * IOVEC, data + i * BUFFER, BUFFER)
            struct.pack_into("=QQ", self.send_iov, i * IOVEC, out + i * BUFFER, 0)
            for msgs, iov, name_size, ctrl in (
                (self.recv_msgs, recv_iov, NAME_SIZE, timestamps),
                (self.send_msgs, send_iov, name_length, False),
            ):
                struct.pack_into(
                    "=QI4xQQQQi4xI4x",
                    msgs,
                    i * MMSGHDR,
                    names + i * NAME_SIZE,
                    name_size,
                    iov + i * IOVEC,
                    1,
                    control + i * CONTROL if ctrl else 0,
                    CONTROL if ctrl else 0,
                    0,
                    0,
                )
        self.pristine = bytes(self.recv_msgs)  # name lengths reset before every receive
        self.send_pristine = bytes(self.send_msgs)  # reply k to the sender of query k
        self.shifted = False  # a reply went out of its query's slot: restore after sending
        self.timestamps = timestamps
        self.data_view = memoryview(self.data).cast("B")
        self.names_view = memoryview(self.names).cast("B")
        self.out_view = memoryview(self.out).cast("B")
        self.recv_view = memoryview(self.recv_msgs).cast("B")
        self.send_view = memoryview(self.send_msgs).cast("B")
        self.send_iov_view = memoryview(self.send_iov).cast("B")
        self.control_view = memoryview(self.control).cast("B")
        self.names_address = names
        self.queued = 0

    def receive(self, *, wait: bool = False) -> int:
        """Receive what is waiting: how many datagrams, 0 when none (or, with ``wait``, after
        blocking until at least one came: 0 then means interrupted).

        Raises:
            OSError: The socket failed.
        """
        self.recv_view[:] = self.pristine
        flags = MSG_WAITFORONE if wait else MSG_DONTWAIT
        n = self.libc.recvmmsg(self.fd, self.recv_msgs, self.size, flags, None)
        if n < 0:
            code = ctypes.get_errno()
            if code in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                return 0
            if code in (errno.ECONNREFUSED, errno.EHOSTUNREACH):
                return 0  # an ICMP error for an earlier reply; what follows is read next time
            raise OSError(code, os.strerror(code))
        return int(n)

    def query(self, i: int) -> bytes:
        """Datagram ``i`` of the last receive."""
        length = _U32.unpack_from(self.recv_view, i * MMSGHDR + MSG_LEN)[0]
        start = i * BUFFER
        return bytes(self.data_view[start : start + min(length, BUFFER)])

    def peer(self, i: int) -> tuple[str, int]:
        """The sender of datagram ``i``, as ``socket`` gives addresses (for the slow paths)."""
        start = i * NAME_SIZE
        family = int.from_bytes(self.names_view[start : start + 2], sys.byteorder)
        port = int.from_bytes(self.names_view[start + 2 : start + 4], "big")
        if family == socket.AF_INET6:
            address = socket.inet_ntop(
                socket.AF_INET6, bytes(self.names_view[start + 8 : start + 24])
            )
        else:
            address = socket.inet_ntop(
                socket.AF_INET, bytes(self.names_view[start + 4 : start + 8])
            )
        return address, port

    def reply(self, i: int, data: bytes) -> None:
        """Queue ``data`` for the sender of datagram ``i`` (sent by :meth:`flush`)."""
        size = len(data)
        if size > BUFFER:
            return  # never for a UDP reply (they are cut to the client's limit)
        slot = self.queued
        start = slot * BUFFER
        self.out_view[start : start + size] = data
        _U64.pack_into(self.send_iov_view, slot * IOVEC + 8, size)
        if slot != i:
            _U64.pack_into(self.send_view, slot * MMSGHDR, self.names_address + i * NAME_SIZE)
            self.shifted = True
        self.queued = slot + 1

    def prefix(self, i: int) -> bytes:
        """The rate-limiting key of datagram ``i``'s sender (:func:`._rrl.client_prefix`)."""
        start = i * NAME_SIZE
        if self.names_view[start] == socket.AF_INET:  # the family's low byte (little-endian)
            return bytes(self.names_view[start + 4 : start + 7])
        return bytes(self.names_view[start + 8 : start + 15])

    def answer_all(
        self,
        received: int,
        fast: Callable[[bytes], bytes | None],
        limiter: RateLimiter | None = None,
    ) -> list[int]:
        """Answer datagrams ``0 .. received - 1`` with ``fast`` where it knows the reply (queued
        as :meth:`reply` would, unless ``limiter`` says to drop it or send it truncated); the
        indexes it did not know, for the caller's slow path.

        The per-packet work of :meth:`query` and :meth:`reply`, inlined: this loop is where a
        busy server spends its time.
        """
        recv_view, data_view = self.recv_view, self.data_view
        out_view, iov_view = self.out_view, self.send_iov_view
        unpack_u32, pack_u64 = _U32.unpack_from, _U64.pack_into
        slot = self.queued
        missed: list[int] = []
        verdict = limiter.verdict if limiter is not None else None
        names_view = self.names_view
        for i in range(received):
            header = i * MMSGHDR
            start = i * BUFFER
            length = unpack_u32(recv_view, header + MSG_LEN)[0]
            reply = fast(bytes(data_view[start : start + length]))
            if reply is None:
                missed.append(i)
                continue
            if verdict is not None:
                at = i * NAME_SIZE
                if names_view[at] == 2:  # AF_INET: the /24
                    judged = verdict(bytes(names_view[at + 4 : at + 7]))
                else:  # the /56
                    judged = verdict(bytes(names_view[at + 8 : at + 15]))
                if judged:
                    if judged == DROP:
                        continue
                    reply = truncated(reply)
            size = len(reply)
            at = slot * BUFFER
            out_view[at : at + size] = reply
            pack_u64(iov_view, slot * IOVEC + 8, size)
            if slot != i:  # an earlier query went unanswered: point this reply at its sender
                pack_u64(self.send_view, slot * MMSGHDR, self.names_address + i * NAME_SIZE)
                self.shifted = True
            slot += 1
        self.queued = slot
        return missed

    def flush(self) -> int:
        """Send the queued replies; how many the kernel took (the rest are dropped, as UDP may)."""
        sent = total = self.queued
        offset = 0
        while offset < total:
            n = self.libc.sendmmsg(
                self.fd, ctypes.addressof(self.send_msgs) + offset * MMSGHDR, total - offset, 0
            )
            if n <= 0:
                sent = offset
                break
            offset += n
        self.queued = 0
        if self.shifted:
            self.send_view[:] = self.send_pristine
            self.shifted = False
        return sent

    def waited(self, received: int, now_ns: int) -> float:
        """Seconds the first ``received`` queries of the last receive had waited at ``now_ns``
        (``time.time_ns()``), on average, from their arrival in the kernel; 0.0 without
        timestamps (or when the kernel gave none)."""
        if not self.timestamps or not received:
            return 0.0
        stamps = 0
        total = 0
        for i in (0, received - 1) if received > 1 else (0,):
            if _U64.unpack_from(self.recv_view, i * MMSGHDR + MSGHDR_CONTROLLEN)[0] < CONTROL:
                continue  # no timestamp came with this one
            _, level, kind, sec, nsec = _STAMP.unpack_from(self.control_view, i * CONTROL)
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                total += now_ns - (sec * 1_000_000_000 + nsec)
                stamps += 1
        return max(total / stamps / 1e9, 0.0) if stamps else 0.0
