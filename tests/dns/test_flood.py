"""A DNS flood does not starve its agent: two real agents gossip on loopback while a client
floods one agent's DNS with valid queries, unique NXDOMAIN names, malformed packets and pointer
chains for 8 s. Throughout, the agent's API answers every request within 100 ms, the other agent
never sees it suspect or failed, and a client asking over TCP gets its answers."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import dns.message
import dns.query
import httpx
import pytest

from dns_agent import metric
from vxnet.testing.procs import free_ports
from waiting import wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

ZONE = "dcos.thisdcos.directory"
FLOOD_SECONDS = 8.0


def start(tmp: Path, name: str, dns_port: int, api: int, gossip: int, seed: int | None) -> Path:
    config = tmp / f"{name}.toml"
    seeds = json.dumps([f"127.0.0.1:{seed}"] if seed else [])
    config.write_text(
        f'[agent]\nlisten = "127.0.0.1:{api}"\noverlay = false\n'
        f'[gossip]\nname = "{name}"\nbind = "127.0.0.1:{gossip}"\nseeds = {seeds}\n'
        f'[dns]\nlisten = ["127.0.0.1:{dns_port}"]\n'
    )
    return config


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[tuple[str, str, int]]:
    """The flooded agent's API and DNS port, and its peer's API."""
    dns_a, dns_b, api_a, api_b, gossip_a, gossip_b = free_ports(6)
    procs = []
    logs = []
    try:
        for name, dns_port, api, gossip, seed in (
            ("flooded", dns_a, api_a, gossip_a, None),
            ("peer", dns_b, api_b, gossip_b, gossip_a),
        ):
            config = start(tmp_path, name, dns_port, api, gossip, seed)
            log = (tmp_path / f"{name}.log").open("wb")
            logs.append(log)
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "vxnet", "agent", "-c", str(config)],
                    stdout=log,
                    stderr=log,
                )
            )
        yield f"http://127.0.0.1:{api_a}", f"http://127.0.0.1:{api_b}", dns_a
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=15)
        for log in logs:
            log.close()


def status_of(http: httpx.Client, api: str, name: str) -> str | None:
    members = http.get(f"{api}/v1/members").json()["members"]
    return next((m["status"] for m in members if m["name"] == name), None)


def test_a_dns_flood_starves_neither_gossip_nor_the_api_nor_tcp(
    agents: tuple[str, str, int],
) -> None:
    api, peer_api, dns_port = agents
    with httpx.Client(trust_env=False, timeout=5) as http:

        def met() -> bool:
            try:
                # the flooded agent's API starts after its DNS (and its workers)
                seen = status_of(http, peer_api, "flooded") == "alive"
                return seen and http.get(f"{api}/v1/members").is_success
            except httpx.TransportError:
                return False  # not listening yet

        wait_until("the agents to meet", met)
        http.put(
            f"{api}/v1/store/tasks/198.18.0.1/web-1",
            json={
                "name": "web",
                "framework": "marathon",
                "network": "dcos",
                "agent_ip": "198.18.0.1",
                "ip": "9.0.1.2",
                "runtime": "cni",
                "container_id": "web-1",
            },
        ).raise_for_status()
        query = dns.message.make_query(f"web.marathon.containerip.{ZONE}", "A")
        wait_until(
            "the task to resolve",
            lambda: bool(dns.query.tcp(query, "127.0.0.1", port=dns_port, timeout=5).answer),
        )

        def suspicions() -> list[float]:
            return [metric(a, "vxnet_gossip_suspicions_total") for a in (api, peer_api)]

        before = suspicions()
        flooder = subprocess.Popen(
            [sys.executable, "-m", "vxnet.testing.dnsflood", str(dns_port), str(FLOOD_SECONDS)],
            stdout=subprocess.PIPE,
            text=True,
        )
        slow: list[float] = []
        seen: set[str | None] = set()
        answered = asked = 0
        try:
            end = time.monotonic() + FLOOD_SECONDS - 0.5
            while time.monotonic() < end:
                began = time.monotonic()
                http.get(f"{api}/v1/members").raise_for_status()
                took = time.monotonic() - began
                if took > 0.1:
                    slow.append(took)
                seen.add(status_of(http, peer_api, "flooded"))
                asked += 1
                reply = dns.query.tcp(query, "127.0.0.1", port=dns_port, timeout=2)
                answered += bool(reply.answer)
                time.sleep(0.1)  # sampling: about 10 rounds of API, gossip and TCP a second
        finally:
            out, _ = flooder.communicate(timeout=FLOOD_SECONDS + 30)
        sent = int(out.strip())
        stats = http.get(f"{api}/metrics").text
        suspected = [after - first for after, first in zip(suspicions(), before, strict=True)]
    assert sent > 100_000, f"the flood was too weak to mean anything ({sent} packets)"
    assert slow == [], f"the API took over 100 ms {len(slow)} times: {slow}"
    assert seen == {"alive"}, f"the peer saw the flooded agent as {seen}"
    assert suspected == [0, 0], "a probe went unanswered during the flood (flooded, peer)"
    assert answered == asked, "TCP DNS went unanswered during the flood"
    assert "vxnet_dns_kernel_drops_total" in stats
