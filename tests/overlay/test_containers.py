"""Containers on a lab cluster: vxnet-ipam through the CNI bridge plugin and on its own, task
records across agents, address usage, and what an agent restart keeps."""

from __future__ import annotations

import json
import sys
import time
from ipaddress import IPv4Network
from typing import TYPE_CHECKING, Any

import pytest
from taskwatch import seen_at, watch

from vxnet.config import NetworkConfig, Overlay
from vxnet.sandbox.cluster import LabCluster, dual_stack_network
from vxnet.sandbox.lab import Host, Lab
from waiting import wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.lab

TINY = Overlay(name="tiny", subnet=IPv4Network("10.10.0.0/16"), prefix=28)  # 5 CNI addresses


@pytest.fixture(scope="module")
def lc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabCluster]:
    tmp = tmp_path_factory.mktemp("containers")
    with Lab(["master", "a1", "a2", "a3"]) as lab:
        network = NetworkConfig(overlays=(*dual_stack_network().overlays, TINY))
        agents = [lab.host(n) for n in ("a1", "a2", "a3")]
        cluster = LabCluster(lab, tmp, lab.host("master"), agents, network)
        cluster.start()
        try:
            cluster.wait_converged()
        except BaseException:
            print(cluster.logs())
            raise
        yield cluster
        print(cluster.logs())


def ipam(
    lc: LabCluster, host: Host, command: str, container_id: str, network: str = "tiny"
) -> tuple[int, dict[str, Any] | None]:
    """Run vxnet-ipam itself (a separate process, as a runtime would) inside ``host``."""
    conflist = json.loads((lc.state_dir(host) / "cni" / f"{network}.conflist").read_text())
    conf = {"cniVersion": "1.0.0", "name": network, "ipam": conflist["plugins"][0]["ipam"]}
    env = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_IFNAME": "eth0",
        "CNI_NETNS": "/dev/null",
        "CNI_PATH": "/usr/lib/cni",
    }
    plugin = str(lc.state_dir(host) / "bin" / "vxnet-ipam")
    done = host.run([plugin], input=json.dumps(conf), env=env, check=False)
    return done.returncode, json.loads(done.stdout) if done.stdout.strip() else None


def test_a_task_record_reaches_every_agent_within_a_second_and_leaves_after_del(
    lc: LabCluster,
) -> None:
    a1, a2, a3 = lc.agents
    watchers = [watch(h, "web", True) for h in (a2, a3)]
    added = time.time()
    attachment = lc.attach(a1, "web", args={"VXNET_TASK": "web", "VXNET_FRAMEWORK": "marathon"})
    for proc in watchers:
        assert seen_at(proc) - added < 1.0
    tasks = json.loads(a3.run([sys.executable, "-m", "vxnet", "tasks", "--json"]).stdout)
    (task,) = [t for t in tasks if t["name"] == "web"]
    assert task == {
        "name": "web",
        "framework": "marathon",
        "network": "dcos",
        "agent_ip": str(a1.address),
        "runtime": "cni",
        "ports_mapped": False,
        "container_id": attachment.container_id,
        "ip": attachment.ip,
        "ip6": attachment.ip6,
    }
    table = a2.run([sys.executable, "-m", "vxnet", "tasks"]).stdout
    assert f"web   marathon   dcos     {attachment.ip} {attachment.ip6}" in table, table
    watchers = [watch(h, "web", False) for h in (a2, a3)]
    deleted = time.time()
    lc.cni(a1, attachment.container, "DEL")
    for proc in watchers:
        assert seen_at(proc) - deleted < 1.0


def test_exhaustion_del_check_and_usage(lc: LabCluster) -> None:
    a2 = lc.agents[1]
    results = [ipam(lc, a2, "ADD", f"fill{i}") for i in range(5)]
    assert all(status == 0 for status, _ in results), results
    addresses = [out["ips"][0]["address"] for _, out in results if out]
    assert len(set(addresses)) == 5
    status, out = ipam(lc, a2, "ADD", "one-too-many")
    assert status == 1
    assert out is not None
    assert out["code"] == 11
    assert out["msg"].startswith("tiny: no free address in this agent's range 10.10.")
    assert out["details"] == f"agent {a2.address}: 5 of 5 in use"
    usage = a2.run([sys.executable, "-m", "vxnet", "overlay", "usage"]).stdout
    rows = [line.split() for line in usage.splitlines()]
    assert [str(a2.address), "tiny", "cni", "5", "0", "100%", "LOW"] in rows, usage
    assert "close to exhaustion" in usage
    assert ipam(lc, a2, "DEL", "fill3") == (0, None)
    assert ipam(lc, a2, "DEL", "fill3") == (0, None)  # DEL twice is fine
    status, out = ipam(lc, a2, "CHECK", "fill3")
    assert status == 1
    assert out is not None
    assert "has no address on this agent" in out["msg"]
    assert ipam(lc, a2, "CHECK", "fill2") == (0, None)
    status, out = ipam(lc, a2, "ADD", "one-too-many")
    assert status == 0
    assert out is not None
    assert out["ips"][0]["address"] not in set(addresses) - {addresses[3]}
    socket = lc.state_dir(a2) / "ipam.sock"
    assert socket.stat().st_mode & 0o777 == 0o600
    assert socket.stat().st_uid == 0
    fetch = "import httpx; print(httpx.get(sys.argv[1], trust_env=False).text)"
    info = json.loads(
        a2.run(
            [
                sys.executable,
                "-c",
                f"import sys; {fetch}",
                "http://127.0.0.1:62080/overlay-agent/overlay",
            ]
        ).stdout
    )
    assert info["usage"]["tiny"]["cni"] == {"total": 5, "allocated": 5, "free": 0}
    assert info["usage"]["tiny"]["docker"]["total"] == 5
    metrics = a2.run(
        [sys.executable, "-c", f"import sys; {fetch}", "http://127.0.0.1:62080/metrics"]
    ).stdout
    assert 'vxnet_addresses{half="cni",network="tiny",state="free"} 0.0' in metrics
    assert 'vxnet_ipam_requests_total{command="ADD",result="error 11"} 1.0' in metrics


