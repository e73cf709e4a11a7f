"""A secure cluster of real processes: agents register with the master over HTTPS with their agent
certificates and the master token, and gossip encrypted; agents without a certificate of the
cluster's CA get nothing.

One lab (:class:`LabCluster` with ``secure``): a master, two agents of the cluster, and three
strangers on the same underlay, each holding the gossip key and the token:

* ``foreign`` has a ``[tls]`` of another CA altogether: it refuses the master's certificate, and
  its status says so;
* ``forged`` trusts the cluster's CA (``ca.pem`` is no secret) but its agent certificate is from
  another CA: the master refuses it in the handshake;
* ``plain`` has no ``[tls]`` (nor a gossip key): it speaks HTTP to an HTTPS port.

The master's state, read over HTTPS with the operator's certificate as an operator would, lists
the two agents and no stranger.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
from typing import TYPE_CHECKING, Any

import pytest

from vxnet.config import AgentConfig, TlsSettings
from vxnet.pki import CA_CERT, init_ca, issue
from vxnet.sandbox.cluster import LabCluster
from vxnet.sandbox.lab import Host, Lab
from waiting import wait_until

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.lab


def overlay_status(host: Host) -> tuple[int, str, dict[str, Any]]:
    """``vxnet overlay status`` inside ``host``: its exit status and text, and its JSON."""
    argv = [sys.executable, "-m", "vxnet", "overlay", "status"]
    text = host.run(argv, check=False)
    status = json.loads(host.run([*argv, "--json"]).stdout)
    return text.returncode, text.stdout + text.stderr, dict(status)


def registration_failed(host: Host) -> bool:
    """The agent in ``host`` answers its API and has seen a registration fail."""
    argv = [sys.executable, "-m", "vxnet", "overlay", "status", "--json"]
    answer = host.run(argv, check=False)
    if answer.returncode != 0:
        return False  # its API is not up yet
    return bool(json.loads(answer.stdout)["registration"]["failures"])


def stranger_config(lc: LabCluster, host: Host, other_ca: Path, *, ca: Path) -> AgentConfig:
    """``host``'s agent as the cluster's agents are, but with an agent certificate of
    ``other_ca`` (and ``ca`` as the CA it trusts)."""
    mine = issue(other_ca, "agent", host.name, ips=[str(host.address)])
    tls = TlsSettings(ca=str(ca), cert=str(mine.cert), key=str(mine.key))
    return dataclasses.replace(lc.agent_config(host), tls=tls)


def test_agents_register_over_https_and_strangers_get_nothing(
    tmp_path: Path, lab_ready: None
) -> None:
    names = ["m1", "a1", "a2", "foreign", "forged", "plain"]
    with Lab(names) as lab:
        m1, a1, a2, foreign, forged, plain = (lab.host(n) for n in names)
        lc = LabCluster(lab, tmp_path, m1, [a1, a2], secure=True)
        secrets = lc.secrets
        assert secrets is not None
        other_ca = tmp_path / "other-ca"
        init_ca(other_ca, name="not the cluster's CA")
        bare = lc.agent_config(plain, master_token=None)
        bare = dataclasses.replace(
            bare,
            tls=TlsSettings(),
            gossip=dataclasses.replace(bare.gossip, keys=(), keyring_file=None),
        )
        lc.start()
        lc.start_agent(
            foreign, config=stranger_config(lc, foreign, other_ca, ca=other_ca / CA_CERT)
        )
        lc.start_agent(forged, config=stranger_config(lc, forged, other_ca, ca=secrets.ca))
        lc.start_agent(plain, config=bare)
        try:
            took = lc.wait_converged()
            print(f"a1 and a2 registered over HTTPS and converged in {took:.1f} s")
            for host in (a1, a2):
                code, text, status = overlay_status(host)
                assert code == 0, text
                assert status["registration"]["source"] == "master", status["registration"]
                assert status["security_warnings"] == []
                assert "WARNING" not in text, text
            state = lc.master_state(via=a1)  # over HTTPS, with the operator's certificate
            assert sorted(a["ip"] for a in state["agents"]) == sorted(
                [str(a1.address), str(a2.address)]
            )
            argv = [sys.executable, "-m", "vxnet", "master", "state", "--api", lc.master_api(m1)]
            anonymous = a1.run(argv, check=False)
            print(f"--- vxnet master state without a certificate\n{anonymous.stderr}")
            assert anonymous.returncode != 0, anonymous.stdout

            seen = {}
            for stranger in (foreign, forged, plain):
                wait_until(
                    f"{stranger.name}'s first registration to fail",
                    functools.partial(registration_failed, stranger),
                    30,
                    poll=0.5,
                )
                code, text, status = overlay_status(stranger)
                print(f"--- {stranger.name}: vxnet overlay status\n{text}")
                assert code != 0
                assert status["info"] is None
                assert f"agent {stranger.address}: not registered yet" in text
                seen[stranger.name] = text, status
            text, status = seen["foreign"]
            said = status["registration"]["last_error"]
            assert "TLS handshake failed" in said, said
            assert "certificate verify failed" in said, said
            assert said in text
            assert len(seen["plain"][1]["security_warnings"]) == 2
            # the master refused the other two in the handshake, and says whom
            refusals = lc.log_path(m1).read_text()
            for stranger in (forged, plain):
                assert f"HTTPS client ('{stranger.address}'" in refusals, refusals[-3000:]
            state = lc.master_state(via=a2)
            assert len(state["agents"]) == 2, state["agents"]
        finally:
            print(lc.logs())
        for log in tmp_path.glob("*.log"):
            text = log.read_text()
            assert secrets.token not in text, log
            assert secrets.gossip_key not in text, log
