"""Podman 4.3 (Debian, CNI backend) as a real runtime of an agent's conflist: two agents in lab
namespaces, a private podman on one (its own containers.conf and vfs storage, runc), containers
that get addresses from vxnet-ipam, reach a CNI container on the other agent, resolve cluster
names with no flags, keep a requested address (``--ip``) and keep their address over
``podman network reload``; refused requests say why; ``podman rm`` releases the address."""

from __future__ import annotations

from ipaddress import ip_interface
from typing import TYPE_CHECKING

import pytest

from vxnet.sandbox.cluster import LabCluster
from vxnet.sandbox.cni import find_plugin_dir
from vxnet.sandbox.lab import NETNS_DIR, Lab, LabError
from vxnet.sandbox.podman import MACHINE_DIRS, LabPodman, podman_available
from waiting import wait_until

if TYPE_CHECKING:
    from pathlib import Path

    from vxnet.sandbox.lab import Host

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(not podman_available(), reason="needs podman and runc (Debian)"),
]

DNS = "198.51.100.1"
SUFFIX = "containerip.dcos.thisdcos.directory"
MARATHON = {"VXNET_FRAMEWORK": "marathon"}


def dig(host: Host, name: str) -> list[str]:
    out = host.run(["dig", "@127.0.0.1", "+short", "+time=2", "+tries=1", name], check=False)
    return out.stdout.split()


def test_podman_containers_on_the_overlay(tmp_path: Path) -> None:
    with Lab(["master", "a1", "a2"]) as lab:
        a1, a2 = lab.host("a1"), lab.host("a2")
        lc = LabCluster(lab, tmp_path, lab.host("master"), [a1, a2])
        lc.start()
        podman = LabPodman(
            a1,
            tmp_path / "podman",
            lc.state_dir(a1) / "cni",
            [find_plugin_dir(), str(lc.state_dir(a1) / "bin")],
            [DNS],
        )
        made = [d for d in MACHINE_DIRS if not d.exists()]
        netns_before = {p.name for p in NETNS_DIR.iterdir() if p.name.startswith("netns-")}
        try:
            lc.wait_converged()
            podman.setup()
            assert "dcos" in podman.run(["network", "ls", "--format", "{{.Name}}"]).stdout.split()
            web = lc.attach(a2, "web", args={"VXNET_TASK": "web", **MARATHON})

            podman.start("api", "dcos", cni_args={"VXNET_TASK": "api", **MARATHON})
            api_ip = podman.address("api", "dcos")
            gateway = a1.run(["ip", "-4", "-br", "addr", "show", "dev", "m-dcos"]).stdout.split()
            half = ip_interface(gateway[2]).network
            assert api_ip is not None
            assert ip_interface(f"{api_ip}/32").ip in half
            wait_until(
                "api's name on a2", lambda: dig(a2, f"api.marathon.{SUFFIX}") == [api_ip], 10
            )
            # across the overlay, both ways
            assert (
                podman.run(["exec", "api", "ping", "-c", "1", "-W", "2", str(web.ip)]).returncode
                == 0
            )
            assert web.run(["ping", "-c", "1", "-W", "2", api_ip], check=False).returncode == 0
            # names with no flags: the conflist's nameserver, first in the container's resolv.conf
            resolv = podman.run(["exec", "api", "cat", "/etc/resolv.conf"]).stdout
            assert resolv.splitlines()[0] == f"nameserver {DNS}", resolv
            looked = podman.run(["exec", "api", "nslookup", f"web.marathon.{SUFFIX}"]).stdout
            assert str(web.ip) in looked.split("Name:", 1)[1], looked

            # podman's own name for a task: the container's name under framework podman
            podman.start("plain", "dcos")
            plain_ip = podman.address("plain", "dcos")
            wait_until("plain.podman", lambda: dig(a2, f"plain.podman.{SUFFIX}") == [plain_ip], 10)

            # --ip: given as asked
            wanted = str(half.network_address + 100)
            podman.start("fixed", "dcos", ip=wanted)
            assert podman.address("fixed", "dcos") == wanted
            # refused, with the reason, never another address
            with pytest.raises(LabError, match=f"{wanted} is in use"):
                podman.start("taken", "dcos", ip=wanted)
            outside = str(half.network_address + half.num_addresses + 5)
            with pytest.raises(LabError, match="not in this agent's range"):
                podman.start("outside", "dcos", ip=outside)
            # reload re-runs the plugins (DEL, then ADD with IP=<the old address>)
            podman.run(["network", "reload", "fixed"])
            assert podman.address("fixed", "dcos") == wanted
            assert (
                podman.run(["exec", "fixed", "ping", "-c", "1", "-W", "2", str(web.ip)]).returncode
                == 0
            )
            # rm releases the address: it can be asked for again at once
            podman.run(["rm", "--force", "--time", "0", "fixed"])
            wait_until("fixed's name to go", lambda: dig(a2, f"fixed.podman.{SUFFIX}") == [], 10)
            podman.start("again", "dcos", ip=wanted)
            assert podman.address("again", "dcos") == wanted
        except BaseException:
            print(lc.logs())
            raise
        finally:
            podman.stop()
        assert podman.pids() == []
        assert not (tmp_path / "podman").exists()
        assert not podman.runroot.exists()
        # podman's container namespaces were mounted in its own mount namespace, and are gone
        assert {p.name for p in NETNS_DIR.iterdir() if p.name.startswith("netns-")} == netns_before
        for target in MACHINE_DIRS:  # the machine's own podman state was never written
            assert target.exists() == (target not in made), target
