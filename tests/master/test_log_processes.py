"""Three real ``vxnet log serve`` processes on loopback: SIGKILL the coordinator under load."""

from __future__ import annotations

import itertools
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest
import trio

from vxnet.replog._client import (
    AppendUncertain,
    LogUnavailable,
    open_log_client,
    request_once,
)
from vxnet.testing.procs import LogProcesses

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

CLIENTS = 4


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LogProcesses]:
    with LogProcesses(tmp_path, 3) as c:
        c.start_all()
        yield c


async def read_all(c: LogProcesses, i: int) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    while True:
        answer = await request_once(c.addresses[i], {"op": "read", "from": len(out)})
        assert answer["ok"], answer
        assert answer["snapshot"] is None
        batch = [(p, v) for p, v in answer["entries"]]
        if not batch:
            return out
        assert batch[0][0] == len(out)
        out.extend(batch)


async def wait_caught_up(c: LogProcesses, goal: int, within: float = 30.0) -> list[dict[str, Any]]:
    views: list[dict[str, Any] | None] = []
    with trio.move_on_after(within):
        while True:
            views = [await c.status(i) for i in range(c.n)]
            if all(v is not None and v["commit"] >= goal for v in views):
                return [v for v in views if v is not None]
            await trio.sleep(0.1)
    pytest.fail(f"replicas did not reach commit {goal} in {within} s: {views}")


async def test_appends_resume_after_the_coordinator_is_killed(cluster: LogProcesses) -> None:
    c = cluster
    await c.formed()
    first = await c.leader()
    acked: dict[bytes, tuple[int, float]] = {}  # value -> (position, when acknowledged)
    uncertain: set[bytes] = set()
    counter = itertools.count()
    killed_at: list[float] = []
    stop = trio.Event()

    async def client(k: int) -> None:
        async with open_log_client(c.addresses, answer_within=5.0) as log:
            while not stop.is_set():
                value = f"client{k}-{next(counter)}".encode()
                try:
                    position = await log.append(value)
                except AppendUncertain:
                    uncertain.add(value)
                    continue
                except LogUnavailable:
                    continue  # certainly not appended
                acked[value] = (position, trio.current_time())

    async with trio.open_nursery() as nursery:
        for k in range(CLIENTS):
            nursery.start_soon(client, k)
        with trio.fail_after(20):
            while len(acked) <= 100:  # noqa: ASYNC110 - the clients fill it
                await trio.sleep(0.02)
        before = len(acked)
        c.kill(first)  # SIGKILL
        killed_at.append(trio.current_time())
        second = await c.leader(within=10)
        with trio.fail_after(20):
            while sum(t > killed_at[0] + 0.01 for _, t in acked.values()) <= 100:  # noqa: ASYNC110
                await trio.sleep(0.02)
        stop.set()

    assert before > 50, f"only {before} appends before the kill"
    after = [v for v, (_, t) in acked.items() if t > killed_at[0] + 0.01]
    assert len(after) > 50, f"appends did not resume: {len(after)} after the kill"
    assert second != first

    c.start(first)  # the killed replica comes back and catches up
    top = max(p for p, _ in acked.values())
    await wait_caught_up(c, top + 1)
    logs = [await read_all(c, i) for i in range(c.n)]
    shortest = min(len(x) for x in logs)
    assert shortest > top
    for x in logs[1:]:
        assert x[:shortest] == logs[0][:shortest], "replicas disagree on the log"
    seen: dict[bytes, list[int]] = {}
    for position, value in logs[0]:
        if value:  # b"" is a no-op filling a hole
            seen.setdefault(value, []).append(position)
    for value, (position, _) in acked.items():
        assert seen.get(value) == [position], (
            f"{value!r} acked at {position}, log has {seen.get(value)}"
        )
    unexplained = set(seen) - set(acked) - uncertain
    assert not unexplained, f"values nobody appended: {sorted(unexplained)[:5]}"
    assert all(len(p) == 1 for p in seen.values()), "a value is in the log twice"


async def test_cli_status_append_and_read(cluster: LogProcesses) -> None:
    c = cluster
    await c.leader()
    replicas = ",".join(f"{h}:{p}" for h, p in c.addresses)

    def vxnet(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "vxnet", "log", *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    appended = await trio.to_thread.run_sync(
        vxnet, "append", "--config", str(c.config(1)), "alpha", "beta"
    )
    assert appended.returncode == 0, appended.stderr
    positions = [int(x) for x in appended.stdout.split()]
    assert len(positions) == 2
    assert positions[1] > positions[0]

    status = await trio.to_thread.run_sync(vxnet, "status", "--replicas", replicas)
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[0].split()[:3] == ["REPLICA", "ROLE", "STATUS"]
    assert sum("coordinator" in line for line in lines) == 1

    read = await trio.to_thread.run_sync(
        vxnet, "read", "--replicas", f"{c.addresses[2][0]}:{c.addresses[2][1]}"
    )
    assert read.returncode == 0, read.stderr
    assert f"{positions[0]}\talpha" in read.stdout.splitlines()

    c.kill(0)
    status = await trio.to_thread.run_sync(vxnet, "status", "--replicas", replicas)
    assert status.returncode == 1
    assert "unreachable" in status.stdout.splitlines()[1]

    bad = await trio.to_thread.run_sync(vxnet, "append", "--replicas", "nohost", "x")
    assert bad.returncode == 2
    assert "--replicas: 'nohost' has no port" in bad.stderr
