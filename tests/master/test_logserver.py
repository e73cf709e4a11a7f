"""The replicated log's trio driver: replicas on loopback TCP in one process, and its clients."""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING, Any

import pytest
import trio

from vxnet.config import LogSettings
from vxnet.replog._client import open_log_client, request_once
from vxnet.replog._core import Heartbeat, LogTiming
from vxnet.replog._server import (
    MAX_VALUE,
    AppendUncertain,
    NotLeader,
    ReplicatedLog,
    log_addresses,
    raise_plain,
)
from vxnet.replog._sqlite import SqliteLogStorage
from vxnet.replog._storage import StorageFailure
from vxnet.replog._wire import (
    FrameReader,
    client_hello,
    encode_frame,
    encode_message,
    peer_hello,
)
from vxnet.testing.procs import free_ports

# Waiting loops poll state that changes inside the replicas (no event to wait on).
# ruff: noqa: ASYNC110

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence
    from pathlib import Path

    from vxnet.replog._storage import Entry

FAST = LogTiming(election=0.1, lease=0.3, retry=0.05, heartbeat=0.075)


class Breakable(SqliteLogStorage):
    """SQLite storage whose writes fail once ``broken`` is set (an fsync error)."""

    broken = False

    def put_entries(self, entries: Sequence[Entry], *, sync: bool = True) -> None:
        if self.broken:
            raise StorageFailure(f"{self.path}: put_entries failed: disk I/O error")
        super().put_entries(entries, sync=sync)


class Applied(list[tuple[int, bytes]]):
    def append_pair(self, position: int, value: bytes) -> None:
        self.append((position, value))


class Cluster:
    def __init__(self, tmp: Path, n: int) -> None:
        self.addresses = [("127.0.0.1", p) for p in free_ports(n)]
        self.applied = [Applied() for _ in range(n)]
        self.replicas = [
            ReplicatedLog(
                i,
                self.addresses,
                Breakable(tmp / f"r{i}" / "log.sqlite"),
                timing=FAST,
                rng=random.Random(i),
                on_apply=self.applied[i].append_pair,
            )
            for i in range(n)
        ]

    async def leader(self) -> ReplicatedLog:
        with trio.fail_after(10):
            while True:
                leaders = [r for r in self.replicas if r.replica and r.is_leader()]
                if leaders and all(
                    r.leader_address() == leaders[0].leader_address() for r in self.replicas
                ):
                    return leaders[0]
                await trio.sleep(0.02)


async def start(nursery: trio.Nursery, replicas: list[ReplicatedLog]) -> None:
    for r in replicas:
        await nursery.start(r.serve)


@pytest.fixture
async def cluster3(tmp_path: Path) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path, 3)
    async with trio.open_nursery() as nursery:
        await start(nursery, c.replicas)
        yield c
        nursery.cancel_scope.cancel()


async def test_a_single_replica_appends_and_applies_in_order(tmp_path: Path) -> None:
    c = Cluster(tmp_path, 1)
    async with trio.open_nursery() as nursery:
        await start(nursery, c.replicas)
        r = await c.leader()
        positions = [await r.append(v) for v in (b"a", b"b", b"c")]
        assert positions == sorted(positions)
        assert [v for _, v in c.applied[0] if v] == [b"a", b"b", b"c"]
        info = r.info()
        assert info["role"] == "coordinator"
        assert info["status"] == "VOTING"
        assert info["appends"] == 3
        read = r.read(0, 100)
        assert [v for _, v in read["entries"] if v] == [b"a", b"b", b"c"]
        nursery.cancel_scope.cancel()


async def test_three_replicas_agree_and_a_follower_redirects(cluster3: Cluster) -> None:
    c = cluster3
    leader = await c.leader()
    follower = next(r for r in c.replicas if r is not leader)
    with pytest.raises(
        NotLeader, match=r"does not coordinate: the coordinator is 127\.0\.0\.1"
    ) as info:
        await follower.append(b"x")
    assert info.value.leader == leader.leader_address()

    # A client that knows only the follower is sent on to the coordinator.
    async with open_log_client([c.addresses[follower.id]], answer_within=5) as client:
        positions = [await client.append(b"v%d" % i) for i in range(20)]
    assert positions == sorted(positions)
    with trio.fail_after(5):
        while not all(len([v for _, v in a if v]) == 20 for a in c.applied):
            await trio.sleep(0.02)
    assert c.applied[0] == c.applied[1] == c.applied[2]


async def test_appends_in_flight_together_share_rounds(cluster3: Cluster) -> None:
    c = cluster3
    leader = await c.leader()
    results: list[int] = []

    async def one(i: int) -> None:
        results.append(await leader.append(b"%d" % i))

    async with trio.open_nursery() as nursery:
        for i in range(200):
            nursery.start_soon(one, i)
    assert sorted(results) == sorted(set(results))
    assert len(results) == 200


