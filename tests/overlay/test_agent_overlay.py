"""Real processes in lab namespaces: one master, two agents; the overlay carries traffic."""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Any

import pytest

from vxnet.lab import Host, Lab

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable, Iterator
    from pathlib import Path

pytestmark = pytest.mark.lab


def wait_until(what: str, check: Callable[[], bool], timeout: float = 30.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def start(host: Host, tmp: Path, role: str, text: str) -> subprocess.Popen[bytes]:
    config = tmp / f"{host.name}.toml"
    config.write_text(text)
    argv = [sys.executable, "-m", "vxnet", role, "-c", str(config)]
    with (tmp / f"{host.name}.log").open("wb") as log:
        return host.spawn(argv, stdout=log, stderr=log)  # the child keeps its own descriptor


def agent_config(host: Host, master: Host, seed: Host, tmp: Path) -> str:
    return (
        f'[agent]\nmasters = ["{master.address}:61080"]\nip = "{host.address}"\n'
        f'state_dir = "{tmp / host.name}"\ncni_dir = "{tmp / host.name / "cni"}"\n'
        f'[gossip]\nname = "{host.name}"\nbind = "{host.address}:7946"\n'
        f'seeds = ["{seed.address}:7946"]\nprofile = "local"\n'
    )


def routes(host: Host) -> list[dict[str, Any]]:
    out = host.run(["ip", "-j", "route", "show", "proto", "44"], check=False).stdout
    return list(json.loads(out)) if out.strip() else []


def bridge_ip(host: Host) -> str | None:
    out = host.run(["ip", "-j", "-4", "addr", "show", "dev", "m-dcos"], check=False).stdout
    if not out.strip():
        return None
    for link in json.loads(out):
        for a in link.get("addr_info", []):
            return str(a["local"])
    return None


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[Lab, Path]]:
    with Lab(["master", "agent1", "agent2"]) as lab:
        yield lab, tmp_path


def test_two_agents_reach_each_other_and_a_dead_one_is_removed(cluster: tuple[Lab, Path]) -> None:
    lab, tmp = cluster
    master, a1, a2 = lab.hosts
    start(
        master,
        tmp,
        "master",
        f'[master]\nlisten = "{master.address}:61080"\ndata_dir = "{tmp / "master"}"\n'
        '[log]\nlisten = "127.0.0.1:61090"\n',
    )
    start(a1, tmp, "agent", agent_config(a1, master, a1, tmp))
    second = start(a2, tmp, "agent", agent_config(a2, master, a1, tmp))

    def logs() -> str:
        return "\n".join(
            f"--- {h.name}\n{(tmp / f'{h.name}.log').read_text()[-1500:]}" for h in lab.hosts
        )

    try:
        wait_until("routes on both agents", lambda: bool(routes(a1)) and bool(routes(a2)))
    except BaseException:
        print(logs())
        raise
    ip1, ip2 = bridge_ip(a1), bridge_ip(a2)
    assert ip1 is not None
    assert ip2 is not None
    ping = a1.run(["ping", "-c", "3", "-i", "0.2", "-W", "2", "-I", ip1, ip2], check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr + logs()
    fdb = a1.run(["bridge", "fdb", "show", "dev", "vtep1024"]).stdout
    assert f"dst {a2.address} self permanent" in fdb

    second.kill()  # SIGKILL: agent1 drops agent2's routes, neighbours and FDB entries
    took = wait_until("agent2's routes gone from agent1", lambda: not routes(a1), timeout=60)
    assert f"dst {a2.address}" not in a1.run(["bridge", "fdb", "show", "dev", "vtep1024"]).stdout
    print(f"agent2's entries removed {took:.1f} s after its SIGKILL")
