"""One master in-process (its log, allocator and HTTP API on loopback): answers and refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest
import trio

from vxnet.config import MasterConfig, parse_config
from vxnet.http import serve_api
from vxnet.master._api import build_master_app
from vxnet.master._client import MasterRefused, MasterUnreachable, open_master_client
from vxnet.master._service import AllocationFailed, MasterConfigError, MasterService
from vxnet.replog._server import raise_plain
from vxnet.testing.procs import free_ports

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from contextlib import AbstractAsyncContextManager
    from pathlib import Path

SMALL = """
[network]
vtep_subnet = "44.128.0.0/29"

[[network.overlays]]
name = "dcos"
subnet = "9.0.0.0/22"
prefix = 24

[[network.overlays]]
name = "tiny"
subnet = "10.0.0.0/24"
prefix = 25
"""


def config(tmp: Path, network: str = SMALL) -> MasterConfig:
    text = (
        f'[master]\nlisten = "127.0.0.1:{free_ports(1)[0]}"\ndata_dir = "{tmp / "data"}"\n'
        f'[log]\nlisten = "127.0.0.1:{free_ports(1)[0]}"\n{network}'
    )
    parsed = parse_config(text, source="test.toml", role="master")
    assert isinstance(parsed, MasterConfig)
    return parsed


def open_master(cfg: MasterConfig) -> AbstractAsyncContextManager[tuple[MasterService, str]]:
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def running() -> AsyncIterator[tuple[MasterService, str]]:
        master = MasterService(cfg)
        async with trio.open_nursery() as nursery:
            await nursery.start(master.serve)
            url = await nursery.start(serve_api, build_master_app(master), cfg.master.listen)
            yield master, url.removeprefix("http://")
            nursery.cancel_scope.cancel()

    return running()


async def test_exhaustion_is_an_answer_and_is_counted(tmp_path: Path) -> None:
    async with (
        open_master(config(tmp_path)) as (_, url),
        open_master_client([url], patience=10) as api,
    ):
        infos = [await api.register(f"198.18.0.{i}") for i in range(1, 4)]
        states = [{o["info"]["name"]: o["state"]["status"] for o in i["overlays"]} for i in infos]
        assert states[0] == {"dcos": "STATUS_OK", "tiny": "STATUS_OK"}
        assert states[2] == {"dcos": "STATUS_OK", "tiny": "STATUS_FAILED"}
        tiny = next(o for o in infos[2]["overlays"] if o["info"]["name"] == "tiny")
        assert tiny["state"]["error"] == "tiny: no free /25 subnet left (2 of 2 in use)"
        for i in range(4, 7):
            await api.register(f"198.18.0.{i}")  # the /29 holds 6 VTEPs
        with pytest.raises(MasterRefused, match=r"HTTP 409: vtep_subnet 44\.128\.0\.0/29: no free"):
            await api.register("198.18.0.7")
        metrics = await raw(url, "GET", "/metrics")
        text = metrics["text"]
        assert 'vxnet_master_allocation_failures_total{kind="vtep_exhausted"} 1.0' in text
        assert 'vxnet_master_allocation_failures_total{kind="subnet_exhausted"}' in text
        assert 'vxnet_master_register_requests_total{result="failed"} 1.0' in text
        assert 'vxnet_master_free_subnets{network="dcos"} 0.0' in text

        deleted = await api.delete(["198.18.0.1", "198.18.0.99"])
        assert deleted == {"deleted": ["198.18.0.1"], "unknown": ["198.18.0.99"]}
        again = await api.register("198.18.0.7")  # the freed VTEP and subnets are reused
        vxlan = again["overlays"][0]["backend"]["vxlan"]
        assert vxlan["vtep_ip"] == infos[0]["overlays"][0]["backend"]["vxlan"]["vtep_ip"]


async def raw(address: str, method: str, path: str, body: bytes = b"") -> dict[str, Any]:
    host, _, port = address.rpartition(":")
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        head = f"{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Length: {len(body)}\r\n"
        await stream.send_all(head.encode() + b"Connection: close\r\n\r\n" + body)
        data = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some(65536):
                data += chunk
    head_text, _, payload = data.partition(b"\r\n\r\n")
    lines = head_text.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return {"status": int(lines[0].split()[1]), "headers": headers, "text": payload.decode()}


async def test_a_master_without_a_quorum_answers_503_with_retry_after(tmp_path: Path) -> None:
    me, a, b = free_ports(3)
    log = f'replicas = ["127.0.0.1:{me}", "127.0.0.1:{a}", "127.0.0.1:{b}"]\nquorum = 2\n'
    cfg = parse_config(
        f'[master]\nlisten = "127.0.0.1:{free_ports(1)[0]}"\ndata_dir = "{tmp_path / "d"}"\n'
        f'[log]\nlisten = "127.0.0.1:{me}"\n{log}\n{SMALL}',
        source="t.toml",
        role="master",
    )
    assert isinstance(cfg, MasterConfig)
    async with open_master(cfg) as (_, url):
        answer = await raw(url, "POST", "/overlay-master/register", b'{"ip": "198.18.0.1"}')
        assert answer["status"] == 503
        assert answer["headers"]["retry-after"] == "1"
        assert "no master leads yet" in answer["text"]
        async with open_master_client([url], patience=1.5, max_wait=0.1) as api:
            with pytest.raises(MasterUnreachable, match="no master leads yet"):
                await api.register("198.18.0.1")


async def test_a_network_added_later_is_allocated_on_the_next_registration(
    tmp_path: Path,
) -> None:
    first = SMALL.split('[[network.overlays]]\nname = "tiny"')[0]
    async with (
        open_master(config(tmp_path, network=first)) as (_, url),
        open_master_client([url]) as api,
    ):
        info = await api.register("198.18.0.1")
        assert [o["info"]["name"] for o in info["overlays"]] == ["dcos"]
    async with (
        open_master(config(tmp_path)) as (master, url),
        open_master_client([url]) as api,
    ):
        with trio.fail_after(5):
            while len(master.allocator.network.overlays) < 2:  # noqa: ASYNC110 - polls state
                await trio.sleep(0.02)  # the leader writes its new [network] to the log
        again = await api.register("198.18.0.1")
        assert [o["info"]["name"] for o in again["overlays"]] == ["dcos", "tiny"]
        assert again["overlays"][0] == info["overlays"][0]


async def test_removing_a_network_agents_use_is_refused_at_start(tmp_path: Path) -> None:
    async with (
        open_master(config(tmp_path)) as (_, url),
        open_master_client([url]) as api,
    ):
        await api.register("198.18.0.1")
        await api.register("198.18.0.2")
    without_tiny = SMALL.split('[[network.overlays]]\nname = "tiny"')[0]
    with pytest.raises(MasterConfigError, match=r"network tiny: removed but agents 198\.18\.0\.1"):
        await start_and_stop(config(tmp_path, network=without_tiny))

    # The same through the command: exit status 2 and the reason.
    (tmp_path / "m.toml").write_text(
        f'[master]\nlisten = "127.0.0.1:{free_ports(1)[0]}"\ndata_dir = "{tmp_path / "data"}"\n'
        f'[log]\nlisten = "127.0.0.1:{free_ports(1)[0]}"\n{without_tiny}'
    )
    result = await trio.to_thread.run_sync(
        lambda: subprocess.run(
            [sys.executable, "-m", "vxnet", "master", "-c", str(tmp_path / "m.toml")],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    )
    assert result.returncode == 2
    assert "network tiny: removed but agents 198.18.0.1, 198.18.0.2 hold" in result.stderr


async def start_and_stop(cfg: MasterConfig) -> None:
    with raise_plain(MasterConfigError):
        async with open_master(cfg):
            pass


async def test_master_state_prints_a_table(tmp_path: Path) -> None:
    async with (
        open_master(config(tmp_path)) as (_, url),
        open_master_client([url]) as api,
    ):
        await api.register("198.18.0.1")
        await api.register("198.18.0.2", ["dcos"], docker_bridge=False)
        result = await trio.to_thread.run_sync(
            lambda: subprocess.run(
                [sys.executable, "-m", "vxnet", "master", "state", "--api", url],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["AGENT", "VTEP", "IP", "VTEP", "MAC", "DCOS", "TINY"]
    assert lines[1].split() == [
        "198.18.0.1",
        "44.128.0.1/29",
        "70:b3:d5:80:00:01",
        "9.0.0.0/24",
        "10.0.0.0/25",
    ]
    assert lines[2].split()[-2:] == ["9.0.1.0/24", "-"]
    assert "dcos: 2 of 4 in use, 2 free" in result.stdout
    assert lines[-1] == f"leader: http://{url} (the master asked)"


async def test_addresses_no_agent_can_have_are_refused_before_the_log(tmp_path: Path) -> None:
    bad = ["0.0.0.0", "0.1.2.3", "127.0.0.1", "169.254.1.1", "224.0.0.1", "239.255.255.250"]
    bad += ["255.255.255.255", "240.0.0.1"]
    async with (
        open_master(config(tmp_path)) as (master, url),
        open_master_client([url], patience=10) as api,
    ):
        for ip in bad:
            answer = await raw(
                url, "POST", "/overlay-master/register", f'{{"ip": "{ip}"}}'.encode()
            )
            assert answer["status"] == 400, (ip, answer)
            assert f"'{ip}' cannot be an agent's address" in answer["text"], answer["text"]
        with pytest.raises(AllocationFailed, match="a loopback address"):
            await master.register("127.0.0.2", None)
        await api.register("198.18.0.1")  # waits for the log; refused ones never reached it
        state = await raw(url, "GET", "/overlay-master/state")
        assert [a["ip"] for a in json.loads(state["text"])["agents"]] == ["198.18.0.1"]
        assert master.allocator.registrations == 1
        assert master.allocator.failures["bad_command"] == 0


async def test_deeply_nested_json_is_a_400_with_the_reason(tmp_path: Path) -> None:
    async with open_master(config(tmp_path)) as (_, url):
        for body in ("[" * 100_000 + "]" * 100_000, '{"ip": ' + "[" * 40 + "]" * 40 + "}"):
            answer = await raw(url, "POST", "/overlay-master/register", body.encode())
            assert answer["status"] == 400, answer
            assert "nested deeper than 32 levels" in answer["text"]
