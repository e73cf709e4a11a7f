"""The small HTTP/1.1 server (h11 on trio) that serves the masters' and agents' APIs."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pytest
import trio
from starlette.applications import Starlette
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from vxnet._limits import ConnectionCaps
from vxnet.http._server import serve_asgi, serve_asgi_unix

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from starlette.requests import Request


async def echo(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse(
        {"len": len(body), "query": request.url.query, "method": request.method}, status_code=201
    )


async def key(request: Request) -> JSONResponse:
    return JSONResponse({"key": request.path_params["key"]})


async def boom(request: Request) -> JSONResponse:
    raise RuntimeError("kaboom")


async def stream(request: Request) -> StreamingResponse:
    async def parts() -> AsyncIterator[bytes]:
        for i in range(3):
            yield f"part{i};".encode()

    return StreamingResponse(parts(), media_type="text/plain")


APP = Starlette(
    routes=[
        Route("/echo", echo, methods=["GET", "POST"]),
        Route("/key/{key:path}", key),
        Route("/boom", boom),
        Route("/stream", stream),
    ]
)


async def start(nursery: trio.Nursery, **kwargs: Any) -> tuple[str, int]:
    bound: tuple[str, int] = await nursery.start(
        lambda task_status: serve_asgi(APP, "127.0.0.1", 0, task_status=task_status, **kwargs)
    )
    return bound


async def exchange(address: tuple[str, int], data: bytes, *, until_close: bool = True) -> bytes:
    stream = await trio.open_tcp_stream(*address)
    async with stream:
        await stream.send_all(data)
        out = b""
        with trio.move_on_after(2 if until_close else 0.5):
            while chunk := await stream.receive_some(65536):
                out += chunk
        return out


async def test_keep_alive_and_pipelining_answer_in_order() -> None:
    async with trio.open_nursery() as nursery:
        address = await start(nursery)
        requests = (
            b"POST /echo?a=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
            b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        out = await exchange(address, requests)
        answers = out.split(b"HTTP/1.1 ")[1:]
        assert [a[:3] for a in answers] == [b"201", b"201", b"404"]
        assert b'"len":5' in answers[0]
        assert b'"query":"a=1"' in answers[0]
        assert b'"method":"GET"' in answers[1]
        out = await exchange(
            address,
            b"GET /key/overlay%2F198.18.0.2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        assert b'"key":"overlay/198.18.0.2"' in out  # the path is percent-decoded
        nursery.cancel_scope.cancel()


async def test_a_chunked_request_body_is_read() -> None:
    async with trio.open_nursery() as nursery:
        address = await start(nursery)
        out = await exchange(
            address,
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n",
        )
        assert out.startswith(b"HTTP/1.1 201")
        assert b'"len":7' in out
        nursery.cancel_scope.cancel()


async def test_too_large_and_malformed_requests_are_refused() -> None:
    async with trio.open_nursery() as nursery:
        address = await start(nursery, max_body=10)
        out = await exchange(
            address, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world"
        )
        assert out.startswith(b"HTTP/1.1 413")
        assert b"body larger than 10 bytes" in out
        out = await exchange(address, b"NOT HTTP AT ALL\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 400")
        nursery.cancel_scope.cancel()


async def test_an_application_error_is_a_500_and_the_server_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with trio.open_nursery() as nursery:
        address = await start(nursery)
        out = await exchange(address, b"GET /boom HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 500")
        out = await exchange(address, b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 201")
        nursery.cancel_scope.cancel()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors
    assert "the application failed" in errors[0].getMessage()


async def test_a_streamed_response_is_sent_chunked() -> None:
    async with trio.open_nursery() as nursery:
        address = await start(nursery)
        out = await exchange(
            address, b"GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        assert out.startswith(b"HTTP/1.1 200")
        assert b"transfer-encoding: chunked" in out.lower()
        assert b"part0;" in out
        assert b"part2;" in out
        assert out.endswith(b"0\r\n\r\n")
        nursery.cancel_scope.cancel()


async def test_an_idle_connection_is_closed() -> None:
    async with trio.open_nursery() as nursery:
        address = await start(nursery, idle_timeout=0.2)
        stream = await trio.open_tcp_stream(*address)
        async with stream:
            with trio.fail_after(2):
                assert await stream.receive_some(100) == b""  # closed by the server
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("end", [b"\r\n", b""], ids=["whole", "endless"])
async def test_a_request_head_over_the_bound_is_a_431(end: bytes) -> None:
    async with trio.open_nursery() as nursery:
        address = await start(nursery, max_header=4096)
        filler = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"a" * 100) for i in range(100))
        out = await exchange(address, b"GET /echo HTTP/1.1\r\nHost: x\r\n" + filler + end)
        assert out.startswith(b"HTTP/1.1 431")
        assert b"connection: close" in out.lower()
        nursery.cancel_scope.cancel()


async def test_a_content_length_over_the_bound_is_a_413_before_the_body_is_sent() -> None:
    async with trio.open_nursery() as nursery:
        address = await start(nursery, max_body=10)
        stream = await trio.open_tcp_stream(*address)
        async with stream:
            await stream.send_all(
                b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 999999\r\n\r\n"
            )
            out = b""
            with trio.fail_after(2):  # no body sent: the answer cannot wait for it
                while b"\r\n\r\n" not in out:
                    out += await stream.receive_some(65536)
        assert out.startswith(b"HTTP/1.1 413")
        nursery.cancel_scope.cancel()


async def test_a_client_still_sending_a_refused_body_reads_the_413() -> None:
    async with trio.open_nursery() as nursery:
        address = await start(nursery, max_body=1000)
        stream = await trio.open_tcp_stream(*address)
        async with stream:
            head = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            body = b"".join(b"%x\r\n%s\r\n" % (500, b"z" * 500) for _ in range(200))
            await stream.send_all(head + body)  # 100 kB after the bound: drained, not reset
            out = b""
            with trio.fail_after(3):
                while chunk := await stream.receive_some(65536):
                    out += chunk
        assert out.startswith(b"HTTP/1.1 413")
        assert out.endswith(b'"}')  # the whole answer, then a clean end of stream
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("part", ["head", "body"])
async def test_a_slow_sender_gets_a_408_at_its_request_deadline(part: str) -> None:
    async with trio.open_nursery() as nursery:
        address = await start(nursery, request_timeout=0.4, idle_timeout=30)
        stream = await trio.open_tcp_stream(*address)
        head = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
        drip = head if part == "head" else b"z" * 100
        out = b""
        async with stream:
            if part == "body":
                await stream.send_all(head)
            started = trio.current_time()

            async def dripping() -> None:
                for byte in drip[:-1]:  # never the last byte, each within the idle timeout
                    await stream.send_all(bytes([byte]))
                    await trio.sleep(0.02)

            with trio.fail_after(3):
                async with trio.open_nursery() as inner:
                    inner.start_soon(dripping)
                    while chunk := await stream.receive_some(65536):
                        out += chunk
                    inner.cancel_scope.cancel()
            elapsed = trio.current_time() - started
        assert out.startswith(b"HTTP/1.1 408")
        assert b"not complete in 0.4 s" in out
        assert 0.35 <= elapsed < 2.0
        nursery.cancel_scope.cancel()


async def test_a_unix_socket_server_answers(tmp_path: Path) -> None:
    path = str(tmp_path / "api.sock")
    async with trio.open_nursery() as nursery:
        assert await nursery.start(serve_asgi_unix, APP, path) == path
        stream = await trio.open_unix_socket(path)
        async with stream:
            await stream.send_all(b"GET /echo?u=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            out = b""
            with trio.fail_after(2):
                while chunk := await stream.receive_some(65536):
                    out += chunk
        assert out.startswith(b"HTTP/1.1 201")
        assert b'"query":"u=1"' in out
        nursery.cancel_scope.cancel()


async def open_from(source: str, address: tuple[str, int]) -> trio.SocketStream:
    """A TCP connection to ``address`` from the loopback address ``source``."""
    sock = trio.socket.socket()
    await sock.bind((source, 0))
    await sock.connect(address)
    return trio.SocketStream(sock)


async def test_connections_beyond_the_caps_get_a_503_and_the_listener_keeps_accepting() -> None:
    caps = ConnectionCaps(per_client=3, total=5)
    get = b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n"
    async with trio.open_nursery() as nursery:
        address = await start(nursery, caps=caps)
        hog = [await open_from("127.0.0.9", address) for _ in range(3)]  # idle, held
        await trio.testing.wait_all_tasks_blocked()  # the server holds them, reading
        assert caps.count == 3
        refused = await open_from("127.0.0.9", address)
        await refused.send_all(get)
        answer = b""
        with trio.fail_after(5):
            while chunk := await refused.receive_some(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 503 ")
        assert b"retry-after: 1" in answer
        assert b"127.0.0.9 holds 3 connections" in answer
        # Another address is served; the total cap counts every address.
        assert (await exchange(address, get, until_close=False)).startswith(b"HTTP/1.1 201")
        others = [await open_from("127.0.0.10", address) for _ in range(2)]
        await trio.testing.wait_all_tasks_blocked()
        assert caps.count == 5
        assert b"5 connections are open" in await exchange(address, get)
        # Closing what is held frees its places.
        for stream in [*hog, *others, refused]:
            await stream.aclose()
        await trio.testing.wait_all_tasks_blocked()
        assert caps.count == 0
        assert (await exchange(address, get, until_close=False)).startswith(b"HTTP/1.1 201")
        assert caps.refused == 2
        nursery.cancel_scope.cancel()


def test_caps_count_per_client_and_in_total() -> None:
    caps = ConnectionCaps(per_client=2, total=3)
    assert caps.admit("a") is None
    assert caps.admit("a") is None
    assert caps.admit("a") == "a holds 2 connections already (at most 2)"
    assert caps.admit("b") is None
    assert caps.admit("c") == "3 connections are open (at most 3)"
    caps.release("a")
    assert caps.admit("c") is None
    assert caps.open == {"a": 1, "b": 1, "c": 1}
    assert caps.refused == 2
    with pytest.raises(ValueError, match="per_client"):
        ConnectionCaps(per_client=0)
