"""A DNS flood from one process, for tests and benchmarks: ``python -m vxnet.testing.dnsflood
PORT SECONDS [SOCKETS] [--host ADDRESS] [--tcp]`` sends to ADDRESS:PORT (127.0.0.1), as fast as
it can from ``SOCKETS`` UDP sockets (4), a mix of what a misbehaving container or an attacker
sends: valid questions for a task's name (5 in 8), unique names that do not exist (2 in 8) and
malformed packets (random bytes, a short header, a 4 KB chain of compression pointers: 1 in 8).
It reads no replies, stops after ``SECONDS`` or 50 million packets, and prints how many it sent.
With ``--tcp`` a thread beside it sends, over and over on new TCP connections, one 64 KB message
of chained compression pointers each (at most 100,000), and the output's second number is how
many it sent.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import struct
import sys
import threading
import time

__all__ = ["flood", "main"]

ZONE = "dcos.thisdcos.directory"
MAX_PACKETS = 50_000_000
MAX_TCP = 100_000


def _query(name: str, qid: int) -> bytes:
    labels = b"".join(bytes([len(p)]) + p for p in name.encode().split(b"."))
    return struct.pack("!6H", qid, 0x0100, 1, 0, 0, 0) + labels + b"\x00\x00\x01\x00\x01"


def pointer_chain(size: int) -> bytes:
    """A query of about ``size`` bytes whose name is a chain of compression pointers, each to
    the next (a parser that follows them all does ``size / 2`` jumps)."""
    return struct.pack("!6H", 7, 0, 1, 0, 0, 0) + b"".join(
        struct.pack("!H", 0xC000 | min(o + 2, 0x3FFF)) for o in range(12, size, 2)
    )


def tcp_chains(host: str, port: int, seconds: float) -> int:
    """Send 64 KB pointer chains over TCP to ``host``:``port`` for ``seconds``, one per
    connection; how many were sent whole."""
    message = pointer_chain(65_000)
    framed = struct.pack("!H", len(message)) + message
    end, sent = time.monotonic() + seconds, 0
    while time.monotonic() < end and sent < MAX_TCP:
        with contextlib.suppress(OSError), socket.create_connection((host, port), 2) as conn:
            conn.sendall(framed)
            sent += 1
            conn.recv(512)  # FORMERR, or the close
    return sent


def flood(port: int, seconds: float, sockets: int = 4, host: str = "127.0.0.1") -> int:
    """Flood ``host``:``port`` for ``seconds``; the packets sent."""
    valid = [_query(f"web.marathon.containerip.{ZONE}", i) for i in range(64)]
    bad = [os.urandom(40), b"\x00" * 11, pointer_chain(4000)]
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    socks = [socket.socket(family, socket.SOCK_DGRAM) for _ in range(sockets)]
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
                    socks[i % sockets].sendto(data, (host, port))
                    sent += 1
                except BlockingIOError:
                    pass
        return sent
    finally:
        for s in socks:
            s.close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="vxnet.testing.dnsflood")
    parser.add_argument("port", type=int)
    parser.add_argument("seconds", type=float)
    parser.add_argument("sockets", type=int, nargs="?", default=4)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--tcp", action="store_true", help="64 KB pointer chains over TCP too")
    args = parser.parse_args(argv)
    tcp_sent: list[int] = []
    thread = threading.Thread(
        target=lambda: tcp_sent.append(tcp_chains(args.host, args.port, args.seconds)),
        daemon=True,
    )
    if args.tcp:
        thread.start()
    sent = flood(args.port, args.seconds, args.sockets, args.host)
    if args.tcp:
        thread.join(timeout=30)
        print(sent, tcp_sent[0] if tcp_sent else 0)
    else:
        print(sent)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
