"""Three real ``vxnet master`` processes: registrations through a leader failover."""

from __future__ import annotations

import ipaddress
import json
import signal
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio

from vxnet.master._client import open_master_client
from vxnet.testing.procs import MasterProcesses
from waiting import wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

NETWORK = """
[network]
vtep_subnet = "44.128.0.0/20"
vtep_subnet6 = "fd01:a::/64"

[[network.overlays]]
name = "dcos"
subnet = "9.0.0.0/8"
prefix = 24

[[network.overlays]]
name = "dcos6"
subnet6 = "fd01:b::/64"
prefix6 = 80
"""
AGENTS = [f"198.18.{1 + i // 250}.{1 + i % 250}" for i in range(200)]
CLIENTS = 16
TOKEN = "test-token-1234"  # noqa: S105 - a test fixture, not a secret


@pytest.fixture
def masters(tmp_path: Path) -> Iterator[MasterProcesses]:
    with MasterProcesses(tmp_path, 3, NETWORK, extra=f'token = "{TOKEN}"') as m:
        m.start_all()
        yield m


@pytest.fixture(params=["plain", "tls"])
def any_masters(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MasterProcesses]:
    """Three masters, with TLS off and on (log port and API)."""
    tls = request.param == "tls"
    with MasterProcesses(tmp_path, 3, NETWORK, extra=f'token = "{TOKEN}"', tls=tls) as m:
        m.start_all()
        yield m


def tls_flags(m: MasterProcesses) -> list[str]:
    """The ``vxnet`` command's flags for the operator certificate, with TLS on."""
    if m.client_tls is None:
        return []
    files = m.client_tls.files
    return ["--ca", str(files.ca), "--cert", str(files.cert), "--key", str(files.key)]


def holdings(state: dict[str, Any]) -> dict[str, list[str]]:
    held: dict[str, list[str]] = {"subnet": [], "subnet6": [], "vtep_ip": [], "vtep_mac": []}
    for agent in state["agents"]:
        vxlans = {str(o["backend"]["vxlan"]) for o in agent["overlays"]}
        assert len(vxlans) == 1, "one VTEP per agent"
        vxlan = agent["overlays"][0]["backend"]["vxlan"]
        held["vtep_ip"].append(vxlan["vtep_ip"])
        held["vtep_mac"].append(vxlan["vtep_mac"])
        assert vxlan.get("vtep_ip6"), f"{agent['ip']} has no IPv6 VTEP"
        for o in agent["overlays"]:
            for key in ("subnet", "subnet6"):
                if key in o:
                    held[key].append(o[key])
    return held


