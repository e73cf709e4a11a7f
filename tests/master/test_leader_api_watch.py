"""A follower stops sending clients to a leader whose API does not answer (its log still runs).

Three masters in one process on 127.0.0.1-3, real sockets: the leader's HTTP API is stopped
while its log replica goes on leading, as when its descriptors are taken or its API is wedged.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import trio

from vxnet.config import MasterConfig, parse_config
from vxnet.http import HttpClient, serve_api
from vxnet.master import MasterService
from vxnet.master._api import build_master_app
from vxnet.master._service import LEADER_API_CHECK
from vxnet.testing.procs import free_ports

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

NETWORK = """
[network]
vtep_subnet = "44.128.0.0/24"

[[network.overlays]]
name = "dcos"
subnet = "9.0.0.0/16"
prefix = 24
"""


def configs(tmp: Path) -> list[MasterConfig]:
    api, log = free_ports(2)
    replicas = ", ".join(f'"127.0.0.{i + 1}:{log}"' for i in range(3))
    out = []
    for i in range(3):
        cfg = parse_config(
            f'[master]\nlisten = "127.0.0.{i + 1}:{api}"\ndata_dir = "{tmp / f"d{i}"}"\n'
            f'[log]\nlisten = "127.0.0.{i + 1}:{log}"\nreplicas = [{replicas}]\nquorum = 2\n'
            f"{NETWORK}",
            source=f"m{i}.toml",
            role="master",
        )
        assert isinstance(cfg, MasterConfig)
        out.append(cfg)
    return out


async def until(check: Callable[[], Awaitable[bool]], within: float = 30.0) -> float:
    """Poll the async ``check`` until it is true (the seconds that took), at most ``within``."""
    start = time.monotonic()
    with trio.fail_after(within):
        while True:
            if await check():
                return time.monotonic() - start
            await trio.sleep(0.05)


async def register_at(url: str, ip: str) -> tuple[int, str | None]:
    """POST a registration to ``url`` (no redirect followed): the status and the Location."""
    async with HttpClient(timeout=5.0, keep_alive=False) as http:
        answer = await http.request(
            "POST", url + "/overlay-master/register", body=f'{{"ip": "{ip}"}}'.encode()
        )
    return answer.status, answer.header("location")


async def test_a_follower_answers_503_while_the_leaders_api_is_down(tmp_path: Path) -> None:
    cfgs = configs(tmp_path)
    masters = [MasterService(cfg) for cfg in cfgs]
    urls = [f"http://127.0.0.{i + 1}:{masters[0].api_port}" for i in range(3)]
    api_scopes: list[trio.CancelScope] = []

    async def api(i: int, task_status: trio.TaskStatus[str]) -> None:
        with trio.CancelScope() as scope:
            api_scopes.append(scope)
            app = build_master_app(masters[i])
            await serve_api(app, cfgs[i].master.listen, task_status=task_status)

    async def ready() -> bool:  # a leader, ready, and the followers know it
        leaders = [i for i, m in enumerate(masters) if m.log.is_leader()]
        if not leaders or not masters[leaders[0]].network_in_log:
            return False
        return all(masters[f].leader_url() == urls[leaders[0]] for f in range(3) if f != leaders[0])

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for m in masters:
                await nursery.start(m.serve)
            for i in range(3):
                await nursery.start(api, i)
            await until(ready)
            leader = next(i for i, m in enumerate(masters) if m.log.is_leader())
            follower = (leader + 1) % 3
            status, location = await register_at(urls[follower], "198.18.0.1")
            assert status == 307
            assert location == urls[leader] + "/overlay-master/register"

            api_scopes[leader].cancel()  # the leader's log goes on; its API is gone

            async def not_redirected() -> bool:
                return (await register_at(urls[follower], "198.18.0.2"))[0] != 307

            took = await until(not_redirected)
            assert took < 3 * LEADER_API_CHECK, took
            status, location = await register_at(urls[follower], "198.18.0.2")
            assert (status, location) == (503, None)
            assert masters[leader].log.is_leader()  # the log did not fail over

            # The API comes back: the follower redirects again.
            await nursery.start(api_again, masters[leader], cfgs[leader])

            async def redirected() -> bool:
                return (await register_at(urls[follower], "198.18.0.3"))[0] == 307

            assert await until(redirected) < 3 * LEADER_API_CHECK
            nursery.cancel_scope.cancel()


async def api_again(
    master: MasterService, cfg: MasterConfig, task_status: trio.TaskStatus[str]
) -> None:
    await serve_api(build_master_app(master), cfg.master.listen, task_status=task_status)
