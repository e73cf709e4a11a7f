"""Containers resolve cluster names with no flags: two agents in lab namespaces, CNI containers
attached with the agents' own conflists, names asked by busybox's resolver inside them through
the ``resolv.conf`` a runtime writes from the CNI result."""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

import pytest

from vxnet.sandbox.cluster import LabCluster
from vxnet.sandbox.lab import Lab
from waiting import wait_until

if TYPE_CHECKING:
    from pathlib import Path

    from vxnet.sandbox.cluster import Attachment

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(shutil.which("busybox") is None, reason="needs busybox-static"),
]

SUFFIX = "marathon.containerip.dcos.thisdcos.directory"
DNS = "198.51.100.1"  # dns.container_addresses' default, the same on every agent


def lookup(container: Attachment, name: str) -> list[str]:
    """The IPv4 addresses busybox's nslookup gets for ``name`` from the container's resolver."""
    out = container.run(["busybox", "nslookup", "-type=a", name], check=False, timeout=20)
    answers = out.stdout.split("Name:", 1)[-1] if "Name:" in out.stdout else ""
    return sorted(
        line.split()[-1]
        for line in answers.splitlines()
        if line.startswith("Address") and "." in line
    )


def test_cni_containers_resolve_through_the_agents_well_known_address(tmp_path: Path) -> None:
    with Lab(["master", "a1", "a2"]) as lab:
        a1, a2 = lab.host("a1"), lab.host("a2")
        lc = LabCluster(lab, tmp_path, lab.host("master"), [a1, a2])
        lc.start()
        try:
            lc.wait_converged()
            web = lc.attach(a1, "web", args={"VXNET_TASK": "web", "VXNET_FRAMEWORK": "marathon"})
            db = lc.attach(a2, "db", args={"VXNET_TASK": "db", "VXNET_FRAMEWORK": "marathon"})
            # the runtime was told the agent's DNS, by the bridge plugin's result
            assert web.resolv_conf is not None
            assert web.resolv_conf.read_text() == f"nameserver {DNS}\n"
            inside = web.run(["cat", "/etc/resolv.conf"]).stdout
            assert inside == f"nameserver {DNS}\n"
            # every agent holds the address on its own device, none routes it elsewhere
            for host in (a1, a2):
                shown = host.run(["ip", "-br", "-4", "addr", "show", "dev", "vxnet-dns"]).stdout
                assert f"{DNS}/32" in shown, (host.name, shown)
            # names of tasks on this agent and on the other, from inside the containers
            wait_until("db to resolve in web", lambda: lookup(web, f"db.{SUFFIX}") == [db.ip], 15)
            wait_until("web to resolve in db", lambda: lookup(db, f"web.{SUFFIX}") == [web.ip], 15)
            # the agent's own processes use it too (health checks, the host's resolver)
            out = a1.run(["dig", f"@{DNS}", "+short", f"db.{SUFFIX}"], check=False).stdout
            assert out.split() == [db.ip]
            # the conflist keeps the host's resolv.conf out of the container
            host_file = web.container.run(["cat", "/etc/resolv.conf"]).stdout
            assert DNS not in host_file
        except BaseException:
            print(lc.logs())
            raise
