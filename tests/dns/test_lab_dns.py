"""Three agents in lab namespaces: a task started on one host resolves on another, and stops
resolving when it stops and when its agent dies."""

from __future__ import annotations

import shutil
import time
from typing import TYPE_CHECKING

import pytest

from vxnet.sandbox.cluster import LabCluster
from vxnet.sandbox.lab import Lab
from waiting import wait_until

if TYPE_CHECKING:
    from vxnet.sandbox.lab import Host

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(shutil.which("dig") is None, reason="needs dig (bind9-dnsutils)"),
]

NAME = "web.marathon.containerip.dcos.thisdcos.directory"
GRACE = 5


def dig(host: Host, name: str) -> tuple[str, list[str]]:
    out = host.run(["dig", "@127.0.0.1", "+time=2", "+tries=1", name], check=False).stdout
    status = out.split("status: ", 1)[1].split(",", 1)[0] if "status: " in out else "no answer"
    answers = [
        words[4]
        for words in (line.split() for line in out.splitlines() if not line.startswith(";"))
        if len(words) == 5 and words[3] == "A"
    ]
    return status, answers


def test_a_task_on_one_host_resolves_on_another_until_it_stops_or_its_agent_dies(
    tmp_path: object,
) -> None:
    from pathlib import Path

    tmp = Path(str(tmp_path))
    with Lab(["master", "a1", "a2", "a3"]) as lab:
        agents = [lab.host(n) for n in ("a1", "a2", "a3")]
        lc = LabCluster(lab, tmp, lab.host("master"), agents, record_grace=GRACE)
        lc.start()
        try:
            lc.wait_converged()
            a1, _, a3 = agents
            assert dig(a3, NAME)[0] == "NXDOMAIN"
            args = {"VXNET_TASK": "web", "VXNET_FRAMEWORK": "marathon"}
            start = time.monotonic()
            web = lc.attach(a1, "web", args=args)
            took = wait_until("the name on a3", lambda: dig(a3, NAME) == ("NOERROR", [web.ip]), 5)
            print(f"resolved on a3 {time.monotonic() - start:.2f} s after the CNI ADD began")
            assert took < 1.0
            lc.cni(a1, web.container, "DEL")
            wait_until("NXDOMAIN after DEL", lambda: dig(a3, NAME)[0] == "NXDOMAIN", 5)
            again = lc.attach(a1, "web2", args=args)
            wait_until("the name again", lambda: dig(a3, NAME) == ("NOERROR", [again.ip]), 5)
            lc.stop(a1, kill=True)
            took = wait_until(
                "NXDOMAIN after the agent died", lambda: dig(a3, NAME)[0] == "NXDOMAIN", GRACE + 20
            )
            print(f"gone {took:.1f} s after the SIGKILL (record_grace {GRACE} s)")
        except BaseException:
            print(lc.logs())
            raise