def test_an_agent_restart_keeps_every_allocation_and_hands_none_out_twice(lc: LabCluster) -> None:
    a3 = lc.agents[2]
    before = {}
    for i in range(3):
        status, out = ipam(lc, a3, "ADD", f"keep{i}")
        assert status == 0
        assert out is not None
        before[f"keep{i}"] = out["ips"][0]["address"]
    lc.stop(a3)
    status, out = ipam(lc, a3, "ADD", "while-down")
    assert status == 1
    assert out is not None
    assert out["code"] == 11
    assert out["msg"] == "the vxnet agent is not running on this host"
    lc.start_agent(a3)
    wait_until("a3's IPAM socket", lambda: ipam(lc, a3, "CHECK", "keep0")[0] == 0)
    for cid, address in before.items():
        status, out = ipam(lc, a3, "ADD", cid)  # a retried ADD: the same address
        assert out is not None
        assert out["ips"][0]["address"] == address
    status, out = ipam(lc, a3, "ADD", "after")
    assert out is not None
    assert out["ips"][0]["address"] not in before.values()
    # the restarted agent published its task records again
    tasks = json.loads(a3.run([sys.executable, "-m", "vxnet", "tasks", "--json"]).stdout)
    names = {t["name"] for t in tasks if t["agent_ip"] == str(a3.address)}
    assert {"keep0", "keep1", "keep2", "after"} <= names


def test_tasks_registered_through_the_api(lc: LabCluster) -> None:
    a1, a2, _ = lc.agents
    script = (
        "import httpx, json, sys; c = httpx.Client(trust_env=False);"
        " r = c.request(sys.argv[1], 'http://127.0.0.1:62080' + sys.argv[2],"
        " json=json.loads(sys.argv[3]) if sys.argv[3] else None);"
        " print(r.status_code, r.text)"
    )

    def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
        out = a1.run([sys.executable, "-c", script, method, path, json.dumps(body) if body else ""])
        code, _, text = out.stdout.partition(" ")
        return int(code), json.loads(text)

    body = {
        "id": "vm1",
        "name": "legacy",
        "network": "dcos",
        "ip": "9.0.0.77",
        "ports": [{"name": "http", "port": 8080}],
    }
    code, answer = call("POST", "/v1/tasks", body)
    assert code == 201, answer
    bad = {**body, "id": "vm3", "ports": [{"name": "http", "port": 70000}]}
    assert call("POST", "/v1/tasks", bad) == (
        400,
        {"error": "ports[0].port: a port number 1-65535"},
    )
    code, answer = call(
        "POST", "/v1/tasks", {"id": "vm2", "name": "x", "network": "dcos", "ip": "fd01::1"}
    )
    assert code == 400
    assert answer == {"error": "ip: an IPv4 address, got 'fd01::1'"}

    def on_a2() -> list[str]:
        tasks = json.loads(a2.run([sys.executable, "-m", "vxnet", "tasks", "--json"]).stdout)
        return [t["name"] for t in tasks if t["runtime"] == "api"]

    wait_until("the API task on a2", lambda: on_a2() == ["legacy"], timeout=5)
    srv = a2.run(
        ["dig", "@127.0.0.1", "+short", "SRV", "_legacy._api._tcp.dcos.thisdcos.directory"]
    )
    assert srv.stdout.split() == ["1", "1", "8080", "legacy.api.autoip.dcos.thisdcos.directory."]
    assert call("DELETE", "/v1/tasks/vm1") == (200, {"deleted": "vm1"})
    assert call("DELETE", "/v1/tasks/vm1")[0] == 404
    wait_until("the API task gone on a2", lambda: on_a2() == [], timeout=5)


def test_an_agent_with_a_damaged_lease_file_says_so_and_exits(lc: LabCluster) -> None:
    state = lc.tmp / "damaged"
    state.mkdir()
    (state / "ipam.json").write_text('{"format": 1, "leases": 5}')
    config = lc.tmp / "damaged.toml"
    config.write_text(
        f'[agent]\nmasters = ["127.0.0.1:61080"]\nip = "198.18.0.250"\nstate_dir = "{state}"\n'
        f'cni_dir = "{state}/cni"\ncni_bin_dir = ""\n[gossip]\nbind = "127.0.0.1:0"\n'
    )
    # in the master's host: no agent runs there, and the agent stops before touching the kernel
    done = lc.master.run([sys.executable, "-m", "vxnet", "agent", "-c", str(config)], check=False)
    assert done.returncode == 1
    assert done.stderr.strip().endswith(
        f"vxnet agent: the lease file {state}/ipam.json is damaged ('int' object is not "
        "iterable); move it aside to start empty (containers keep their addresses, but the "
        "agent forgets them)"
    )
    assert (state / "ipam.json").read_text() == '{"format": 1, "leases": 5}'
