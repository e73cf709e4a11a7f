"""Hostile Paxos frames against three real ``vxnet master`` processes with TLS on, from holders
of a master's certificate from the cluster's CA. Hypothesis draws the streams: messages of every
kind with values near the cluster's, at the edges and out of range, and forged snapshots
(garbage, or a valid snapshot of an empty allocator) and chosen entries nobody asked for.

* A master certificate for an address that is no replica's (a decommissioned master, a
  certificate issued for a test): refused at its hello, whatever replica it claims to be; no
  frame reaches a replica's core.
* Replica 0's own certificate (its key stolen): it can speak as replica 0 only, and its ballots,
  refusals, reads and out-of-range values change nothing. What Paxos cannot survive from a
  replica gone bad (forged accepts, commit indexes, or answers to a fetch it was asked for) is
  left to the simulation's "stops no replica" test: the certificate is what keeps those out.

Through both, no master stops; each one restarted afterwards starts; every allocation
acknowledged before is still there, and registrations go on."""

from __future__ import annotations

import random
import signal
from typing import TYPE_CHECKING, Any

import msgpack
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from certs import tls_of
from hostile_paxos import SAFE_KINDS, hostile
from vxnet.config import NetworkConfig
from vxnet.master._allocator import Allocator
from vxnet.master._client import open_master_client
from vxnet.pki import issue
from vxnet.replog import Learned, Prepare
from vxnet.replog._storage import Snapshot
from vxnet.replog._wire import encode_frame, encode_message, peer_hello
from vxnet.testing.procs import MasterProcesses

if TYPE_CHECKING:
    from collections.abc import Iterator

    from vxnet.pki import Tls

TOKEN = "test-token-hostile"  # noqa: S105 - a test fixture, not a secret
AGENTS = [f"198.18.3.{i}" for i in range(1, 21)]
LATER = [f"198.18.4.{i}" for i in range(1, 6)]
ALL_KINDS = tuple(range(10))


@pytest.fixture(scope="module")
def masters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MasterProcesses]:
    root = tmp_path_factory.mktemp("hostile-frames")
    with MasterProcesses(root, 3, extra=f'token = "{TOKEN}"', tls=True) as m:
        m.start_all()
        yield m


def empty_master_snapshot() -> bytes:
    data: bytes = msgpack.packb(
        {"allocator": Allocator(NetworkConfig()).snapshot(), "network_in_log": False},
        use_bin_type=True,
    )
    return data


async def views(m: MasterProcesses) -> list[dict[str, Any]]:
    out = []
    for i in range(m.n):
        view = await m.status(i)
        assert view is not None, f"master {i} does not answer:\n{m.log_text(i)[-3000:]}"
        out.append(view)
    return out


async def send_stream(
    m: MasterProcesses, tls: Tls, seed: int, kinds: tuple[int, ...], posing: int | None
) -> None:
    """One connection to a random master, posing as ``posing`` (None: another replica at
    random), carrying 30 hostile frames of ``kinds`` (with forged snapshots when all kinds) and
    then one the wire must refuse: when the master closes the connection, it has handled every
    frame before that one."""
    rng = random.Random(seed)
    target = rng.choice([i for i in range(m.n) if i != posing])
    if posing is None:
        posing = rng.choice([i for i in range(m.n) if i != target])
    log = [v["log"] for v in await views(m)]
    ballot = max(v["ballot"] for v in log)
    commit = max(v["commit"] for v in log)
    frames = [encode_frame(peer_hello(m.n, posing))]
    for _ in range(30):
        roll = rng.random()
        if roll < 0.1 and kinds == ALL_KINDS:
            data = empty_master_snapshot() if rng.random() < 0.5 else rng.randbytes(20)
            position = commit + rng.randint(1, 50)
            msg: Any = Learned(((position, b"forged"),), Snapshot(position, data), position + 1)
        else:
            msg = hostile(rng, ballot, commit, kinds)
        frames.append(encode_frame(encode_message(msg)))
    frames.append(encode_frame(encode_message(Prepare(2**63, 0))))  # always refused
    host, port = m.addresses[target]
    with trio.fail_after(10):
        tcp = await trio.open_tcp_stream(host, port)
        stream = trio.SSLStream(tcp, tls.client, server_hostname=host)
        try:
            await stream.send_all(b"".join(frames))
            while await stream.receive_some(65536):
                pass
        except trio.BrokenResourceError:
            pass  # closed with frames unread: dropped at a refused one
        finally:
            await trio.aclose_forcefully(stream)
    assert m.running() == list(range(m.n)), "a master stopped"


def test_hostile_frames_from_a_trusted_peer_stop_no_master_nor_lose_an_allocation(
    masters: MasterProcesses,
) -> None:
    m = masters
    urls = [m.url(i) for i in range(m.n)]

    async def register(ips: list[str]) -> dict[str, dict[str, Any]]:
        await m.leader()
        async with open_master_client(urls, token=TOKEN, tls=m.client_tls) as api:
            return {ip: await api.register(ip) for ip in ips}

    acked = trio.run(register, AGENTS)

    async def handled() -> list[int]:
        """Per master: peer connections refused as impostors, and peer messages its core
        dropped."""
        return [v["log"][k] for v in await views(m) for k in ("impostors", "refused")]

    issue(m.pki, "master", "elsewhere", ips=["127.0.0.9"])  # no replica's address
    elsewhere = tls_of(m.pki, "elsewhere")
    before = trio.run(handled)
    streams: list[int] = []

    @settings(max_examples=15, deadline=None, database=None)
    @given(seed=st.integers(0, 2**32))
    def impostor(seed: int) -> None:
        streams.append(seed)
        trio.run(send_stream, m, elsewhere, seed, ALL_KINDS, None)

    impostor()
    after_impostor = trio.run(handled)
    assert sum(after_impostor[0::2]) - sum(before[0::2]) == len(streams), "an impostor got in"
    assert after_impostor[1::2] == before[1::2], "an impostor's frame reached a replica's core"

    issue(m.pki, "master", "replica0-stolen", ips=[m.host(0)])
    stolen = tls_of(m.pki, "replica0-stolen")

    @settings(max_examples=25, deadline=None, database=None)
    @given(seed=st.integers(0, 2**32))
    def as_replica0(seed: int) -> None:
        trio.run(send_stream, m, stolen, seed, SAFE_KINDS, 0)

    as_replica0()

    async def after() -> None:
        for i in range(m.n):  # a rolling restart: each master starts from what it stored
            m.kill(i, signal.SIGTERM)
            m.start(i)
            await m.leader()
        for i in range(m.n):  # and all at once
            m.kill(i, signal.SIGTERM)
        m.start_all()
        await m.leader()
        await views(m)  # every master answers
        later = await register(LATER)
        async with open_master_client(urls, token=TOKEN, tls=m.client_tls) as api:
            state = await api.state()
        by_ip = {a["ip"]: a for a in state["agents"]}
        for ip, info in {**acked, **later}.items():
            assert by_ip.get(ip) == info, f"{ip}'s allocation changed or was lost"
        assert set(by_ip) == set(AGENTS) | set(LATER), "an agent nobody registered appeared"

    trio.run(after)
