"""The kernel's receive drops on the DNS sockets, as the metrics report them: a socket with a
tiny receive buffer that nobody reads overflows, and :func:`kernel_drops` finds its count in
``/proc/net/udp``; other sockets' drops are not counted."""

from __future__ import annotations

import os
import socket

from vxnet.dns._server import kernel_drops


def test_kernel_drops_count_the_overflows_of_the_given_sockets_only() -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as full,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender,
    ):
        full.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        full.bind(("127.0.0.1", 0))
        other.bind(("127.0.0.1", 0))
        inode = os.fstat(full.fileno()).st_ino
        assert kernel_drops({inode}) == 0
        for _ in range(500):  # bounded: far more than 1 KB of buffer holds
            sender.sendto(b"x" * 100, full.getsockname())
        drops = kernel_drops({inode})
        assert drops is not None
        assert drops > 0
        assert kernel_drops({os.fstat(other.fileno()).st_ino}) == 0
        assert kernel_drops(set()) == 0
    assert kernel_drops({inode}, proc="/nonexistent") is None