async def raw_client(address: tuple[str, int], *requests: dict[str, Any]) -> list[Any]:
    stream = await trio.open_tcp_stream(*address)
    async with stream:
        await stream.send_all(
            encode_frame(client_hello()) + b"".join(encode_frame(r) for r in requests)
        )
        reader = FrameReader()
        answers: list[Any] = []
        with trio.fail_after(5):
            while len(answers) < len(requests):
                answers.extend(reader.feed(await stream.receive_some(65536)))
    return sorted(answers, key=lambda a: a["id"])


async def test_bad_client_requests_get_errors_that_say_why(cluster3: Cluster) -> None:
    c = cluster3
    leader = await c.leader()
    answers = await raw_client(
        c.addresses[leader.id],
        {"id": 1, "op": "append", "value": "text"},
        {"id": 2, "op": "append", "value": b"x" * (MAX_VALUE + 1)},
        {"id": 3, "op": "drop"},
        {"id": 4, "op": "read", "from": -1},
        {"id": 5, "op": "append", "value": b"fine"},
    )
    assert [a["ok"] for a in answers] == [False, False, False, False, True]
    assert answers[0]["error"] == "append: value is not bytes"
    assert "exceeds the limit of 1048576" in answers[1]["error"]
    assert answers[2]["error"] == "unknown op 'drop' (append, status, read)"
    assert "non-negative" in answers[3]["error"]
    assert all(a["definite"] for a in answers[:4])


async def test_garbage_and_strangers_are_dropped_and_logged(
    cluster3: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    c = cluster3
    leader = await c.leader()
    caplog.set_level(logging.WARNING, "vxnet.replog")
    for payload in (
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        encode_frame(peer_hello(5, 4)) + encode_frame(encode_message(Heartbeat(10**6, 0, 0))),
        encode_frame(client_hello()) + encode_frame({"op": "status"}),
    ):
        stream = await trio.open_tcp_stream(*c.addresses[leader.id])
        async with stream:
            await stream.send_all(payload)
            with trio.fail_after(5):
                while await stream.receive_some(4096):
                    pass  # the replica closes the connection
    text = caplog.text
    assert "dropped: frame announces 1195725856 bytes" in text  # b"GET " read as a length
    assert "replica 4 of 5 called replica" in text
    assert "the log.replicas lists differ" in text
    assert "request: no integer id" in text
    assert leader.is_leader()  # the stranger's heartbeat did not depose it
    position = await leader.append(b"still serving")
    assert leader.read(position, 1)["entries"] == [[position, b"still serving"]]


async def test_status_over_the_wire(cluster3: Cluster) -> None:
    c = cluster3
    leader = await c.leader()
    view = await request_once(c.addresses[0], {"op": "status"})
    assert view["ok"]
    assert view["leader"] == leader.leader_address()
    assert view["replicas"] == [f"{h}:{p}" for h, p in c.addresses]
    assert view["quorum"] == 2


async def test_a_disk_failure_stops_that_replica_and_the_rest_go_on(tmp_path: Path) -> None:
    c = Cluster(tmp_path, 3)
    failures: list[BaseException] = []

    async def run(r: ReplicatedLog, task_status: trio.TaskStatus[tuple[str, int]]) -> None:
        try:
            with raise_plain(StorageFailure):
                await r.serve(task_status=task_status)
        except StorageFailure as exc:
            failures.append(exc)

    async with trio.open_nursery() as nursery:
        for r in c.replicas:
            await nursery.start(run, r)
        leader = await c.leader()
        assert isinstance(leader.storage, Breakable)
        leader.storage.broken = True
        with pytest.raises(AppendUncertain, match=r"the replica stopped: .*disk I/O error"):
            await leader.append(b"doomed")
        with trio.fail_after(5):
            while not failures:
                await trio.sleep(0.01)
        assert "put_entries failed: disk I/O error" in str(failures[0])
        survivors = [r for r in c.replicas if r is not leader]
        with trio.fail_after(10):
            while not any(r.is_leader() for r in survivors):
                await trio.sleep(0.02)
        new = next(r for r in survivors if r.is_leader())
        position = await new.append(b"after")
        assert new.read(position, 1)["entries"] == [[position, b"after"]]
        nursery.cancel_scope.cancel()


def test_log_addresses_from_the_config() -> None:
    single = LogSettings(listen="0.0.0.0:61090")
    assert log_addresses(single) == (0, [("0.0.0.0", 61090)], ("0.0.0.0", 61090))
    three = LogSettings(
        listen="0.0.0.0:61090",
        replicas=("198.18.0.1:61090", "198.18.0.2:61090", "198.18.0.3:61090"),
        advertise="198.18.0.2:61090",
        quorum=2,
    )
    index, addresses, listen = log_addresses(three)
    assert index == 1
    assert addresses[2] == ("198.18.0.3", 61090)
    assert listen == ("0.0.0.0", 61090)
