"""``vxnet dns lookup``: ask the DNS a running agent serves."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from vxnet._console import Exit, add_group
from vxnet.cli._common import add_address

if TYPE_CHECKING:
    import argparse

__all__ = ["add_parser"]


def _dns_lookup(args: argparse.Namespace) -> int:
    import socket
    import struct
    import time

    from dnslib import QTYPE, DNSError, DNSRecord

    from vxnet.config import parse_hostport

    try:
        host, port = parse_hostport(args.server, any_port=True)
        query = DNSRecord.question(args.name, args.type.upper())
    except (ValueError, DNSError, KeyError) as exc:
        print(f"vxnet dns lookup: {exc}", file=sys.stderr)
        return Exit.BAD_INPUT
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    packet = query.pack()
    start = time.perf_counter()
    try:
        if args.tcp:
            with socket.create_connection((host, port), timeout=args.timeout) as sock:
                sock.sendall(struct.pack("!H", len(packet)) + packet)
                data = b""
                while len(data) < 2 or len(data) < 2 + struct.unpack_from("!H", data)[0]:
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise OSError("the server closed the connection")
                    data += chunk
                data = data[2:]
        else:
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.settimeout(args.timeout)
                sock.sendto(packet, (host, port))
                data = sock.recv(65535)
        reply = DNSRecord.parse(data)
    except (OSError, DNSError) as exc:
        print(
            f"vxnet dns lookup: {args.server}: {exc} (is the agent's DNS listening there?)",
            file=sys.stderr,
        )
        return Exit.FAILED
    took = (time.perf_counter() - start) * 1000
    rcode = reply.header.get_rcode()
    for rr in reply.rr:
        print(f"{rr.rname}\t{rr.ttl}\t{QTYPE.get(rr.rtype)}\t{rr.rdata}")
    flags = []
    if reply.header.aa:
        flags.append("authoritative")
    if reply.header.tc:
        flags.append("truncated: ask again with --tcp")
    from dnslib import RCODE

    print(
        f";; {RCODE.get(rcode)} from {args.server} in {took:.1f} ms"
        + (f" ({', '.join(flags)})" if flags else ""),
        file=sys.stderr,
    )
    return Exit.OK if rcode == 0 and reply.rr else Exit.FAILED


def add_parser(commands: Any) -> None:
    """Add this group's commands to the ``vxnet`` parser's subcommands."""
    dns_cmds = add_group(commands, "dns", "query the DNS an agent serves")
    lookup = dns_cmds.add_parser(
        "lookup",
        help="resolve a name through a running agent",
        description="Resolve NAME through an agent's DNS server and print the answer records "
        "(exit 1 when there is none).",
    )
    lookup.add_argument("name", metavar="NAME")
    lookup.add_argument("--type", default="A", help="record type (default A)")
    add_address(lookup, "--server", "127.0.0.1:53", "the agent's DNS address (one of dns.listen")
    lookup.add_argument("--tcp", action="store_true", help="ask over TCP")
    lookup.add_argument("--timeout", type=float, default=5.0, help="seconds to wait (default 5)")
    lookup.set_defaults(func=_dns_lookup)
