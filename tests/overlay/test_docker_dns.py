"""Docker containers resolve cluster names and outside names with no flags: a private dockerd
told the agent's well-known address (``"dns"`` in daemon.json, the production recipe), Docker's
embedded DNS forwarding to it, the agent answering its zone and forwarding the rest to an
outside resolver (Knot in a lab host of its own)."""

from __future__ import annotations

import shutil
import subprocess
from typing import TYPE_CHECKING

import pytest
import trio

from vxnet.config import DnsSettings
from vxnet.sandbox.cluster import LabCluster
from vxnet.sandbox.dockerd import IMAGE, LabDockerd, ensure_image
from vxnet.sandbox.knot import Knot
from vxnet.sandbox.lab import Lab
from waiting import wait_until

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(shutil.which("dockerd") is None, reason="needs dockerd (docker.io)"),
    pytest.mark.skipif(shutil.which("knotd", path="/usr/sbin:/sbin") is None, reason="needs knot"),
]

WEB = "web.marathon.containerip.dcos.thisdcos.directory"


def lookup(pid: int, name: str) -> list[str]:
    """busybox nslookup inside the container (its own file system: its resolv.conf)."""
    argv = [
        "nsenter",
        "-t",
        str(pid),
        "--net",
        "--mount",
        "--",
        "/bin/busybox",
        "nslookup",
        "-type=a",
        name,
    ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False).stdout
    if "Name:" not in out:
        return []
    answer = out.split("Name:", 1)[1]
    return sorted(line.split()[-1] for line in answer.splitlines() if line.startswith("Address"))


def test_docker_containers_resolve_cluster_and_outside_names(tmp_path: Path) -> None:
    (address,) = DnsSettings().container_addresses
    with Lab(["master", "a1", "a2", "out"]) as lab:
        a1, a2, out = lab.host("a1"), lab.host("a2"), lab.host("out")
        knot = Knot(tmp_path / "knot", "example.test", ["www A 192.0.2.10"], host=out).start()
        dockerd = LabDockerd.start(a1, tmp_path / "dk1", dns=[address])
        try:
            lc = LabCluster(
                lab,
                tmp_path,
                lab.host("master"),
                [a1, a2],
                docker_sockets={"a1": dockerd.socket_path},
                dns_upstreams=(knot.address,),
            )
            lc.start()
            try:
                lc.wait_converged()
                web = lc.attach(
                    a2, "web", args={"VXNET_TASK": "web", "VXNET_FRAMEWORK": "marathon"}
                )
                docker = dockerd.docker()

                async def start() -> int:
                    with trio.fail_after(60):
                        while await docker.network("dcos") is None:  # noqa: ASYNC110 (an API)
                            await trio.sleep(0.1)
                    await ensure_image(docker)
                    spec = {
                        "Image": IMAGE,
                        "Cmd": ["sleep", "600"],
                        "HostConfig": {"NetworkMode": "dcos"},
                    }
                    cid = await docker.create_container(spec, "app")
                    await docker.start_container(cid)
                    info = await docker.container(cid)
                    assert info is not None
                    return int(info["State"]["Pid"])

                pid = trio.run(start)
                resolv = subprocess.run(
                    ["nsenter", "-t", str(pid), "--mount", "--", "/bin/cat", "/etc/resolv.conf"],
                    capture_output=True,
                    text=True,
                    timeout=10,
                    check=True,
                ).stdout
                assert "nameserver 127.0.0.11" in resolv  # Docker's embedded DNS, as usual
                # a cluster name, through the embedded DNS and the agent
                wait_until("web in the container", lambda: lookup(pid, WEB) == [web.ip], 15)
                # an outside name: forwarded by the agent to its upstream
                assert lookup(pid, "www.example.test") == ["192.0.2.10"]
                # a stranger routing to the well-known address through a1 gets the zone, but
                # no forwarding: not an open resolver
                out.run(["ip", "route", "add", f"{address}/32", "via", str(a1.address)])
                ask = ["dig", f"@{address}", "+time=2", "+tries=1"]
                outside = out.run([*ask, "www.example.test"], check=False).stdout
                assert "status: REFUSED" in outside, outside
                inside = out.run([*ask, "+short", WEB], check=False).stdout
                assert inside.split() == [web.ip]
            except BaseException:
                print(lc.logs())
                raise
        finally:
            dockerd.stop()
            knot.stop()
