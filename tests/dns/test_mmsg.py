"""Batched UDP on loopback: queries and senders' addresses in, replies out, IPv4 and IPv6."""

from __future__ import annotations

import socket
import time

import pytest

from vxnet.dns._mmsg import Batch, available

pytestmark = pytest.mark.skipif(not available(), reason="recvmmsg/sendmmsg need 64-bit Linux")


@pytest.mark.parametrize(
    ("family", "host"), [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")]
)
def test_a_batch_answers_each_sender(family: int, host: str) -> None:
    with socket.socket(family, socket.SOCK_DGRAM) as server:
        server.bind((host, 0))
        server.setblocking(False)
        batch = Batch(server, size=4)
        clients = [socket.socket(family, socket.SOCK_DGRAM) for _ in range(6)]
        try:
            for i, client in enumerate(clients):
                client.settimeout(2)
                client.sendto(f"query {i}".encode(), server.getsockname()[:2])
            time.sleep(0.05)
            seen = []
            while received := batch.receive():
                # the fast path knows even-numbered queries; the others are answered one by one
                missed = batch.answer_all(
                    received, lambda q: q.upper() if int(q.split()[1]) % 2 == 0 else None
                )
                for i in missed:
                    query = batch.query(i)
                    assert batch.peer(i)[0] == host
                    batch.reply(i, query + b" slow")
                seen.append(received)
                assert batch.flush() == received
            assert seen == [4, 2]
            for i, client in enumerate(clients):  # each reply reached its own sender
                expected = f"QUERY {i}" if i % 2 == 0 else f"query {i} slow"
                assert client.recv(100) == expected.encode()
            assert batch.receive() == 0
        finally:
            for client in clients:
                client.close()
