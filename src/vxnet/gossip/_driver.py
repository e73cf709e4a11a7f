"""The trio driver of the membership core: UDP and TCP on one port, timers, streams.

It moves bytes between sockets and a :class:`~vxnet.gossip._membership.Membership` core and
wakes the core at its deadline; it decides nothing. Every task is owned by the nursery of
:meth:`serve`. Bad input is the core's business (counted and dropped); a stream that is too slow,
too large or malformed is closed. Incoming streams are capped in number
(``max_push_pull_requests``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket as _socket
import struct
from typing import TYPE_CHECKING

import trio

from vxnet._sansio import DeadlineTimer
from vxnet.gossip._keyring import Keyring, encrypted_length
from vxnet.gossip._messages import Ack, ErrorResponse, MessageType, Ping, PushPull, User
from vxnet.gossip._store_messages import STORE_MAGIC
from vxnet.gossip._wire import StreamDecoder, WireError

if TYPE_CHECKING:
    from collections.abc import Callable

    from vxnet.gossip._membership import Membership
    from vxnet.gossip._membership_types import MemberEvent, StreamRequest

__all__ = ["GossipDriver"]

log = logging.getLogger("vxnet.gossip")

Address = tuple[str, int]
UDP_RECV_SIZE = 65536
STREAM_READ_SIZE = 65536


class GossipDriver:
    """Runs a membership core on a UDP socket and a TCP listener bound to the same port.

    Args:
        core: The membership core; its ``addr`` and ``port`` are what others are told.
        bind: Address and port to listen on (port 0 picks a free port for both protocols).
        on_events: Called with membership changes after each step; must not block.
        on_step: Called after every step the core takes (for layers that share the core).
    """

    def __init__(
        self,
        core_factory: Callable[[Address, float], Membership],
        bind: Address,
        *,
        on_events: Callable[[list[MemberEvent]], None] | None = None,
        on_step: Callable[[], None] | None = None,
        frame_length: Callable[[bytes], int] | None = None,
        on_frame: Callable[[bytes], bytes] | None = None,
    ) -> None:
        self._on_step = on_step
        self._frame_length = frame_length
        self._on_frame = on_frame
        self._core_factory = core_factory
        self._bind = bind
        self._on_events = on_events
        self.core: Membership | None = None
        self._udp: _socket.socket | None = None
        self._timer = DeadlineTimer(self._next_deadline, self._tick)
        self._nursery: trio.Nursery | None = None
        self._stream_slots: trio.Semaphore | None = None
        self.bound: Address | None = None

    async def serve(
        self, *, task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Bind, start the core and run until cancelled; ``task_status`` gets the bound address."""
        listeners, udp = await self._bind_both()
        self._udp = udp
        assert self.bound is not None
        core = self._core_factory(self.bound, trio.current_time())
        self.core = core
        self._stream_slots = trio.Semaphore(core.timing.max_push_pull_requests)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._udp_loop, udp)
                nursery.start_soon(self._timer.run)
                await nursery.start(trio.serve_listeners, self._handle_conn, listeners)
                self.step()
                task_status.started(self.bound)
        finally:
            udp.close()

    async def _bind_both(self) -> tuple[list[trio.SocketListener], _socket.socket]:
        host, port = self._bind
        family = _socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else _socket.AF_INET
        for _ in range(20):
            listeners = await trio.open_tcp_listeners(port, host=host)
            bound = listeners[0].socket.getsockname()
            udp = _socket.socket(family, _socket.SOCK_DGRAM)
            udp.setblocking(False)
            try:
                udp.bind((host, bound[1]))
            except OSError:
                udp.close()
                for listener in listeners:
                    await listener.aclose()
                if port:
                    raise
                continue
            self.bound = (host, bound[1])
            return listeners, udp
        raise OSError(f"could not bind UDP and TCP on one free port of {host}")

    # --- the core's steps ------------------------------------------------------------------------

    def step(self) -> None:
        """Flush what the core wants sent and re-arm the timer. Call after feeding the core."""
        core = self.core
        assert core is not None
        assert self._nursery is not None
        for addr, data in core.datagrams_to_send():
            self._send_datagram(addr, data)
        for request in core.streams_to_open():
            self._nursery.start_soon(self._run_stream, request)
        events = core.events()
        if events and self._on_events is not None:
            self._on_events(events)
        self._timer.reset()
        if self._on_step is not None:
            self._on_step()

    def _send_datagram(self, addr: Address, data: bytes) -> None:
        assert self._udp is not None
        try:
            self._udp.sendto(data, addr)
        except OSError as exc:  # a full buffer or an unreachable peer: UDP may drop it
            log.debug("send to %s failed: %s", addr, exc)

    async def _udp_loop(self, udp: _socket.socket) -> None:
        core = self.core
        assert core is not None
        while True:
            await trio.lowlevel.wait_readable(udp)
            while True:
                try:
                    data, src = udp.recvfrom(UDP_RECV_SIZE)
                except BlockingIOError:
                    break
                except OSError as exc:  # e.g. ICMP port unreachable reported on Linux
                    log.debug("receive failed: %s", exc)
                    continue
                core.receive_packet(data, (src[0], src[1]), trio.current_time())
                self.step()

    def _next_deadline(self) -> float:
        assert self.core is not None
        return self.core.next_deadline()

    def _tick(self, now: float) -> None:
        assert self.core is not None
        self.core.tick(now)
        self.step()

    # --- streams ---------------------------------------------------------------------------------

    async def _run_stream(self, request: StreamRequest) -> None:
        core = self.core
        assert core is not None
        reply: PushPull | Ack | ErrorResponse | None = None
        with trio.move_on_at(request.deadline):
            try:
                stream = await trio.open_tcp_stream(*request.addr)
            except OSError as exc:
                log.debug("stream to %s failed: %s", request.addr, exc)
            else:
                async with stream:
                    try:
                        await stream.send_all(request.payload)
                        msg = await self._read_message(stream)
                        if isinstance(msg, PushPull | Ack | ErrorResponse):
                            reply = msg
                    except (trio.BrokenResourceError, WireError, OSError) as exc:
                        log.debug("stream to %s failed: %s", request.addr, exc)
        core.stream_reply(request.id, reply, trio.current_time())
        self.step()

    async def _handle_conn(self, stream: trio.SocketStream) -> None:
        core = self.core
        assert core is not None
        assert self._stream_slots is not None
        async with stream:
            try:
                self._stream_slots.acquire_nowait()
            except trio.WouldBlock:
                core.stats.errors["too many streams"] = (
                    core.stats.errors.get("too many streams", 0) + 1
                )
                return
            try:
                with trio.move_on_after(core.timing.tcp_timeout):
                    try:
                        reply = await self._serve_one(stream)
                    except (trio.BrokenResourceError, OSError):
                        return
                    except WireError as exc:
                        core.stats.bad_packets += 1
                        log.debug("bad stream: %s", exc)
                        return
                    if reply is not None:
                        with contextlib.suppress(trio.BrokenResourceError, OSError):
                            await stream.send_all(reply)
            finally:
                self._stream_slots.release()

    async def _serve_one(self, stream: trio.SocketStream) -> bytes | None:
        """Read one incoming request and return the reply to write (``None``: no reply)."""
        core = self.core
        assert core is not None
        reader = _Reader(stream, core.timing.max_push_state_bytes)
        first = (await reader.exactly(1))[0]
        keyring = core.keyring
        if keyring is not None and first == MessageType.ENCRYPT:
            header = bytes([first]) + await reader.exactly(4)
            length = struct.unpack(">I", header[1:])[0]
            if length > core.timing.max_push_state_bytes:
                raise WireError(f"encrypted stream of {length} bytes is over the cap")
            plain = keyring.decrypt(await reader.exactly(length), aad=header)
            if plain[:1] == bytes([STORE_MAGIC]):
                return seal(keyring, self._store_reply(plain))
            msg = _decode_all(plain)
        elif keyring is None and first == STORE_MAGIC:
            header = bytes([first]) + await reader.exactly(4)
            assert self._frame_length is not None
            frame = header + await reader.exactly(self._frame_length(header) - len(header))
            return self._store_reply(frame)
        else:
            decoder = StreamDecoder(max_size=core.timing.max_push_state_bytes, keyring=keyring)
            decoder.feed(bytes([first]))
            msg = await reader.message(decoder)
        if msg is None:
            return None
        reply = core.handle_stream(msg, trio.current_time())
        self.step()
        return reply

    def _store_reply(self, frame: bytes) -> bytes:
        if self._on_frame is None:
            raise WireError("a store frame arrived, but this node has no store")
        reply = self._on_frame(frame)
        self.step()
        return reply

    async def exchange(self, addr: Address, frame: bytes, deadline: float) -> bytes | None:
        """Send one store frame to ``addr``; the reply frame, or ``None`` on failure or deadline."""
        core = self.core
        assert core is not None
        assert self._frame_length is not None
        keyring = core.keyring
        with trio.move_on_at(deadline):
            try:
                stream = await trio.open_tcp_stream(*addr)
            except OSError as exc:
                log.debug("store exchange with %s failed: %s", addr, exc)
                return None
            async with stream:
                try:
                    await stream.send_all(seal(keyring, frame) if keyring else frame)
                    reader = _Reader(stream, core.timing.max_push_state_bytes)
                    header = await reader.exactly(5)
                    if keyring is not None:
                        length = struct.unpack(">I", header[1:])[0]
                        return keyring.decrypt(await reader.exactly(length), aad=header)
                    return header + await reader.exactly(self._frame_length(header) - 5)
                except (trio.BrokenResourceError, WireError, OSError) as exc:
                    log.debug("store exchange with %s failed: %s", addr, exc)
        return None

    async def _read_message(
        self, stream: trio.SocketStream
    ) -> PushPull | Ping | Ack | User | ErrorResponse | None:
        core = self.core
        assert core is not None
        decoder = StreamDecoder(max_size=core.timing.max_push_state_bytes, keyring=core.keyring)
        return await _Reader(stream, core.timing.max_push_state_bytes).message(decoder)


