"""A lean HTTP/1.1 keep-alive client for benchmarks (httpx's per-request cost would bound the
server under test, not measure it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from vxnet.pki import tls_over

if TYPE_CHECKING:
    import ssl


class RawHttp:
    """One keep-alive connection; requests one at a time."""

    def __init__(self, stream: trio.abc.Stream, host: str) -> None:
        self.stream = stream
        self.host = host
        self.buf = bytearray()

    @classmethod
    async def connect(cls, host: str, port: int, tls: ssl.SSLContext | None = None) -> RawHttp:
        """A connection to ``host:port``; HTTPS with ``tls`` (the handshake done here)."""
        with trio.fail_after(1.0):
            tcp = await trio.open_tcp_stream(host, port)
            if tls is None:
                return cls(tcp, f"{host}:{port}")
            secure = await tls_over(tcp, tls, server_side=False, server_hostname=host)
            return cls(secure, f"{host}:{port}")

    async def post(
        self, path: str, body: bytes, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        return await self.request("POST", path, body, headers)

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        """Send one request; the status and the body of the answer."""
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"{extra}Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        await self.stream.send_all(head + body)
        while b"\r\n\r\n" not in self.buf:
            await self._fill()
        header, _, rest = bytes(self.buf).partition(b"\r\n\r\n")
        lines = header.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = 0
        for line in lines[1:]:
            name, _, val = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(val)
        self.buf = bytearray(rest)
        while len(self.buf) < length:
            await self._fill()
        answer = bytes(self.buf[:length])
        del self.buf[:length]
        return status, answer

    async def _fill(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            raise EOFError("connection closed")
        self.buf += data

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)
