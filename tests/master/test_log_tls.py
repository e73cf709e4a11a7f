"""The log port with TLS on: three real replica processes, and strangers trying to take part.

Only holders of a certificate from the cluster's CA take part: peers need a master's, clients a
master's or an operator's. A connection without one, with another CA's, an expired one or an
agent's posing as a replica never gets a word to the log, and the log does not change.
"""

from __future__ import annotations

import socket
import struct
from typing import TYPE_CHECKING, Any

import pytest
import trio

from certs import expired_certificate, tls_of
from vxnet.pki import Tls, init_ca, issue
from vxnet.replog import LogUnavailable, Prepare, open_log_client, request_once
from vxnet.replog._wire import client_hello, encode_frame, encode_message, peer_hello
from vxnet.testing.procs import LogProcesses

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LogProcesses]:
    with LogProcesses(tmp_path_factory.mktemp("tls-log"), 3, tls=True) as log:
        log.start_all()
        yield log


async def view(log: LogProcesses, i: int) -> dict[str, Any]:
    answer = await log.status(i)
    assert answer is not None
    return answer


async def test_replicas_with_master_certificates_form_a_log_over_tls(cluster: LogProcesses) -> None:
    leader = await cluster.leader()
    await cluster.formed()
    async with open_log_client(cluster.addresses, tls=cluster.client_tls) as client:
        first = await client.append(b"one")
        second = await client.append(b"two")
    assert second == first + 1
    assert (await view(cluster, leader))["commit"] >= second + 1


async def test_strangers_cannot_reach_the_log_and_change_nothing(
    cluster: LogProcesses, tmp_path: Path
) -> None:
    leader = await cluster.leader()
    await cluster.formed()
    before = await view(cluster, leader)
    address = cluster.addresses[leader]
    other = tmp_path / "other"
    init_ca(other)
    issue(other, "operator", "mallory")
    issue(other, "master", "fake", ips=[cluster.host(leader)])
    issue(cluster.pki, "agent", "a1", ips=["198.18.0.11"])
    strangers = {
        "no certificate (plain TCP)": None,
        "another CA's operator": tls_of(other, "mallory"),
        "an expired operator certificate": expired_certificate(cluster.pki),
        "an agent certificate as a client": tls_of(cluster.pki, "a1"),
    }
    for who, tls in strangers.items():
        with pytest.raises(LogUnavailable):
            await request_once(address, {"op": "append", "value": b"forged"}, tls=tls)
        assert (await view(cluster, leader))["commit"] == before["commit"], who

    # Posing as a replica: an agent's certificate, and another CA's master certificate.
    for tls in (tls_of(cluster.pki, "a1"), tls_of(other, "fake")):
        with trio.fail_after(10):
            await pose_as_replica(cluster, address, tls)
    after = await view(cluster, leader)
    assert after["commit"] == before["commit"]
    assert after["ballot"] == before["ballot"], "a stranger's Prepare forced an election"
    assert after["leader_changes"] == before["leader_changes"]
    async with open_log_client(cluster.addresses, tls=cluster.client_tls) as client:
        assert await client.append(b"after") == before["commit"]


async def pose_as_replica(cluster: LogProcesses, address: tuple[str, int], tls: Tls) -> None:
    """Dial as replica 0 of 3 and send a Prepare with a huge ballot; the connection must be
    dropped without an answer (or fail its handshake)."""
    tcp = await trio.open_tcp_stream(*address)
    stream = trio.SSLStream(tcp, tls.client, server_hostname=address[0])
    try:
        hello = encode_frame(peer_hello(3, 0 if cluster.host(0) != address[0] else 1))
        prepare = encode_frame(encode_message(Prepare(ballot=2**40, from_pos=0)))
        await stream.send_all(hello + prepare)
        assert await stream.receive_some(65536) == b""
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the handshake failed: as good
    finally:
        await trio.aclose_forcefully(stream)


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LogProcesses]:
    with LogProcesses(tmp_path_factory.mktemp("plain-log"), 3) as log:
        log.start_all()
        yield log


async def reset_midway(address: tuple[str, int], tls: Tls | None) -> None:
    """A client that sends half a request and resets the connection (RST, no close_notify)."""
    tcp = await trio.open_tcp_stream(*address)
    stream: trio.abc.Stream = tcp
    if tls is not None:
        stream = trio.SSLStream(tcp, tls.client, server_hostname=address[0])
        await stream.do_handshake()
    await stream.send_all(
        encode_frame(client_hello()) + encode_frame({"op": "status", "id": 1})[:3]
    )
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    tcp.socket.close()


@pytest.mark.parametrize("which", ["plain", "tls"])
async def test_a_client_resetting_its_connection_stops_no_replica(
    which: str, cluster: LogProcesses, plain: LogProcesses
) -> None:
    log = cluster if which == "tls" else plain
    leader = await log.leader()
    for i in log.running():
        for _ in range(3):
            await reset_midway(log.addresses[i], log.client_tls)
    for i in range(log.n):
        assert await log.status(i) is not None, f"replica {i} stopped:\n{log.log_text(i)[-3000:]}"
    assert log.running() == [0, 1, 2]
    assert await log.leader() == leader