async def test_registrations_survive_a_leader_sigkill(any_masters: MasterProcesses) -> None:
    m = any_masters
    await m.formed()
    first = await m.leader()
    urls = [m.url(i) for i in range(m.n)]
    acked: dict[str, dict[str, Any]] = {}
    queue = list(AGENTS)
    killed = trio.Event()

    async def client() -> None:
        async with open_master_client(urls, token=TOKEN, max_wait=0.2, tls=m.client_tls) as api:
            while queue:
                ip = queue.pop()
                acked[ip] = await api.register(ip)
                if len(acked) >= len(AGENTS) // 2 and not killed.is_set():
                    killed.set()
                    m.kill(first)

    async with trio.open_nursery() as nursery:
        for _ in range(CLIENTS):
            nursery.start_soon(client)
    assert killed.is_set()
    assert len(acked) == len(AGENTS)
    second = await m.leader()
    assert second != first

    async with open_master_client(urls, token=TOKEN, tls=m.client_tls) as api:
        state = await api.state()
        by_ip = {a["ip"]: a for a in state["agents"]}
        assert set(by_ip) == set(AGENTS)
        for ip, info in acked.items():
            assert by_ip[ip] == info, f"{ip}'s allocation changed after the failover"
        for kind, values in holdings(state).items():
            assert len(values) == len(set(values)), f"a {kind} is held twice"
        for agent in state["agents"]:
            dcos = next(o for o in agent["overlays"] if o["info"]["name"] == "dcos")
            subnet = ipaddress.IPv4Network(dcos["subnet"])
            assert subnet.subnet_of(ipaddress.IPv4Network("9.0.0.0/8"))
        # Registering again answers the same allocation and writes nothing.
        written = (await m.status(second) or {})["log"]["appends"]
        assert await api.register(AGENTS[0]) == acked[AGENTS[0]]
        assert (await m.status(second) or {})["log"]["appends"] == written

    # The killed master comes back, catches up and follows; a request to it reaches the leader.
    m.start(first)
    with trio.fail_after(30):
        while True:
            view = await m.status(first)
            if view and view["log"] and view["log"]["status"] == "VOTING" and view["leader"]:
                break
            await trio.sleep(0.1)
    result = await trio.to_thread.run_sync(
        lambda: subprocess.run(
            [
                *(sys.executable, "-m", "vxnet", "master", "state", "--api", m.url(first)),
                *("--json", *tls_flags(m)),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    )
    assert result.returncode == 0, result.stderr
    assert {a["ip"] for a in json.loads(result.stdout)["agents"]} == set(AGENTS)


def test_bad_requests_and_tokens(masters: MasterProcesses) -> None:
    m = masters
    leader = trio.run(m.leader)
    url = f"{m.url(leader)}/overlay-master"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(trust_env=False, timeout=5) as http:
        r = http.post(f"{url}/register", json={"ip": "198.18.0.5"})
        assert r.status_code == 401
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        r = http.post(
            f"{url}/register", json={"ip": "198.18.0.5"}, headers={"Authorization": "Bearer no"}
        )
        assert r.status_code == 401
        cases = [
            (b"{", "body is not JSON"),
            (b"[]", "body must be a JSON object"),
            (b'{"ip": "198.18.0.5", "colour": "red"}', "unknown field 'colour'"),
            (b'{"ip": "198.18.0"}', "ip: '198.18.0' is not an IPv4 address"),
            (b'{"networks": ["dcos"]}', "ip: missing"),
            (b'{"ip": "198.18.0.5", "networks": ["nope"]}', "unknown network 'nope'"),
            (b'{"ip": "198.18.0.5", "mesos_bridge": "yes"}', "mesos_bridge: expected bool"),
        ]
        for body, error in cases:
            r = http.post(f"{url}/register", content=body, headers=auth)
            assert r.status_code == 400, body
            assert error in r.json()["error"], (body, r.json())
        r = http.get(f"{url}/state")
        assert r.json()["agents"] == [], "a refused request must write nothing"

        follower = next(i for i in m.running() if i != leader)
        deadline = time.monotonic() + 10
        while not (trio.run(m.status, follower) or {}).get("leader"):
            assert time.monotonic() < deadline, "the follower never learned the leader"
            time.sleep(0.05)
        r = http.post(
            f"{m.url(follower)}/overlay-master/register", json={"ip": "198.18.0.5"}, headers=auth
        )
        assert r.status_code == 307
        assert r.headers["Location"] == f"{url}/register"

        r = http.post(
            f"{url}/register",
            json={"ip": "198.18.0.5", "networks": ["dcos"], "docker_bridge": False},
            headers=auth,
        )
        assert r.status_code == 201
        info = r.json()
        assert [o["info"]["name"] for o in info["overlays"]] == ["dcos"]
        assert "docker_bridge" not in info["overlays"][0]

        r = http.post(f"{url}/agents/delete", json={"agents": ["198.18.0.5"]}, headers=auth)
        assert r.status_code == 200
        assert r.json() == {"deleted": ["198.18.0.5"], "unknown": []}
        r = http.post(f"{url}/agents/delete", json={"agents": "x"}, headers=auth)
        assert r.status_code == 400
        metrics = http.get(f"{m.url(leader)}/metrics").text
        assert 'vxnet_master_register_requests_total{result="bad_request"} 7.0' in metrics
        assert "vxnet_master_is_leader 1.0" in metrics
        assert "vxnet_master_log_append_seconds_count" in metrics


POLICY = (
    NETWORK.replace(
        'vtep_subnet6 = "fd01:a::/64"\n', 'vtep_subnet6 = "fd01:a::/64"\nisolation = false\n'
    )
    + 'allow_hosts = ["198.51.100.0/24"]\n\n'
    + '[[network.allow]]\nfrom = "dcos"\nto = "dcos6"\nports = ["tcp/5432"]\n'
)


def test_sighup_puts_a_new_network_policy_in_force_and_a_bad_file_changes_nothing(
    masters: MasterProcesses,
) -> None:
    m = masters
    leader = trio.run(m.leader)

    def network() -> dict[str, Any]:
        with httpx.Client(trust_env=False, timeout=5, follow_redirects=True) as http:
            return dict(http.get(f"{m.url(leader)}/overlay-master/state").json()["network"])

    assert network()["isolation"] is True  # the default: walled gardens
    assert network()["allow"] == []
    url = f"{m.url(leader)}/overlay-master/network"
    with httpx.Client(trust_env=False, timeout=30, follow_redirects=True) as http:
        held = http.get(url).json()
        assert held["network"] == network()
        # a long poll with the version in force waits, and answers the same at its end
        began = time.monotonic()
        same = http.get(url, params={"after": held["version"], "wait": "0.5"}).json()
        assert same["version"] == held["version"]
        assert time.monotonic() - began >= 0.5
        for params in ({"wait": "99"}, {"wait": "soon"}, {"after": "x" * 65}):
            assert http.get(url, params=params).status_code == 400, params
    answered: dict[str, Any] = {}

    def long_poll() -> None:
        with httpx.Client(trust_env=False, timeout=30, follow_redirects=True) as http:
            answer = http.get(url, params={"after": held["version"], "wait": "20"})
            answered.update(answer.json(), at=time.monotonic())

    poller = threading.Thread(target=long_poll)
    poller.start()
    m.network = POLICY
    for i in range(m.n):
        m.config(i).write_text(m.config_text(i))
    started = time.monotonic()
    for i in range(m.n):
        m.procs[i].send_signal(signal.SIGHUP)
    took = wait_until("the new policy in the state", lambda: network()["isolation"] is False, 10)
    poller.join(25)
    print(
        f"policy in force {took:.2f} s after the SIGHUPs; the long poll answered "
        f"{answered['at'] - started:.2f} s after them"
    )
    assert answered["network"]["isolation"] is False
    assert answered["version"] != held["version"]
    assert answered["at"] - started < 5.0  # not the 20 s of its wait: the change woke it
    state = network()
    assert state["allow"] == [{"from": "dcos", "to": "dcos6", "ports": ["tcp/5432"]}]
    assert state["overlays"][1]["allow_hosts"] == ["198.51.100.0/24"]
    # a bad file: logged, nothing changes, the master keeps running
    m.network = POLICY.replace('to = "dcos6"', 'to = "stage"')
    m.config(leader).write_text(m.config_text(leader))
    m.procs[leader].send_signal(signal.SIGHUP)
    log = m.root / f"replica{leader}.log"
    wait_until("the refusal in the log", lambda: "is not used" in log.read_text(), 10)
    assert "no network 'stage'" in log.read_text()
    assert network() == state
    assert m.procs[leader].poll() is None
