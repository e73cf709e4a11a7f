"""A real `vxnet agent` answering DNS on loopback, asked by `dig` and dnspython; Knot as the
vxnet-independent upstream; two agents forwarding to each other for the loop guard."""

from __future__ import annotations

import json
import random
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vxnet.sandbox.knot import Knot, free_udp_tcp_port

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.skipif(shutil.which("dig") is None, reason="needs dig (bind9-dnsutils)")

ZONE = "dcos.thisdcos.directory"


@dataclass
class Agent:
    name: str
    dns_port: int
    api: str
    proc: subprocess.Popen[bytes]
    log: Path
    puts: list[str] = field(default_factory=list)

    def put_task(self, task_id: str, **value: Any) -> None:
        key = f"tasks/198.18.0.1/{task_id}"
        response = httpx.put(f"{self.api}/v1/store/{key}", json=value, trust_env=False)
        response.raise_for_status()

    def delete_task(self, task_id: str) -> None:
        httpx.delete(f"{self.api}/v1/store/tasks/198.18.0.1/{task_id}", trust_env=False)

    def dig(self, *args: str) -> str:
        argv = ["dig", "-p", str(self.dns_port), "@127.0.0.1", "+time=3", "+tries=1", *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout

    def ask(self, name: str, rdtype: str = "A", *, tcp: bool = False, edns: bool = False) -> Any:
        query = dns.message.make_query(name, rdtype, use_edns=0 if edns else False)
        if tcp:
            return dns.query.tcp(query, "127.0.0.1", port=self.dns_port, timeout=5)
        return dns.query.udp(query, "127.0.0.1", port=self.dns_port, timeout=5)


def start_agent(
    tmp: Path,
    name: str,
    upstreams: list[str],
    dns_port: int | None = None,
    forward_clients: list[str] | None = None,
) -> Agent:
    port = dns_port or free_udp_tcp_port()
    api = free_udp_tcp_port()
    config = tmp / f"{name}.toml"
    config.write_text(
        f'[agent]\nlisten = "127.0.0.1:{api}"\noverlay = false\n'
        f'[gossip]\nname = "{name}"\nbind = "127.0.0.1:0"\n'
        f'[dns]\nlisten = ["127.0.0.1:{port}"]\nupstreams = {json.dumps(upstreams)}\n'
        + (f"forward_clients = {json.dumps(forward_clients)}\n" if forward_clients else "")
    )
    log = tmp / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vxnet", "agent", "-c", str(config)], stdout=out, stderr=out
        )
    agent = Agent(name, port, f"http://127.0.0.1:{api}", proc, log)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            agent.ask(ZONE, "SOA")
            return agent
        except (OSError, dns.exception.Timeout):
            if proc.poll() is not None:
                break
            time.sleep(0.1)
    proc.kill()
    pytest.fail(f"agent {name} did not answer DNS: {log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def knot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Knot]:
    if shutil.which("knotd") is None and not Path("/usr/sbin/knotd").exists():
        pytest.skip("needs knotd (knot)")
    with Knot(tmp_path_factory.mktemp("knot"), "example.test", ["www A 192.0.2.10"]) as server:
        yield server


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory, knot: Knot) -> Iterator[Agent]:
    a = start_agent(tmp_path_factory.mktemp("dns"), "dns-a", [knot.address])
    try:
        a.put_task(
            "web-1",
            name="web",
            framework="marathon",
            network="dcos",
            agent_ip="198.18.0.1",
            ip="9.0.1.2",
            ip6="fd01:b::1:0:0:2",
            runtime="cni",
            container_id="web-1",
        )
        a.put_task(
            "web-2",
            name="web",
            framework="marathon",
            network="dcos",
            agent_ip="198.18.0.2",
            ip="9.0.2.2",
            runtime="cni",
            container_id="web-2",
        )
        a.put_task(
            "db-1",
            name="My_DB.primary",
            framework="shop",
            network="dcos",
            agent_ip="198.18.0.3",
            ip="9.0.3.2",
            ports_mapped=True,
            runtime="docker",
            container_id="db-1",
            ports=[{"name": "pg", "port": 5432, "protocol": "tcp"}],
        )
        for i in range(100):
            a.put_task(
                f"many-{i}",
                name="many",
                framework="load",
                network="dcos",
                agent_ip="198.18.0.9",
                ip=f"9.0.9.{i + 2}",
                runtime="cni",
                container_id=f"many-{i}",
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            reply = a.ask(f"many.load.containerip.{ZONE}", tcp=True)
            if reply.answer and len(reply.answer[0]) == 100:
                break
            time.sleep(0.05)
        yield a
    finally:
        a.proc.terminate()
        a.proc.wait(timeout=15)


def test_containerip_agentip_and_autoip(agent: Agent) -> None:
    out = agent.dig("+short", f"web.marathon.containerip.{ZONE}")
    assert sorted(out.split()) == ["9.0.1.2", "9.0.2.2"]
    out = agent.dig("+short", "AAAA", f"web.marathon.containerip.{ZONE}")
    assert out.split() == ["fd01:b::1:0:0:2"]
    assert sorted(agent.dig("+short", f"web.marathon.agentip.{ZONE}").split()) == [
        "198.18.0.1",
        "198.18.0.2",
    ]
    # ports mapped: autoip is the agent's address; else the container's
    assert agent.dig("+short", f"my-db-primary.shop.autoip.{ZONE}").split() == ["198.18.0.3"]
    assert sorted(agent.dig("+short", f"web.marathon.autoip.{ZONE}").split()) == [
        "9.0.1.2",
        "9.0.2.2",
    ]
    full = agent.dig(f"web.marathon.containerip.{ZONE}")
    assert "flags: qr aa rd;" in full
    assert "containerip.dcos.thisdcos.directory. 5 IN A 9.0.1.2" in " ".join(full.split())


def test_srv_with_the_target_in_additional(agent: Agent) -> None:
    reply = agent.ask(f"_my-db-primary._shop._tcp.{ZONE}", "SRV")
    (srv,) = reply.answer
    (record,) = list(srv)
    assert (record.priority, record.weight, record.port) == (1, 1, 5432)
    assert str(record.target) == f"my-db-primary.shop.autoip.{ZONE}."
    assert any(rr.rdtype == dns.rdatatype.A for rr in reply.additional)


def test_nxdomain_and_nodata_carry_the_soa(agent: Agent) -> None:
    missing = agent.ask(f"nope.marathon.containerip.{ZONE}")
    assert missing.rcode() == dns.rcode.NXDOMAIN
    assert [rr.rdtype for rr in missing.authority] == [dns.rdatatype.SOA]
    nodata = agent.ask(f"my-db-primary.shop.containerip.{ZONE}", "AAAA")
    assert nodata.rcode() == dns.rcode.NOERROR
    assert nodata.answer == []
    assert [rr.rdtype for rr in nodata.authority] == [dns.rdatatype.SOA]
    soa = agent.dig("+short", "SOA", ZONE).split()
    assert soa[0] == "ns.spartan."
    assert soa[-1] == "1"  # minimum


def test_case_is_echoed(agent: Agent) -> None:
    out = agent.dig("WeB.MaRaThOn.ContainerIP.DCOS.thisdcos.directory")
    flat = " ".join(out.split())
    assert ";WeB.MaRaThOn.ContainerIP.DCOS.thisdcos.directory. IN A" in flat
    assert "WeB.MaRaThOn.ContainerIP.DCOS.thisdcos.directory. 5 IN A" in flat
    assert "9.0.1.2" in out


def test_edns_and_truncation_then_tcp(agent: Agent) -> None:
    with_edns = agent.ask(f"web.marathon.containerip.{ZONE}", edns=True)
    assert with_edns.edns == 0
    udp = agent.dig("+notcp", "+ignore", "+noedns", f"many.load.containerip.{ZONE}")
    assert "flags: qr aa tc rd;" in udp, udp
    tcp = agent.ask(f"many.load.containerip.{ZONE}", tcp=True)
    assert len(tcp.answer[0]) == 100
    assert not tcp.flags & dns.flags.TC


def test_forwarding_to_an_upstream_over_udp_and_tcp(agent: Agent) -> None:
    assert agent.dig("+short", "www.example.test").split() == ["192.0.2.10"]
    assert agent.dig("+short", "+tcp", "www.example.test").split() == ["192.0.2.10"]
    reply = agent.ask("nope.example.test")
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert reply.flags & dns.flags.RA


def test_a_forwarding_loop_is_cut_short(tmp_path: Path) -> None:
    port_a, port_b = free_udp_tcp_port(), free_udp_tcp_port()
    a = start_agent(tmp_path, "loop-a", [f"127.0.0.1:{port_b}"], port_a)
    b = start_agent(tmp_path, "loop-b", [f"127.0.0.1:{port_a}"], port_b)
    try:
        start = time.monotonic()
        reply = a.ask("somewhere.example.test")
        took = time.monotonic() - start
        assert reply.rcode() == dns.rcode.SERVFAIL
        assert took < 1.0, f"the loop took {took:.2f} s to be cut"
        assert "DNS forwarding loop" in a.log.read_text() + b.log.read_text()
    finally:
        for x in (a, b):
            x.proc.terminate()
            x.proc.wait(timeout=15)


def test_only_allowed_clients_may_forward(tmp_path: Path, knot: Knot) -> None:
    a = start_agent(tmp_path, "strict", [knot.address], forward_clients=["10.0.0.0/8"])
    try:
        assert a.ask("www.example.test").rcode() == dns.rcode.REFUSED  # 127.0.0.1 is not allowed
        assert a.ask(ZONE, "SOA").rcode() == dns.rcode.NOERROR  # the zone answers everyone
    finally:
        a.proc.terminate()
        a.proc.wait(timeout=15)


def test_no_upstream_means_refused(tmp_path: Path) -> None:
    a = start_agent(tmp_path, "lonely", [])
    try:
        assert a.ask("www.example.test").rcode() == dns.rcode.REFUSED
        records = httpx.get(f"{a.api}/v1/records", trust_env=False).json()
        assert records["zone"] == ZONE
        assert {"name": ZONE, "type": "NS", "value": "ns.spartan.", "ttl": 3600} in records[
            "records"
        ]
    finally:
        a.proc.terminate()
        a.proc.wait(timeout=15)


def test_vxnet_dns_lookup_and_records(agent: Agent) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "vxnet",
            "dns",
            "lookup",
            f"web.marathon.containerip.{ZONE}",
            "--server",
            f"127.0.0.1:{agent.dns_port}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert "9.0.1.2" in done.stdout
    assert "NOERROR" in done.stderr
    assert "authoritative" in done.stderr
    records = httpx.get(f"{agent.api}/v1/records", trust_env=False).json()["records"]
    names = {r["name"] for r in records}
    assert f"web.marathon.containerip.{ZONE}" in names
    metrics = httpx.get(f"{agent.api}/metrics", trust_env=False).text
    assert 'vxnet_dns_queries_total{result="NOERROR"}' in metrics


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_generated_and_mutated_packets_get_a_well_formed_reply_or_none(
    agent: Agent, data: st.DataObject
) -> None:
    base = dns.message.make_query(
        data.draw(st.sampled_from([f"web.marathon.containerip.{ZONE}", ZONE, "www.example.test"])),
        data.draw(st.sampled_from(["A", "AAAA", "SRV", "SOA", "TXT"])),
        use_edns=data.draw(st.sampled_from([False, 0])),
    ).to_wire()
    kind = data.draw(st.sampled_from(["random", "flip", "cut", "insert"]))
    if kind == "random":
        packet = data.draw(st.binary(min_size=0, max_size=600))
    elif kind == "flip":
        i = data.draw(st.integers(0, len(base) - 1))
        packet = base[:i] + bytes([base[i] ^ data.draw(st.integers(1, 255))]) + base[i + 1 :]
    elif kind == "cut":
        packet = base[: data.draw(st.integers(0, len(base)))]
    else:
        i = data.draw(st.integers(0, len(base)))
        packet = base[:i] + data.draw(st.binary(min_size=1, max_size=20)) + base[i:]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2 if kind == "random" else 1.0)
        sock.sendto(packet, ("127.0.0.1", agent.dns_port))
        try:
            reply = sock.recv(65535)
        except TimeoutError:
            reply = None
    if reply is not None:
        assert reply[:2] == packet[:2]
        assert reply[2] & 0x80  # QR
        dns.message.from_wire(reply, ignore_trailing=False, one_rr_per_rrset=True)
    assert agent.proc.poll() is None
    # and it still answers
    assert agent.ask(ZONE, "SOA").rcode() == dns.rcode.NOERROR
    random.random()
