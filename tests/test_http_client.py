"""vxnet's HTTP client: against the real server (TCP and a unix socket), then hostile servers.

Each hostile server is a trio server in the test that reads the request head and then misbehaves
in one way; the client must give the typed error within its bound, with a message that says what
and where.
"""

from __future__ import annotations

import contextlib
import json
import socket
from typing import TYPE_CHECKING

import pytest
import trio
from starlette.applications import Starlette
from starlette.responses import JSONResponse, RedirectResponse, StreamingResponse
from starlette.routing import Route

from vxnet.http import (
    ApiError,
    HttpClient,
    HttpConnectError,
    HttpError,
    HttpProtocolError,
    HttpTimeout,
    HttpTooLarge,
    fetch_json,
    serve_asgi,
    serve_asgi_unix,
)
from vxnet.master import MasterUnreachable, open_master_client

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable
    from pathlib import Path

    from starlette.requests import Request


# --- the real server ----------------------------------------------------------------------------


async def echo(request: Request) -> JSONResponse:
    body = await request.body()
    port = request.client.port if request.client else None
    return JSONResponse(
        {"len": len(body), "method": request.method, "port": port, "query": request.url.query}
    )


async def refuse(request: Request) -> JSONResponse:
    return JSONResponse({"error": "no such thing"}, status_code=404)


async def moved(request: Request) -> RedirectResponse:
    return RedirectResponse("/echo?moved=1", status_code=307)


async def lines(request: Request) -> StreamingResponse:
    async def parts() -> AsyncIterator[bytes]:
        for i in range(3):
            yield json.dumps({"n": i}).encode() + b"\n"

    return StreamingResponse(parts(), media_type="application/json")


APP = Starlette(
    routes=[
        Route("/echo", echo, methods=["GET", "POST"]),
        Route("/refuse", refuse),
        Route("/moved", moved, methods=["GET", "POST"]),
        Route("/lines", lines),
    ]
)


async def serve(nursery: trio.Nursery) -> str:
    host, port = await nursery.start(serve_asgi, APP, "127.0.0.1", 0)
    return f"http://{host}:{port}"


async def test_requests_reuse_one_keep_alive_connection() -> None:
    async with trio.open_nursery() as nursery:
        base = await serve(nursery)
        async with HttpClient() as http:
            first = await http.request("POST", f"{base}/echo?a=1", body=b"hello")
            second = await http.request("GET", f"{base}/echo")
        assert first.status == 200
        assert first.json()["len"] == 5
        assert first.json()["query"] == "a=1"
        assert first.header("Content-Type") == "application/json"
        assert second.json()["method"] == "GET"
        assert second.json()["port"] == first.json()["port"]  # the same connection
        async with HttpClient(keep_alive=False) as http:
            third = await http.request("GET", f"{base}/echo")
            fourth = await http.request("GET", f"{base}/echo")
        assert third.json()["port"] != fourth.json()["port"]
        nursery.cancel_scope.cancel()


async def test_a_status_is_no_error_and_a_streamed_body_arrives_in_pieces() -> None:
    async with trio.open_nursery() as nursery:
        base = await serve(nursery)
        async with HttpClient() as http:
            assert (await http.request("GET", f"{base}/refuse")).status == 404
            async with http.stream("GET", f"{base}/lines") as response:
                assert response.status == 200
                assert response.header("transfer-encoding") == "chunked"
                body = await response.read()
            again = await http.request("GET", f"{base}/echo")  # after a whole stream: reused
        assert [json.loads(line)["n"] for line in body.splitlines()] == [0, 1, 2]
        assert again.status == 200
        nursery.cancel_scope.cancel()


async def test_over_a_unix_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "api.sock")
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_asgi_unix, APP, path)
        async with HttpClient(unix_socket=path) as http:
            response = await http.request("POST", "http://api/echo?u=1", body=b"abc")
            again = await http.request("GET", "http://api/echo")
        assert response.json()["len"] == 3
        assert response.json()["query"] == "u=1"
        assert again.status == 200
        nursery.cancel_scope.cancel()
    with pytest.raises(HttpConnectError) as info:
        await HttpClient(unix_socket=path).request("GET", "http://api/echo")
    assert str(info.value).startswith(f"GET http://api/echo via {path}: cannot connect")


async def test_fetch_json_follows_redirects_and_says_what_failed() -> None:
    async with trio.open_nursery() as nursery:
        base = await serve(nursery)
        moved = await trio.to_thread.run_sync(
            lambda: fetch_json(f"{base}/moved", method="POST", body={"x": 1})
        )
        assert moved == {"len": 8, "method": "POST", "port": moved["port"], "query": "moved=1"}
        with pytest.raises(ApiError, match=r"/refuse: HTTP 404: no such thing$"):
            await trio.to_thread.run_sync(lambda: fetch_json(f"{base}/refuse"))
        nursery.cancel_scope.cancel()
    with pytest.raises(ApiError, match=r"cannot connect .*is the agent running"):
        await trio.to_thread.run_sync(lambda: fetch_json(base))


# --- hostile servers ----------------------------------------------------------------------------


