"""A DNS flood from one process, for tests and benchmarks: ``python -m vxnet.testing.dnsflood
PORT SECONDS [SOCKETS]`` sends to 127.0.0.1:PORT, as fast as it can from ``SOCKETS`` UDP
sockets (4), a mix of what a misbehaving container or an attacker sends: valid questions for a
task's name (5 in 8), unique names that do not exist (2 in 8) and malformed packets (random
bytes, a short header, a 4 KB chain of compression pointers: 1 in 8). It reads no replies,
stops after ``SECONDS`` or 50 million packets, and prints how many it sent.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import time

__all__ = ["flood", "main"]

ZONE = "dcos.thisdcos.directory"
MAX_PACKETS = 50_000_000


def _query(name: str, qid: int) -> bytes:
    labels = b"".join(bytes([len(p)]) + p for p in name.encode().split(b"."))
    return struct.pack("!6H", qid, 0x0100, 1, 0, 0, 0) + labels + b"\x00\x00\x01\x00\x01"


def flood(port: int, seconds: float, sockets: int = 4) -> int:
    """Flood 127.0.0.1:``port`` for ``seconds``; the packets sent."""
    valid = [_query(f"web.marathon.containerip.{ZONE}", i) for i in range(64)]
    chain = struct.pack("!6H", 7, 0, 1, 0, 0, 0) + b"".join(
        struct.pack("!H", 0xC000 | min(o + 2, 0x3FFF)) for o in range(12, 4000, 2)
    )
    bad = [os.urandom(40), b"\x00" * 11, chain]
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(sockets)]
    try:
        for s in socks:
            s.setblocking(False)
        end, sent, i = time.monotonic() + seconds, 0, 0
        while time.monotonic() < end and sent < MAX_PACKETS:
            for _ in range(256):
                i += 1
                kind = i % 8
                if kind < 5:
                    data = valid[i % 64]
                elif kind < 7:
                    data = _query(f"n{i}.x.containerip.{ZONE}", i & 0xFFFF)
                else:
                    data = bad[i % 3]
                try:
                    socks[i % sockets].sendto(data, ("127.0.0.1", port))
                    sent += 1
                except BlockingIOError:
                    pass
        return sent
    finally:
        for s in socks:
            s.close()


def main(argv: list[str]) -> int:
    port, seconds = int(argv[0]), float(argv[1])
    sockets = int(argv[2]) if len(argv) > 2 else 4
    print(flood(port, seconds, sockets))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