def seal(keyring: Keyring | None, plain: bytes) -> bytes:
    """Wrap ``plain`` as memberlist wraps an encrypted stream (type, length, AAD = header)."""
    if keyring is None:
        return plain
    header = bytes([MessageType.ENCRYPT]) + struct.pack(">I", encrypted_length(len(plain)))
    return header + keyring.encrypt(plain, aad=header)


def _decode_all(data: bytes) -> PushPull | Ping | Ack | User | ErrorResponse | None:
    decoder = StreamDecoder()
    decoder.feed(data)
    msg = decoder.next_message()
    if msg is None:
        decoder.eof()
    return msg


class _Reader:
    """Reads from a stream with a cap on the total."""

    def __init__(self, stream: trio.SocketStream, cap: int) -> None:
        self._stream = stream
        self._buf = bytearray()
        self._cap = cap
        self._total = 0

    async def _more(self) -> bytes:
        data = await self._stream.receive_some(STREAM_READ_SIZE)
        self._total += len(data)
        if self._total > self._cap:
            raise WireError(f"stream is over the cap of {self._cap} bytes")
        return bytes(data)

    async def exactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            data = await self._more()
            if not data:
                raise WireError(f"stream ended after {len(self._buf)} of {n} bytes")
            self._buf += data
        out, self._buf = bytes(self._buf[:n]), self._buf[n:]
        return out

    async def message(
        self, decoder: StreamDecoder
    ) -> PushPull | Ping | Ack | User | ErrorResponse | None:
        if self._buf:
            decoder.feed(bytes(self._buf))
            self._buf.clear()
        while True:
            msg = decoder.next_message()
            if msg is not None:
                return msg
            data = await self._more()
            if not data:
                decoder.eof()
                return None
            decoder.feed(data)
