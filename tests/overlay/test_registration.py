"""An agent's registration: with a master in-process, then from disk while no master answers."""

from __future__ import annotations

import contextlib
import json
import random
from typing import TYPE_CHECKING, Any

import trio

from vxnet.config import MasterConfig, parse_config
from vxnet.http import serve_api
from vxnet.master._api import build_master_app
from vxnet.master._service import MasterService
from vxnet.overlay._registration import (
    ALLOCATION_FILE,
    Registration,
    describe,
    load_allocation,
    save_allocation,
)
from vxnet.records import AgentInfo
from vxnet.testing.procs import free_ports

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    import pytest


def master_config(tmp: Path) -> MasterConfig:
    api, log = free_ports(2)
    cfg = parse_config(
        f'[master]\nlisten = "127.0.0.1:{api}"\ndata_dir = "{tmp / "master"}"\n'
        f'[log]\nlisten = "127.0.0.1:{log}"\n',
        source="master.toml",
        role="master",
    )
    assert isinstance(cfg, MasterConfig)
    return cfg


async def test_registers_saves_and_restarts_from_disk(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="vxnet.overlay")
    cfg = master_config(tmp_path)
    seen: list[AgentInfo] = []
    state = tmp_path / "agent"
    master = MasterService(cfg)
    async with trio.open_nursery() as nursery:
        await nursery.start(master.serve)
        url = await nursery.start(serve_api, build_master_app(master), cfg.master.listen)
        reg = Registration([url.removeprefix("http://")], "198.18.0.11", state, refresh=0.2)
        nursery.start_soon(reg.run, seen.append)
        with trio.fail_after(10):
            while not seen:  # noqa: ASYNC110 - polls the callback's list
                await trio.sleep(0.02)
        with trio.fail_after(10):
            while reg.attempts < 3:  # noqa: ASYNC110 - two refreshes after the first answer
                await trio.sleep(0.02)
        assert len(seen) == 1  # refreshes that change nothing hand nothing over
        assert reg.attempts >= 2
        nursery.cancel_scope.cancel()
    info = seen[0].to_json()
    assert info["ip"] == "198.18.0.11"
    assert info["overlays"][0]["subnet"] == "9.0.0.0/24"
    vxlan = info["overlays"][0]["backend"]["vxlan"]
    said = [r.getMessage() for r in caplog.records if "allocation from the masters" in r.message]
    assert said == [
        f"allocation from the masters: VTEP {vxlan['vtep_ip']} {vxlan['vtep_mac']}; dcos 9.0.0.0/24"
    ], "said once, not at every refresh"
    assert json.loads((state / ALLOCATION_FILE).read_text()) == info

    # No master answers now: the agent has its allocation at once, from disk, and backs off.
    dead = f"127.0.0.1:{free_ports(1)[0]}"
    again = Registration(
        [dead], "198.18.0.11", state, backoff=(0.05, 0.2), patience=0.1, rng=random.Random(1)
    )
    assert again.source == "disk"
    got: list[dict[str, Any]] = []
    with trio.move_on_after(2):
        await again.run(lambda agent: got.append(agent.to_json()))
    assert got == [info]
    assert again.failures >= 3
    assert again.last_error is not None
    assert "nothing in" in again.last_error
    bounds = [min(0.05 * 2**i, 0.2) for i in range(len(again.waits))]
    assert all(0 <= w <= b for w, b in zip(again.waits, bounds, strict=True))


def test_describe_names_the_vtep_each_subnet_and_each_failure() -> None:
    info = {
        "ip": "198.18.0.11",
        "overlays": [
            {
                "info": {"name": "dcos"},
                "subnet": "9.0.1.0/24",
                "subnet6": "fd01:b:0:0:1::/80",
                "backend": {"vxlan": {"vtep_ip": "44.128.0.2/20", "vtep_mac": "70:b3:d5:80:00:02"}},
                "state": {"status": "STATUS_OK"},
            },
            {
                "info": {"name": "tiny"},
                "state": {"status": "STATUS_FAILED", "error": "no free /25 subnet left"},
            },
        ],
    }
    assert describe(AgentInfo.from_json(info)) == (
        "VTEP 44.128.0.2/20 70:b3:d5:80:00:02; dcos 9.0.1.0/24 fd01:b:0:0:1::/80; "
        "tiny FAILED (no free /25 subnet left)"
    )
    assert describe(AgentInfo("198.18.0.11")) == "no networks"


def test_a_saved_allocation_of_another_agent_or_a_broken_file_is_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    save_allocation(tmp_path, AgentInfo.from_json({"ip": "198.18.0.12", "overlays": []}))
    saved = load_allocation(tmp_path, "198.18.0.12")
    assert saved is not None
    assert saved.to_json() == {"ip": "198.18.0.12", "overlays": []}
    assert load_allocation(tmp_path, "198.18.0.11") is None
    assert "saved for agent 198.18.0.12, not 198.18.0.11" in caplog.text
    (tmp_path / ALLOCATION_FILE).write_text("{not json")
    assert load_allocation(tmp_path, "198.18.0.12") is None
    assert "cannot use the saved allocation" in caplog.text
    assert not list(tmp_path.glob(".*.tmp"))


async def test_an_answer_that_is_not_an_agent_info_is_a_failed_registration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = [{"ip": "198.18.0.11", "overlays": [{"info": {}}]}]

    class Client:
        async def register(self, ip: str, networks: object, **flags: bool) -> dict[str, Any]:
            return answers[0]

    @contextlib.asynccontextmanager
    async def fake_client(masters: object, **options: object) -> AsyncIterator[Client]:
        yield Client()

    monkeypatch.setattr("vxnet.overlay._registration.open_master_client", fake_client)
    seen: list[AgentInfo] = []
    reg = Registration(["m:1"], "198.18.0.11", tmp_path, backoff=(0.05, 0.05), rng=random.Random(1))
    with trio.move_on_after(1):
        await reg.run(seen.append)
    assert seen == []
    assert reg.failures == reg.attempts >= 2
    assert reg.last_error == (
        "the masters answered a bad AgentInfo: overlays[0].info.name: missing"
    )
    assert not (tmp_path / ALLOCATION_FILE).exists()