async def hostile(
    nursery: trio.Nursery, behave: Callable[[trio.SocketStream], Awaitable[None]]
) -> str:
    """A server that reads each request's head and then does ``behave``; its base URL."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def handle(stream: trio.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            data += chunk
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await behave(stream)  # until the client hangs up

    await nursery.start(trio.serve_listeners, handle, listeners)
    return f"http://127.0.0.1:{port}"


async def endless_headers(stream: trio.SocketStream) -> None:
    await stream.send_all(b"HTTP/1.1 200 OK\r\n")
    while True:
        await stream.send_all(b"X-More: " + b"m" * 1000 + b"\r\n")


async def huge_length(stream: trio.SocketStream) -> None:
    await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n")
    await trio.sleep_forever()


async def bad_length(stream: trio.SocketStream) -> None:
    await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 12abc\r\n\r\n")
    await trio.sleep_forever()


async def huge_chunked(stream: trio.SocketStream) -> None:
    await stream.send_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    while True:
        await stream.send_all(b"1000\r\n" + b"c" * 0x1000 + b"\r\n")


async def truncated_body(stream: trio.SocketStream) -> None:
    await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"t" * 10)
    await stream.aclose()


async def no_answer(stream: trio.SocketStream) -> None:
    await trio.sleep_forever()


async def hang_up(stream: trio.SocketStream) -> None:
    await stream.aclose()


async def slow_drip(stream: trio.SocketStream) -> None:
    for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok":
        await stream.send_all(bytes([byte]))
        await trio.sleep(0.05)


async def garbage(stream: trio.SocketStream) -> None:
    await stream.send_all(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
    await trio.sleep_forever()


@pytest.mark.parametrize(
    ("behave", "error", "reason"),
    [
        (endless_headers, HttpTooLarge, "response head larger than 4096 bytes"),
        (huge_length, HttpTooLarge, "response body of 99999999999 bytes, more than 65536"),
        (huge_chunked, HttpTooLarge, "response body larger than 65536 bytes"),
        (bad_length, HttpProtocolError, "bad response: bad Content-Length"),
        (truncated_body, HttpProtocolError, "bad response body: peer closed connection"),
        (hang_up, HttpProtocolError, "the server closed the connection without answering"),
        (garbage, HttpProtocolError, "bad response:"),
        (no_answer, HttpTimeout, "no complete answer within 0.5 s"),
        (slow_drip, HttpTimeout, "no complete answer within 0.5 s"),
    ],
)
async def test_a_hostile_server_gets_its_typed_error_within_the_bound(
    behave: Callable[[trio.SocketStream], Awaitable[None]],
    error: type[HttpError],
    reason: str,
) -> None:
    async with trio.open_nursery() as nursery:
        base = await hostile(nursery, behave)
        http = HttpClient(timeout=0.5, max_header_bytes=4096, max_body_bytes=65536)
        started = trio.current_time()
        with trio.fail_after(3), pytest.raises(error) as info:
            await http.request("GET", f"{base}/x")
        elapsed = trio.current_time() - started
        await http.aclose()
        nursery.cancel_scope.cancel()
    assert type(info.value) is error
    assert info.value.reason.startswith(reason)
    assert str(info.value).startswith(f"GET {base}/x: ")  # what and where
    if error is HttpTimeout:
        assert 0.45 <= elapsed < 1.5
    else:
        assert elapsed < 0.45  # at once, not at the deadline


async def test_a_pooled_connection_the_server_closed_is_replaced_once() -> None:
    accepted = 0

    async def answer_once(stream: trio.SocketStream) -> None:
        nonlocal accepted
        accepted += 1
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await stream.aclose()  # no Connection: close: the client pools it

    async with trio.open_nursery() as nursery:
        base = await hostile(nursery, answer_once)
        async with HttpClient() as http:
            assert (await http.request("GET", f"{base}/a")).body == b"ok"
            assert (await http.request("GET", f"{base}/b")).body == b"ok"
        nursery.cancel_scope.cancel()
    assert accepted == 2


async def test_nothing_listening_is_a_connect_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/x"
        with pytest.raises(HttpConnectError) as info:
            await HttpClient().request("POST", url, body=b"{}")
    assert str(info.value).startswith(f"POST {url}: cannot connect (")


def test_only_http_urls() -> None:
    with pytest.raises(ValueError, match="only http://"):
        trio.run(HttpClient().request, "GET", "https://example.org/")


# --- the master client on it --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("behave", "reason"),
    [
        (bad_length, "bad response: bad Content-Length"),
        (endless_headers, "response head larger than 65536 bytes"),
        (hang_up, "the server closed the connection without answering"),
    ],
)
async def test_a_broken_master_is_unreachable_not_a_crash(
    behave: Callable[[trio.SocketStream], Awaitable[None]], reason: str
) -> None:
    async with trio.open_nursery() as nursery:
        base = await hostile(nursery, behave)
        with trio.fail_after(5), pytest.raises(MasterUnreachable) as info:
            async with open_master_client([base], patience=0.5) as masters:
                await masters.state()
        nursery.cancel_scope.cancel()
    address = base.removeprefix("http://")
    assert str(info.value).startswith("GET /overlay-master/state: nothing in 0.5 s: ")
    assert str(info.value).endswith(f"{address}: {reason}")


async def test_a_header_that_would_split_the_request_is_refused_locally() -> None:
    with pytest.raises(ValueError, match="not a valid request"):
        await HttpClient().request("GET", "http://127.0.0.1:9/", headers={"X-A": "1\r\nX-B: 2"})
