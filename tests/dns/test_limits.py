"""What one client can hold of a real agent's DNS: TCP connections (64 per address, the rest
closed at once) and queries waiting on upstreams (512 at once; beyond, SERVFAIL at once rather
than more waiting), with an upstream that never answers."""

from __future__ import annotations

import contextlib
import socket
import time
from typing import TYPE_CHECKING

import dns.message
import dns.query
import dns.rcode
import httpx

from dns_agent import dns_agent, metric
from vxnet.dns._server import MAX_FORWARDING, TCP_PER_CLIENT
from waiting import wait_until

if TYPE_CHECKING:
    from pathlib import Path


def test_tcp_connections_and_waiting_forwards_are_capped(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as black_hole:
        black_hole.bind(("127.0.0.1", 0))  # an upstream that reads nothing and answers nothing
        upstream = f"127.0.0.1:{black_hole.getsockname()[1]}"
        settings = f'upstreams = ["{upstream}"]\nrate_limit = 0\n'
        conns: list[socket.socket] = []
        with dns_agent(tmp_path, "limits", settings) as agent:
            dns_port = agent.dns_port
            # TCP: the first TCP_PER_CLIENT connections stay open, the next are closed at once.
            for _ in range(TCP_PER_CLIENT + 8):
                conns.append(socket.create_connection(("127.0.0.1", dns_port), timeout=5))
                conns[-1].setblocking(False)

            def closed() -> int:
                shut = 0
                for conn in conns:
                    with contextlib.suppress(BlockingIOError):  # open: nothing to read
                        shut += conn.recv(1) == b""
                return shut

            # well before the 10 s idle timeout closes the others too
            wait_until("the extra 8 connections to be closed", lambda: closed() >= 8, timeout=5)
            assert closed() == 8
            for conn in conns:
                conn.close()

            # Forwarding: MAX_FORWARDING wait on the upstream; the rest get SERVFAIL now.
            extra = 200
            servfail = 0
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                for i in range(MAX_FORWARDING + extra):
                    query = dns.message.make_query(f"n{i}.example.com", "A")
                    udp.sendto(query.to_wire(), ("127.0.0.1", dns_port))
                    if i % 32 == 31:
                        time.sleep(0.01)  # paced: fewer drops while the agent starts forwards
                udp.settimeout(2.0)  # well before the upstream timeout (5 s)
                try:
                    while True:
                        reply = dns.message.from_wire(udp.recv(4096))
                        servfail += reply.rcode() == dns.rcode.SERVFAIL
                except TimeoutError:
                    pass
            metrics = httpx.get(f"{agent.api}/metrics", trust_env=False).text
            # Starting 512 forwards takes the agent a while: the kernel may drop some of the
            # burst meanwhile, and it says how many.
            drops = int(metric(agent.api, "vxnet_dns_kernel_drops_total"))
            assert 0 < servfail == extra - drops, (servfail, drops)
            assert f'vxnet_dns_queries_total{{result="forward_busy"}} {servfail}.0' in metrics
        for conn in conns:
            conn.close()
