"""The trio driver on real loopback sockets: join, leave, hostile input, stream caps."""

from __future__ import annotations

import os
import random
from typing import TYPE_CHECKING

import pytest
import trio

from vxnet.config import GossipSettings
from vxnet.gossip import GossipService

if TYPE_CHECKING:
    from collections.abc import Callable


def settings(name: str, seeds: tuple[str, ...] = (), keys: tuple[str, ...] = ()) -> GossipSettings:
    return GossipSettings(name=name, bind="127.0.0.1:0", seeds=seeds, keys=keys, profile="local")


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    """Poll ``condition`` until it holds; fail the test if it does not within ``seconds``."""
    with trio.move_on_after(seconds):
        while True:
            if condition():
                return
            await trio.sleep(0.05)
    pytest.fail(f"condition not met within {seconds:g} s")


def statuses(service: GossipService) -> dict[str, str]:
    return {m["name"]: m["status"] for m in service.members()}


async def test_two_nodes_join_and_one_leaves() -> None:
    a = GossipService(settings("a"), role="agent")
    async with trio.open_nursery() as nursery:
        a_addr = await nursery.start(a.serve)
        b = GossipService(settings("b", (f"{a_addr[0]}:{a_addr[1]}",)), role="master")
        await nursery.start(b.serve)
        await until(
            lambda: (
                statuses(a) == {"a": "alive", "b": "alive"}
                and statuses(b) == {"a": "alive", "b": "alive"}
            )
        )
        assert {m["name"]: m["tags"]["role"] for m in a.members()} == {"a": "agent", "b": "master"}
        await b.leave(grace=2)
        await until(lambda: statuses(a).get("b") == "left")
        nursery.cancel_scope.cancel()


async def test_hostile_packets_and_streams_are_counted_and_dropped() -> None:
    a = GossipService(settings("a"), role="agent")
    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(a.serve)
        udp = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        with udp:
            for payload in (
                b"",
                b"\x07\xff",
                b"\x09" + os.urandom(200),
                b"\x00\x81\xa5SeqNo",
                b"\x0c\x00\x00\x00\x00\x00",
                os.urandom(1400),
            ):
                await udp.sendto(payload, (host, port))
        # A stream that promises 20 MiB of encrypted data, and one of garbage.
        for junk in (b"\x0a\x7f\xff\xff\xff" + b"x" * 100, os.urandom(300)):
            stream = await trio.open_tcp_stream(host, port)
            async with stream:
                await stream.send_all(junk)
                await stream.send_eof()
                with trio.fail_after(5):
                    assert await stream.receive_some(100) == b""
        await until(lambda: a.core.stats.bad_packets >= 6)
        # The node still works: another node can join it.
        b = GossipService(settings("b", (f"{host}:{port}",)), role="agent")
        await nursery.start(b.serve)
        await until(lambda: statuses(a).get("b") == "alive")
        nursery.cancel_scope.cancel()


async def test_incoming_streams_are_capped() -> None:
    a = GossipService(settings("a"), role="agent")
    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(a.serve)
        limit = a.timing.max_push_pull_requests
        streams = [await trio.open_tcp_stream(host, port) for _ in range(limit + 5)]
        try:
            await until(lambda: a.core.stats.errors.get("too many streams", 0) >= 5)
        finally:
            for s in streams:
                await s.aclose()
        nursery.cancel_scope.cancel()


async def test_encrypted_nodes_ignore_a_node_without_the_key() -> None:
    key = "T9jncgl9mbLus+baTTa7q7nPSUrXwbDi2dhbtqir37s="
    other = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
    a = GossipService(settings("a", keys=(key,)), role="agent")
    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(a.serve)
        seed = (f"{host}:{port}",)
        b = GossipService(settings("b", seed, keys=(key,)), role="agent")
        await nursery.start(b.serve)
        intruder = GossipService(settings("x", seed, keys=(other,)), role="agent")
        await nursery.start(intruder.serve)
        await until(lambda: statuses(a).get("b") == "alive")
        # Watched over a second of the intruder's attempts (and until one was refused), never
        # once a member.
        with trio.fail_after(10):
            watch_until = trio.current_time() + 1.0
            while trio.current_time() < watch_until or a.core.stats.bad_packets == 0:
                assert "x" not in statuses(a)
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()


async def test_store_changes_reach_subscribers_and_a_slow_one_is_cut_off() -> None:
    a = GossipService(settings("a"), role="agent")
    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(a.serve)
        b = GossipService(settings("b", (f"{host}:{port}",)), role="agent")
        await nursery.start(b.serve)
        await until(lambda: statuses(a).get("b") == "alive" and statuses(b).get("a") == "alive")
        feed = b.subscribe("tasks/")
        slow = b.subscribe("tasks/", buffer=2)
        a.put("overlay/a", {"vtep": "44.128.0.1"})  # not under the prefix
        for i in range(5):
            a.put(f"tasks/a/t{i}", {"ip": f"9.0.1.{i + 2}"})
        with trio.fail_after(10):
            seen = [await feed.changes.receive() for _ in range(5)]
        assert sorted(c.key for c in seen) == [f"tasks/a/t{i}" for i in range(5)]
        assert all(c.new.owner == "a" for c in seen)
        assert slow.overflowed
        with trio.fail_after(1):
            got = [c async for c in slow.changes]  # what it buffered, then the end
        assert len(got) == 2
        assert [r["key"] for r in b.records("tasks/")] == [f"tasks/a/t{i}" for i in range(5)]
        nursery.cancel_scope.cancel()


class FixedWallClock:
    """A wall clock that stands still until a test moves it."""

    def __init__(self, wall: float) -> None:
        self.now = wall

    def wall(self) -> float:
        return self.now


async def test_the_store_takes_wall_time_from_the_clock_it_is_given() -> None:
    clock = FixedWallClock(1.8e9)
    a = GossipService(settings("a"), role="agent", clock=clock, rng=random.Random(1))
    async with trio.open_nursery() as nursery:
        await nursery.start(a.serve)
        a.put("tasks/a/t0", {"ip": "9.0.1.2"})
        clock.now += 7.0
        a.put("tasks/a/t1", {"ip": "9.0.1.3"})
        versions = [r["version"]["hlc"] >> 16 for r in a.records("tasks/")]
        assert versions == [1_800_000_000_000, 1_800_000_007_000]  # milliseconds of wall time
        nursery.cancel_scope.cancel()
