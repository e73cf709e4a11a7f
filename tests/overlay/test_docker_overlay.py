"""Docker and CNI containers on one overlay: a private dockerd per lab host, real agents.

a1's dockerd starts before its agent (so dockerd turns forwarding on and sets the FORWARD policy
to DROP, and the agent's DOCKER-USER rules must let the overlay in); a2's agent starts with no
Docker at all and must pick it up when its dockerd appears.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import pytest
import trio
from taskwatch import seen_at, watch

from vxnet.sandbox.cluster import LabCluster
from vxnet.sandbox.dockerd import IMAGE, LabDockerd, ensure_image
from vxnet.sandbox.lab import Lab
from waiting import wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from vxnet.overlay._docker import Docker
    from vxnet.sandbox.lab import Host

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(shutil.which("dockerd") is None, reason="needs dockerd (docker.io)"),
]


def tasks(host: Host) -> list[dict[str, Any]]:
    out = host.run([sys.executable, "-m", "vxnet", "tasks", "--json"], check=False).stdout
    return list(json.loads(out)) if out.strip() else []


def run_container(docker: Docker, name: str, labels: dict[str, str]) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        await ensure_image(docker)
        spec = {
            "Image": IMAGE,
            "Cmd": ["sleep", "600"],
            "Labels": labels,
            "HostConfig": {"NetworkMode": "dcos"},
        }
        cid = await docker.create_container(spec, name)
        await docker.start_container(cid)
        info = await docker.container(cid)
        assert info is not None
        return info

    return trio.run(go)


def stop_container(docker: Docker, cid: str, timeout: int = 1) -> None:
    async def go() -> None:
        await docker.stop_container(cid, timeout)
        await docker.remove_container(cid)

    trio.run(go)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LabCluster, LabDockerd]]:
    tmp = tmp_path_factory.mktemp("docker")
    with Lab(["master", "a1", "a2"]) as lab:
        a1, a2 = lab.host("a1"), lab.host("a2")
        first = LabDockerd.start(a1, tmp / "dk1")
        try:
            sockets = {"a1": first.socket_path, "a2": str(tmp / "dk2-later.sock")}
            lc = LabCluster(lab, tmp, lab.host("master"), [a1, a2], docker_sockets=sockets)
            lc.start()
            try:
                lc.wait_converged()
            except BaseException:
                print(lc.logs())
                raise
            yield lc, first
            print(lc.logs())
        finally:
            first.stop()


def test_docker_and_cni_containers_reach_each_other_and_docker_tasks_are_records(
    cluster: tuple[LabCluster, LabDockerd],
) -> None:
    lc, dockerd = cluster
    a1, a2 = lc.agents
    docker = dockerd.docker()
    wait_until("the Docker network on a1", lambda: "d-dcos" in a1.run(["ip", "link"]).stdout)
    watcher = watch(a2, "db", True)
    labels = {"vxnet.task": "db", "vxnet.framework": "shop", "vxnet.port.pg": "5432"}
    trio.run(ensure_image, docker)  # not part of the container's start
    started = time.time()
    info = run_container(docker, "web-1", labels)
    took = seen_at(watcher) - started
    print(f"Docker task record on a2 {took:.2f} s after the create and start calls began")
    assert took < 1.0
    ip = info["NetworkSettings"]["Networks"]["dcos"]["IPAddress"]
    ip6 = info["NetworkSettings"]["Networks"]["dcos"]["GlobalIPv6Address"]
    (task,) = [t for t in tasks(a2) if t["name"] == "db"]
    assert task["ip6"] == ip6
    assert task["framework"] == "shop"
    assert task["ip"] == ip
    assert task["agent_ip"] == str(a1.address)
    assert task["ports_mapped"] is False
    assert task["ports"] == [{"name": "pg", "port": 5432, "protocol": "tcp"}]
    # the Docker half of a1's subnet, MTU 1420, no masquerading by Docker
    status = lc.status(a1)
    (overlay,) = status["info"]["overlays"]
    half = overlay["docker_bridge"]["ip"].rsplit(".", 1)[0]
    assert ip.startswith(half + ".")
    assert status["docker"] == {"enabled": True, "socket": dockerd.socket_path, "available": True}
    link = json.loads(a1.run(["ip", "-j", "link", "show", "d-dcos"]).stdout)[0]
    assert link["mtu"] == 1420
    cni = lc.attach(a2, "c1")
    assert cni.ip is not None
    pid = info["State"]["Pid"]
    inside = ["nsenter", f"--net=/proc/{pid}/ns/net", "ping", "-c", "3", "-i", "0.2", "-W", "2"]
    there = subprocess.run([*inside, cni.ip], capture_output=True, text=True, timeout=30)
    assert there.returncode == 0, there.stdout + there.stderr
    back = cni.container.run(["ping", "-c", "3", "-i", "0.2", "-W", "2", ip], check=False)
    assert back.returncode == 0, back.stdout + back.stderr + a1.run(["iptables", "-S"]).stdout
    rules = a1.run(["iptables", "-S", "DOCKER-USER"]).stdout
    assert "-A DOCKER-USER -i vtep1024 -o d-dcos -j ACCEPT" in rules, rules
    # a1's FORWARD policy is Docker's DROP: CNI containers there must still reach other hosts
    policy = a1.run(["iptables", "-S", "FORWARD"]).stdout.splitlines()[0]
    assert policy == "-P FORWARD DROP", policy
    local = lc.attach(a1, "c2")
    assert local.ip is not None
    for src, dst in ((local, cni.ip), (cni, local.ip)):
        ping = src.container.run(["ping", "-c", "2", "-i", "0.2", "-W", "2", dst], check=False)
        assert ping.returncode == 0, f"{src.container.name} -> {dst}: {ping.stdout}{rules}"
    usage = json.loads(a2.run([sys.executable, "-m", "vxnet", "overlay", "usage", "--json"]).stdout)
    assert usage[str(a1.address)]["networks"]["dcos"]["docker"]["allocated"] == 1
    watcher = watch(a2, "db", False)
    started = time.time()
    stop_container(docker, info["Id"], timeout=0)  # SIGKILL at once: it dies as the call starts
    took = seen_at(watcher) - started
    print(f"Docker task record gone on a2 {took:.2f} s after the stop call began")
    assert took < 1.0
    # a container without vxnet labels is named after itself, framework docker
    plain = run_container(docker, "plain-2", {})
    wait_until(
        "the plain container's task",
        lambda: any(t["name"] == "plain-2" and t["framework"] == "docker" for t in tasks(a2)),
        timeout=10,
    )
    stop_container(docker, plain["Id"])
    # a vxnet network removed behind the agent's back comes back
    trio.run(docker.remove_network, "dcos")
    wait_until(
        "the Docker network made again", lambda: trio.run(docker.network, "dcos") is not None
    )


def test_an_agent_without_docker_says_so_once_and_picks_it_up_when_it_appears(
    cluster: tuple[LabCluster, LabDockerd], tmp_path: Path
) -> None:
    lc, _ = cluster
    a2 = lc.agents[1]
    status = lc.status(a2)
    assert status["docker"]["available"] is False
    log = (lc.tmp / "a2.log").read_text()
    assert log.count("Docker is not available") == 1, log
    socket_path = lc.docker_sockets["a2"]
    second = LabDockerd.start(a2, tmp_path / "dk2")
    try:
        # the agent's configured socket: a link to where this daemon listens
        from pathlib import Path

        Path(socket_path).symlink_to(second.socket_path)
        wait_until("a2 using Docker", lambda: lc.status(a2)["docker"]["available"], timeout=20)
        wait_until("the Docker network on a2", lambda: "d-dcos" in a2.run(["ip", "link"]).stdout)
        second.stop()  # Docker goes away again: the agent carries on without it
        wait_until("a2 without Docker", lambda: not lc.status(a2)["docker"]["available"])
        assert lc.procs["a2"].poll() is None
        assert lc.converged(a2)
    finally:
        second.stop()
        Path(socket_path).unlink(missing_ok=True)
