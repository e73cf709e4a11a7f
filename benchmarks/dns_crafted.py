"""What a crafted DNS packet costs the zone: CPU per packet for vxnet's query reader and whole
answer path, against dnslib's parser (what read the queries before) on the same bytes.

Packets: a plain question (the fast path), a name that does not exist (the slow path), 4 KB of
random bytes, a 4 KB and a 64 KB chain of compression pointers, and the worst legal query: a
255-byte name of 127 labels with 4 additional records whose owners are chains of 16 pointers.
Each is answered ``--repeat`` times in one process (``time.process_time``); dnslib parses it
``--repeat`` times too (or until it raises).

Figures (JSON lines after ``setup``): per packet, its size, vxnet's microseconds per answer and
dnslib's per parse, and their ratio; then ``targets``: the 64 KB pointer chain under 1 ms.

    .venv/bin/python benchmarks/dns_crafted.py [--repeat 2000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import struct
import sys
import time
from typing import TYPE_CHECKING

from dnslib import DNSRecord

from vxnet import __version__
from vxnet.dns._wire import MAX_POINTERS
from vxnet.dns._zone import ZONE_SUFFIX, Zone
from vxnet.records import TaskRecord

if TYPE_CHECKING:
    from collections.abc import Callable


def name_wire(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00"


def query(name: str) -> bytes:
    return struct.pack("!6H", 1, 0x0100, 1, 0, 0, 0) + name_wire(name) + b"\x00\x01\x00\x01"


def pointer_chain(size: int) -> bytes:
    body = b"".join(struct.pack("!H", 0xC000 | min(o + 2, 0x3FFF)) for o in range(12, size, 2))
    return struct.pack("!6H", 7, 0, 1, 0, 0, 0) + body


def worst_legal() -> bytes:
    """127 one-byte labels (255 bytes), then 4 additional records, each owned by a chain of
    MAX_POINTERS pointers through the previous records' data."""
    labels = ".".join(["a"] * 126 + ["b"])
    question = name_wire(labels) + b"\x00\x01\x00\x01"
    data = bytearray(struct.pack("!6H", 2, 0x0100, 1, 0, 0, 4) + question)
    for _ in range(4):
        chain_at = len(data) + 1 + 10  # after a root owner and the fixed fields
        chain = bytearray(b"\x00")
        for i in range(MAX_POINTERS - 1):
            chain += struct.pack(
                "!H", 0xC000 | (chain_at if i == 0 else chain_at + 1 + 2 * (i - 1))
            )
        data += b"\x00" + struct.pack("!HHIH", 16, 1, 0, len(chain)) + chain
    return bytes(data)


def per_call(function: Callable[[bytes], object], packet: bytes, repeat: int) -> float:
    """CPU microseconds per call of ``function(packet)`` (a call that raises counts too:
    dnslib raises many kinds of exception on crafted input)."""
    start = time.process_time()
    for _ in range(repeat):
        with contextlib.suppress(Exception):
            function(packet)
    return (time.process_time() - start) / repeat * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2000)
    args = parser.parse_args()
    print(
        json.dumps(
            {
                "metric": "setup",
                "vxnet": __version__,
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "repeat": args.repeat,
                "reference": "dnslib DNSRecord.parse on the same bytes",
            }
        ),
        flush=True,
    )
    zone = Zone([TaskRecord(name="web", framework="marathon", agent_ip="10.0.0.1", ip="9.0.1.2")])
    packets = {
        "plain question (fast path)": query(f"web.marathon.containerip.{ZONE_SUFFIX}"),
        "NXDOMAIN (slow path)": query(f"nope.marathon.containerip.{ZONE_SUFFIX}"),
        "4 KB random": os.urandom(4096),
        "4 KB pointer chain": pointer_chain(4096),
        "64 KB pointer chain": pointer_chain(65535),
        "worst legal query": worst_legal(),
    }
    costs = {}
    for what, packet in packets.items():
        ours = per_call(zone.answer, packet, args.repeat)
        theirs = per_call(DNSRecord.parse, packet, args.repeat)
        costs[what] = ours
        print(
            json.dumps(
                {
                    "metric": "packet",
                    "packet": what,
                    "bytes": len(packet),
                    "vxnet_us": round(ours, 2),
                    "dnslib_us": round(theirs, 2),
                    "dnslib_over_vxnet": round(theirs / ours, 1) if ours else None,
                }
            ),
            flush=True,
        )
    chain = costs["64 KB pointer chain"]
    print(
        json.dumps(
            {
                "metric": "targets",
                "pointer_chain_64k_us": round(chain, 2),
                "pointer_chain_target_met": chain < 1000,
                "worst_legal_us": round(costs["worst legal query"], 2),
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
