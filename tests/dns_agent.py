"""One real ``vxnet agent`` on loopback with the overlay off, for DNS tests: written config,
started, answering DNS over TCP, stopped by PID at the end."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

import dns.exception
import dns.message
import dns.query

from vxnet.dns._zone import ZONE_SUFFIX
from vxnet.testing.procs import free_ports
from waiting import wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@dataclass(frozen=True)
class DnsAgent:
    dns_port: int
    api: str  # http://127.0.0.1:PORT
    proc: subprocess.Popen[bytes]


@contextlib.contextmanager
def dns_agent(tmp: Path, name: str, dns_settings: str = "") -> Iterator[DnsAgent]:
    """Run an agent whose ``[dns]`` section adds ``dns_settings`` (TOML lines) until the
    block ends; it answers DNS before the block starts (within 20 s, or the test fails)."""
    dns_port, api, gossip = free_ports(3)
    config = tmp / f"{name}.toml"
    config.write_text(
        f'[agent]\nlisten = "127.0.0.1:{api}"\noverlay = false\n'
        f'[gossip]\nname = "{name}"\nbind = "127.0.0.1:{gossip}"\n'
        f'[dns]\nlisten = ["127.0.0.1:{dns_port}"]\n{dns_settings}'
    )
    with (tmp / f"{name}.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vxnet", "agent", "-c", str(config)], stdout=log, stderr=log
        )
    try:
        query = dns.message.make_query(ZONE_SUFFIX, "SOA")

        def answers() -> bool:
            try:
                dns.query.tcp(query, "127.0.0.1", port=dns_port, timeout=1)
            except (OSError, dns.exception.Timeout):
                assert proc.poll() is None, (tmp / f"{name}.log").read_text()[-2000:]
                return False
            return True

        wait_until("the agent to answer DNS", answers, timeout=20)
        yield DnsAgent(dns_port, f"http://127.0.0.1:{api}", proc)
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def metric(api: str, name: str) -> float:
    """The value of the unlabelled metric ``name`` in the agent's ``/metrics``."""
    import httpx

    text = httpx.get(f"{api}/metrics", trust_env=False, timeout=5).text
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))
