"""TLS done by OpenSSL on a trio socket (``vxnet.pki.tls_over``), over real loopback TCP."""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING

import pytest
import trio

from certs import tls_of
from vxnet.pki import TlsStream, init_ca, issue, peer_role, tls_over

if TYPE_CHECKING:
    from pathlib import Path

    from vxnet.pki import Tls


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    init_ca(tmp_path)
    issue(tmp_path, "master", "server", ips=["127.0.0.1"])
    issue(tmp_path, "operator", "client")
    return tmp_path


async def pair(server: Tls, client: Tls) -> tuple[TlsStream, TlsStream]:
    """Both ends of one TLS connection on 127.0.0.1, handshakes done.

    Raises:
        trio.BrokenResourceError: A handshake failed (whatever end was made is closed).
    """
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    ends: dict[str, TlsStream] = {}

    async def accept() -> None:
        tcp = await listeners[0].accept()
        ends["server"] = await tls_over(tcp, server.server, server_side=True)

    async def dial() -> None:
        tcp = await trio.open_tcp_stream("127.0.0.1", port)
        ends["client"] = await tls_over(
            tcp, client.client, server_side=False, server_hostname="127.0.0.1"
        )

    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(accept)
                nursery.start_soon(dial)
    except BaseExceptionGroup as group:
        for end in ends.values():
            await end.aclose()
        broken = group.subgroup(trio.BrokenResourceError)
        if broken is None:
            raise
        raise broken.exceptions[0] from group
    finally:
        await listeners[0].aclose()
    return ends["server"], ends["client"]


async def test_megabytes_each_way_at_once_arrive_whole(pki: Path) -> None:
    server, client = await pair(tls_of(pki, "server"), tls_of(pki, "client"))
    assert peer_role(server.getpeercert()) == "operator"
    assert peer_role(client.getpeercert()) == "master"
    up, down = os.urandom(3_000_001), os.urandom(2_000_003)  # many records, partial writes
    got: dict[str, bytes] = {}

    async def read_all(stream: TlsStream, size: int, name: str) -> None:
        chunks = bytearray()
        while len(chunks) < size:
            data = await stream.receive_some(65536)
            assert data, "the stream ended early"
            chunks += data
        got[name] = bytes(chunks)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.send_all, up)
            nursery.start_soon(server.send_all, down)
            nursery.start_soon(read_all, server, len(up), "up")
            nursery.start_soon(read_all, client, len(down), "down")
    assert hashlib.sha256(got["up"]).digest() == hashlib.sha256(up).digest()
    assert hashlib.sha256(got["down"]).digest() == hashlib.sha256(down).digest()
    await client.aclose()
    with trio.fail_after(5):
        assert await server.receive_some() == b""  # close_notify reads as the end
    await server.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await server.send_all(b"x")


async def test_a_certificate_from_another_ca_fails_the_handshake(pki: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    init_ca(other)
    issue(other, "operator", "mallory")
    with pytest.raises(trio.BrokenResourceError):
        await pair(tls_of(pki, "server"), tls_of(other, "mallory"))


async def test_a_waiting_receive_is_cancelled_and_the_stream_still_works(pki: Path) -> None:
    server, client = await pair(tls_of(pki, "server"), tls_of(pki, "client"))
    with trio.move_on_after(0.2) as scope:
        await server.receive_some()
    assert scope.cancelled_caught
    await client.send_all(b"after")
    with trio.fail_after(5):
        assert await server.receive_some() == b"after"
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.receive_some)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await server.receive_some()
        nursery.cancel_scope.cancel()
    await client.aclose()
    await server.aclose()
