"""One replica of the replicated log on the network: the trio driver of :class:`~._paxos.Replica`.

The replica listens on one TCP port for its peers and for clients (:mod:`._logwire` says how a
connection introduces itself). For every peer it keeps one outgoing connection that carries its
messages there, reconnecting with backoff; it receives on the connections peers open to it.
Messages to a peer that is unreachable are dropped: the core resends what matters on its timers.

The core does no I/O: it asks for writes (:meth:`~._core.Replica.writes_to_perform`) and holds
the messages that depend on them. One writer task performs them in a worker thread
(``trio.to_thread.run_sync``; SQLite with ``synchronous=FULL``), in order, every write queued
meanwhile in the next hop (one transaction per run of entry writes:
:func:`~._storage.perform_writes`), then reports them done, and only then are the messages
that waited handed to the connections. So an fsync never stalls the event loop: peers, clients,
timers and the layer above go on while the disk works. Loading the disk at the start and closing
it at the end run in a worker thread too. A storage failure ends :meth:`ReplicatedLog.serve` with
:class:`~._storage.StorageFailure`: a replica that cannot persist must not answer.

The layer above (the master's allocator) appends with :meth:`ReplicatedLog.append` and applies
chosen entries, in log order, in the ``on_apply`` callback; remote clients use
:class:`vxnet.replog._client.LogClient`.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from vxnet._limits import ConnectionCaps
from vxnet._sansio import DeadlineTimer
from vxnet.pki import TlsStream, peer_names, peer_role, tls_over
from vxnet.replog._core import (
    AppendDone,
    AppendFailed,
    Applied,
    LogTiming,
    Message,
    Replica,
    Role,
    SnapshotInstalled,
)
from vxnet.replog._storage import StorageFailure, perform_writes
from vxnet.replog._wire import (
    FrameReader,
    WireError,
    decode_hello,
    decode_map,
    decode_message,
    encode_frame,
    encode_message,
    peer_hello,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from vxnet.config import LogSettings, MasterConfig, TlsSettings
    from vxnet.pki import Tls
    from vxnet.replog._storage import LogStorage, Snapshot, Write

__all__ = [
    "LOG_FILE",
    "MAX_VALUE",
    "AppendUncertain",
    "NotLeader",
    "ReplicatedLog",
    "format_address",
    "log_addresses",
    "log_tls",
    "open_log_stream",
    "raise_plain",
    "run_log_replica",
]

log = logging.getLogger("vxnet.replog")

# How a connection ends when the other end leaves (reset, closed, a broken TLS stream).
_GONE = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)

MAX_VALUE = 1024 * 1024  # bytes per appended value
MAX_PENDING = 65536  # appends waiting for a round, across all clients
MAX_READ = 4096  # entries per read answer
LINK_QUEUE = 8192  # messages waiting for a peer connection
CLIENT_QUEUE = 65536  # answers waiting for a client connection
HELLO_TIMEOUT = 5.0
LOG_PER_CLIENT = 256  # connections from one address (each replica's peers and clients included)
CONNECT_TIMEOUT = 1.0
BACKOFF_MIN, BACKOFF_MAX = 0.02, 0.5
READ_SIZE = 256 * 1024
LOG_FILE = "log.sqlite"  # in master.data_dir


class NotLeader(Exception):
    """This replica does not coordinate: the append was not made. ``leader`` is a hint."""

    def __init__(self, message: str, leader: str | None) -> None:
        super().__init__(message)
        self.leader = leader


class AppendUncertain(Exception):
    """The append may or may not be in the log (the coordinator lost its position)."""


@contextlib.contextmanager
def raise_plain(kind: type[Exception]) -> Iterator[None]:
    """Re-raise a ``kind`` found in an exception group (a nursery's) as itself."""
    try:
        yield
    except BaseExceptionGroup as group:
        match, _ = group.split(kind)
        leaf: BaseException | None = match
        while isinstance(leaf, BaseExceptionGroup):
            leaf = leaf.exceptions[0]
        if leaf is not None:
            raise leaf from None
        raise


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(slots=True)
class _Link:
    """The outgoing connection to one peer."""

    peer: int
    address: tuple[str, int]
    send_channel: trio.MemorySendChannel[Message]
    receive_channel: trio.MemoryReceiveChannel[Message]
    connected: bool = False
    dropped: int = 0

    def send(self, msg: Message) -> None:
        if not self.connected:
            self.dropped += 1
            return
        try:
            self.send_channel.send_nowait(msg)
        except trio.WouldBlock:
            self.dropped += 1


class ReplicatedLog:
    """One replica: its core, its disk, its peer connections, and the clients it serves.

    Args:
        replica_id: This replica's index in ``addresses``.
        addresses: Every replica's (host, port), in the same order on every replica.
        storage: This replica's disk (opened; closed by :meth:`serve` on the way out).
        listen: Where to listen; default ``addresses[replica_id]``.
        timing: The log's timeouts.
        rng: The randomness of election timeouts (seeded in tests).
        on_apply: Called with (position, value) for every chosen entry, in log order; ``b""`` is
            a no-op filling a hole.
        on_snapshot: Called with a snapshot the replica installed (replace the state with it).
        check_snapshot: Why the state machine could not start from a peer's snapshot data, or
            None; a snapshot it refuses is never stored (see :class:`~._core.Replica`).
    """

    def __init__(
        self,
        replica_id: int,
        addresses: Sequence[tuple[str, int]],
        storage: LogStorage,
        *,
        listen: tuple[str, int] | None = None,
        timing: LogTiming | None = None,
        rng: random.Random | None = None,
        on_apply: Callable[[int, bytes], None] | None = None,
        on_snapshot: Callable[[Snapshot], None] | None = None,
        check_snapshot: Callable[[bytes], str | None] | None = None,
        tls: Tls | None = None,
    ) -> None:
        if not 0 <= replica_id < len(addresses):
            raise ValueError(f"replica {replica_id} is not one of the {len(addresses)} addresses")
        self.id = replica_id
        self.addresses = list(addresses)
        self.n = len(addresses)
        self.storage = storage
        self.listen = listen or addresses[replica_id]
        self.timing = timing or LogTiming()
        self.rng = rng or random.Random()
        self.on_apply = on_apply
        self.on_snapshot = on_snapshot
        self.check_snapshot = check_snapshot
        self.tls = tls  # None: plain TCP
        # Peers, the master's own clients and tools: many per address on one host (loopback).
        self.caps = ConnectionCaps(per_client=LOG_PER_CLIENT)
        self.replica: Replica | None = None
        self.appends = 0
        self.failed_appends = 0
        self.leader_changes = 0
        self.peer_messages = 0  # messages from peers handed to the core
        self.impostors = 0  # peer connections whose certificate names another address
        self._last_leader: int | None = None
        self._links: dict[int, _Link] = {}
        self._waiters: dict[int, Callable[[int | Exception], None]] = {}
        self._ids = itertools.count(1)
        self._timer = DeadlineTimer(self._next_deadline, self._tick)
        self._nursery: trio.Nursery | None = None
        self._failure: StorageFailure | None = None
        self._writes_ready = trio.Event()  # set when the core asked for writes

    # --- the layer above ------------------------------------------------------------------------

    @property
    def core(self) -> Replica:
        if self.replica is None:
            raise RuntimeError("the replicated log is not serving")
        return self.replica

    async def append(self, value: bytes) -> int:
        """Append ``value`` through this replica; its position once it is chosen.

        Raises:
            NotLeader: This replica does not coordinate (nothing was appended).
            AppendUncertain: The coordinator stepped down with the append in flight.
            ValueError: ``value`` is larger than :data:`MAX_VALUE`.
        """
        done = trio.Event()
        result: list[int | Exception] = []

        def answer(outcome: int | Exception) -> None:
            result.append(outcome)
            done.set()

        self._submit(value, answer)
        await done.wait()
        if isinstance(result[0], Exception):
            raise result[0]
        return result[0]

    def leader_address(self) -> str | None:
        """The coordinator's address as far as this replica knows, or None."""
        core = self.replica
        if core is None or core.leader is None:
            return None
        return format_address(*self.addresses[core.leader])

    def is_leader(self) -> bool:
        return self.replica is not None and self.replica.role is Role.COORDINATOR

    def compact(self, position: int, data: bytes) -> None:
        """Truncate the log below ``position``; ``data`` is the state after applying it all.

        The snapshot is written by the writer task, like every write; if the disk fails, the
        replica stops (:meth:`serve` raises :class:`~._storage.StorageFailure`).

        Raises:
            ValueError: ``position`` is above what was applied.
        """
        self.core.compact(position, data)
        self._writes_ready.set()

    def info(self) -> dict[str, Any]:
        """This replica's view, for status commands and metrics."""
        core = self.core
        return {
            "replica": self.id,
            "address": format_address(*self.addresses[self.id]),
            "replicas": [format_address(*a) for a in self.addresses],
            "quorum": core.quorum,
            "role": core.role.value,
            "status": core.status.name,
            "leader": self.leader_address(),
            "ballot": core.promised,
            "commit": core.commit,
            "applied": core.applied,
            "snapshot": core.snapshot.position if core.snapshot is not None else None,
            "appends": self.appends,
            "failed_appends": self.failed_appends,
            "leader_changes": self.leader_changes,
            "peer_messages": self.peer_messages,
            "impostors": self.impostors,
            "refused": core.refused,  # peers' messages dropped (out of range, unasked, bad)
            "writes_pending": core.writes_pending(),
            "peers": {
                format_address(*link.address): {
                    "connected": link.connected,
                    "dropped": link.dropped,
                }
                for link in self._links.values()
            },
        }

    def read(self, start: int, limit: int) -> dict[str, Any]:
        """Chosen entries from ``start`` (at most ``limit``, up to the commit index)."""
        core = self.core
        snapshot = core.snapshot.position if core.snapshot is not None else None
        start = max(start, snapshot or 0)
        stop = min(core.commit, start + max(0, min(limit, MAX_READ)))
        entries = [[pos, core.entries[pos].value] for pos in range(start, stop)]
        return {"entries": entries, "commit": core.commit, "snapshot": snapshot}

    # --- serving --------------------------------------------------------------------------------

    async def serve(
        self, *, task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen, connect to the peers and run the replica until cancelled.

        Raises:
            StorageFailure: The disk failed; the replica stopped.
            OSError: The listen address cannot be bound.
        """
        host, port = self.listen
        try:
            listeners = await trio.open_tcp_listeners(port, host=host)
            bound = listeners[0].socket.getsockname()[:2]
            durable = await trio.to_thread.run_sync(self.storage.load)
            self.replica = Replica(
                self.id,
                self.n,
                durable,
                rng=self.rng,
                now=trio.current_time(),
                timing=self.timing,
                check_snapshot=self.check_snapshot,
            )
            with raise_plain(StorageFailure):
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    for peer in range(self.n):
                        if peer != self.id:
                            send, receive = trio.open_memory_channel[Message](LINK_QUEUE)
                            link = _Link(peer, self.addresses[peer], send, receive)
                            self._links[peer] = link
                            nursery.start_soon(self._run_link, link)
                    await nursery.start(trio.serve_listeners, self._handle_conn, listeners)
                    nursery.start_soon(self._timer.run)
                    nursery.start_soon(self._run_writer)
                    self._flush()
                    log.info(
                        "log replica %d of %d on %s (status %s)",
                        self.id,
                        self.n,
                        format_address(*bound),
                        self.core.status.name,
                    )
                    task_status.started((bound[0], bound[1]))
            if self._failure is not None:
                raise self._failure
        finally:
            self._nursery = None
            for answer in self._waiters.values():
                answer(AppendUncertain("the replica stopped"))
            self._waiters.clear()
            # The writer has stopped. Write the chosen marks held in memory, and what was still
            # queued (harmless: nothing that waited for it was sent), unless the disk failed.
            writes = []
            if self._failure is None and self.replica is not None:
                self.replica.flush()
                writes = self.replica.writes_to_perform()
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self._close, writes)

    def _close(self, writes: Sequence[Write]) -> None:
        """In a worker thread: the last writes, then close the disk."""
        with contextlib.suppress(StorageFailure):
            perform_writes(self.storage, writes)
        with contextlib.suppress(Exception):
            self.storage.close()

    def _submit(self, value: bytes, answer: Callable[[int | Exception], None]) -> None:
        core = self.core
        if len(value) > MAX_VALUE:
            raise ValueError(f"value of {len(value)} bytes exceeds the limit of {MAX_VALUE}")
        if core.role is not Role.COORDINATOR:
            leader = self.leader_address()
            reason = "no coordinator is elected yet"
            if leader is not None:
                reason = f"the coordinator is {leader}"
            answer(NotLeader(f"replica {self.id} does not coordinate: {reason}", leader))
            return
        if len(self._waiters) >= MAX_PENDING:
            answer(NotLeader(f"replica {self.id} is overloaded: {MAX_PENDING} appends wait", None))
            return
        request = next(self._ids)
        self._waiters[request] = answer
        core.append(request, value, trio.current_time())
        self._flush()

    def _stop(self, failure: StorageFailure) -> None:
        """The disk failed under the writer: stop serving; :meth:`serve` raises it."""
        log.critical("log replica %d stops: %s", self.id, failure)
        self._failure = failure
        for answer in self._waiters.values():
            answer(AppendUncertain(f"the replica stopped: {failure}"))
        self._waiters.clear()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def _flush(self) -> None:
        """Hand the core's messages to the links, its events to their owners; re-arm the timer."""
        core = self.core
        for peer, msg in core.messages_to_send():
            self._links[peer].send(msg)
        for event in core.events():
            if isinstance(event, Applied):
                if self.on_apply is not None:
                    self.on_apply(event.position, event.value)
            elif isinstance(event, AppendDone):
                self.appends += 1
                answer = self._waiters.pop(event.request, None)
                if answer is not None:
                    answer(event.position)
            elif isinstance(event, AppendFailed):
                self.failed_appends += 1
                answer = self._waiters.pop(event.request, None)
                if answer is not None:
                    answer(AppendUncertain(f"replica {self.id}: {event.reason}"))
            elif isinstance(event, SnapshotInstalled) and self.on_snapshot is not None:
                self.on_snapshot(event.snapshot)
        if core.leader != self._last_leader:
            self._last_leader = core.leader
            if core.leader is not None:
                self.leader_changes += 1
                log.info("log coordinator is now %s", self.leader_address())
        if core.writes_queued():
            self._writes_ready.set()
        self._timer.reset()

    async def _run_writer(self) -> None:
        """Perform the core's writes in a worker thread, in order, one batch at a time; then
        report them done and release what waited for them."""
        core = self.core
        while True:
            writes = core.writes_to_perform()
            if not writes:
                self._writes_ready = trio.Event()
                await self._writes_ready.wait()
                continue
            try:
                await trio.to_thread.run_sync(perform_writes, self.storage, writes)
            except StorageFailure as exc:
                self._stop(exc)
                return
            core.write_done(writes[-1].seq, trio.current_time())
            self._flush()

    def _next_deadline(self) -> float:
        return self.core.next_deadline()

    def _tick(self, now: float) -> None:
        self.core.tick(now)
        self._flush()

    # --- peers ------------------------------------------------------------------------------------

    async def _run_link(self, link: _Link) -> None:
        hello = encode_frame(peer_hello(self.n, self.id))
        backoff = BACKOFF_MIN
        where = format_address(*link.address)
        failing = False
        while True:
            stream: trio.abc.Stream | None = None
            try:
                with trio.fail_after(CONNECT_TIMEOUT):
                    stream = await open_log_stream(link.address, self.tls)
                await stream.send_all(hello)
                link.connected = True
                backoff = BACKOFF_MIN
                if failing:
                    log.info("log replica %d at %s: connected", link.peer, where)
                failing = False
                async with stream:
                    while True:
                        batch = [await link.receive_channel.receive()]
                        with contextlib.suppress(trio.WouldBlock):
                            while len(batch) < 1024:
                                batch.append(link.receive_channel.receive_nowait())
                        data = b"".join(encode_frame(encode_message(m)) for m in batch)
                        await stream.send_all(data)
            except (OSError, trio.BrokenResourceError, trio.TooSlowError) as exc:
                if not failing:
                    log.warning("log replica %d at %s: %s", link.peer, where, exc or "timed out")
                failing = True
            finally:
                link.connected = False
                if stream is not None:
                    await trio.aclose_forcefully(stream)
            with contextlib.suppress(trio.WouldBlock):  # stale while down: the core resends
                while True:
                    link.receive_channel.receive_nowait()
            await trio.sleep(backoff * (1 + self.rng.random()))
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def _handle_conn(self, tcp: trio.SocketStream) -> None:
        address = "?"
        with contextlib.suppress(OSError, IndexError, TypeError):
            address = str(tcp.socket.getpeername()[0])
        refusal = self.caps.admit(address)
        if refusal is not None:
            log.debug("log connection from %s refused: %s", address, refusal)
            await trio.aclose_forcefully(tcp)
            return
        try:
            await self._handle_admitted(tcp)
        finally:
            self.caps.release(address)

    async def _handle_admitted(self, tcp: trio.SocketStream) -> None:
        reader = FrameReader()
        peer = "?"
        stream: trio.abc.Stream = tcp
        try:
            with contextlib.suppress(OSError):
                peer = format_address(*tcp.socket.getpeername()[:2])
            role: str | None = None
            if self.tls is not None:  # nothing is read from the connection before this
                # A peer that closes without close_notify has just left (every message is
                # framed, so a cut-off one is seen as such).
                accepted = await self._handshake(tcp, self.tls, peer)
                if accepted is None:
                    return
                stream, role = accepted
            bodies: list[object] = []
            with trio.move_on_after(HELLO_TIMEOUT):
                while not bodies:
                    data = await stream.receive_some(READ_SIZE)
                    if not data:
                        return
                    bodies = list(reader.feed(data))
            if not bodies:
                log.warning("log connection from %s: no hello in %.0f s", peer, HELLO_TIMEOUT)
                return
            hello = decode_hello(bodies[0])
            allowed = ("master",) if hello.kind == "peer" else ("master", "operator")
            if self.tls is not None and role not in allowed:
                log.warning(
                    "log connection from %s refused: a %s certificate may not act as a %s",
                    peer,
                    role,
                    "replica" if hello.kind == "peer" else "client",
                )
                return
            if hello.kind == "peer":
                if hello.n != self.n or hello.replica == self.id:
                    raise WireError(
                        f"replica {hello.replica} of {hello.n} called replica {self.id} of "
                        f"{self.n}: the log.replicas lists differ between masters"
                    )
                if self.tls is not None and not self._certified_as(stream, hello.replica):
                    self.impostors += 1
                    log.warning(
                        "log connection from %s refused: its master certificate does not name "
                        "replica %d's address %s",
                        peer,
                        hello.replica,
                        self.addresses[hello.replica][0],
                    )
                    return
                await self._serve_peer(hello.replica, stream, reader, bodies[1:])
            else:
                await self._serve_client(stream, reader, bodies[1:], peer)
        except WireError as exc:
            log.warning("log connection from %s dropped: %s", peer, exc)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(stream)

    def _certified_as(self, stream: trio.abc.Stream, replica: int) -> bool:
        """Whether the certificate on ``stream`` names replica ``replica``'s address (as
        log.replicas spells it): a master's certificate speaks for that master only."""
        der = stream.getpeercert(binary_form=True) if isinstance(stream, TlsStream) else None
        return self.addresses[replica][0].lower() in peer_names(der)

    async def _handshake(
        self, tcp: trio.SocketStream, tls: Tls, peer: str
    ) -> tuple[TlsStream, str] | None:
        """The TLS handshake on ``tcp`` within ``HELLO_TIMEOUT``: the stream and the peer's role,
        or ``None`` (logged, the connection closed) when it fails or carries no role."""
        try:
            with trio.fail_after(HELLO_TIMEOUT):
                stream = await tls_over(tcp, tls.server, server_side=True)
        except trio.TooSlowError:
            log.warning("log connection from %s: no TLS handshake in %.0f s", peer, HELLO_TIMEOUT)
            return None
        except trio.BrokenResourceError as exc:
            log.warning("log connection from %s: TLS handshake failed: %s", peer, exc.__cause__)
            return None
        role = peer_role(stream.getpeercert(binary_form=True))
        if role is None:
            log.warning("log connection from %s refused: its certificate has no role", peer)
            await trio.aclose_forcefully(stream)
            return None
        return stream, role

    async def _serve_peer(
        self, src: int, stream: trio.abc.Stream, reader: FrameReader, bodies: list[object]
    ) -> None:
        core = self.core
        while True:
            if bodies:
                now = trio.current_time()
                for body in bodies:
                    core.receive(src, decode_message(body), now)
                    self.peer_messages += 1
                self._flush()
            data = await stream.receive_some(READ_SIZE)
            if not data:
                return
            bodies = list(reader.feed(data))

    # --- clients ----------------------------------------------------------------------------------

    async def _serve_client(
        self, stream: trio.abc.Stream, reader: FrameReader, bodies: list[object], peer: str
    ) -> None:
        send, receive = trio.open_memory_channel[dict[str, Any]](CLIENT_QUEUE)

        def reply(answer: dict[str, Any]) -> None:
            with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
                try:
                    send.send_nowait(answer)
                except trio.WouldBlock:
                    send.close()  # a client that does not read its answers is dropped

        async def write() -> None:
            async with receive:
                async for answer in receive:
                    batch = [answer]
                    with contextlib.suppress(trio.WouldBlock):
                        while len(batch) < 1024:
                            batch.append(receive.receive_nowait())
                    try:
                        await stream.send_all(b"".join(encode_frame(a) for a in batch))
                    except _GONE:
                        return  # the client left; the reader sees it too

        async with trio.open_nursery() as nursery:
            nursery.start_soon(write)
            try:
                while True:
                    for body in bodies:
                        self._client_request(decode_map(body, "request"), reply)
                    data = await stream.receive_some(READ_SIZE)
                    if not data:
                        return
                    bodies = list(reader.feed(data))
            except WireError as exc:
                log.warning("log client %s dropped: %s", peer, exc)
            except _GONE:
                pass  # however a client leaves, it is no failure of this replica
            finally:
                send.close()
                nursery.cancel_scope.cancel()

    def _client_request(self, req: dict[str, Any], reply: Callable[[dict[str, Any]], None]) -> None:
        rid = req["id"]
        op = req.get("op")
        if op == "append":
            value = req.get("value")
            if not isinstance(value, bytes):
                reply(_error(rid, "append: value is not bytes", definite=True))
                return
            if len(value) > MAX_VALUE:
                reply(
                    _error(
                        rid,
                        f"append: value of {len(value)} bytes exceeds the limit of {MAX_VALUE}",
                        definite=True,
                    )
                )
                return

            def answer(outcome: int | Exception) -> None:
                if isinstance(outcome, NotLeader):
                    reply(_error(rid, str(outcome), definite=True, leader=outcome.leader))
                elif isinstance(outcome, Exception):
                    reply(_error(rid, str(outcome), definite=False))
                else:
                    reply({"id": rid, "ok": True, "position": outcome})

            self._submit(value, answer)
        elif op == "status":
            reply({"id": rid, "ok": True, **self.info()})
        elif op == "read":
            start, limit = req.get("from", 0), req.get("limit", MAX_READ)
            if type(start) is not int or type(limit) is not int or start < 0 or limit < 0:
                reply(_error(rid, "read: from and limit must be non-negative integers", True))
                return
            reply({"id": rid, "ok": True, **self.read(start, limit)})
        else:
            reply(_error(rid, f"unknown op {op!r} (append, status, read)", definite=True))


def _error(rid: int, message: str, definite: bool, leader: str | None = None) -> dict[str, Any]:
    """A failed request; ``definite`` says it certainly had no effect (safe to retry)."""
    return {"id": rid, "ok": False, "error": message, "definite": definite, "leader": leader}


def log_tls(settings: TlsSettings) -> Tls | None:
    """The TLS contexts of ``[tls]``, or ``None`` when it names no files (plain TCP).

    Raises:
        PkiError: A file cannot be used (the message names it), or the certificate is not a
            master's.
    """
    from vxnet.pki import tls_of

    return tls_of(settings.ca, settings.cert, settings.key, "master")


def log_addresses(
    settings: LogSettings,
) -> tuple[int, list[tuple[str, int]], tuple[str, int]]:
    """(this replica's index, every replica's address, the listen address) from ``[log]``.

    Raises:
        ValueError: The settings do not name this replica (the config check prevents it).
    """
    from vxnet.config import parse_hostport

    listen = parse_hostport(settings.listen, any_port=True)
    me = settings.advertise if settings.advertise is not None else settings.listen
    if not settings.replicas:
        return 0, [parse_hostport(me, any_port=True)], listen
    if me not in settings.replicas:
        raise ValueError(f"log: {me!r} is not one of log.replicas {list(settings.replicas)}")
    addresses = [parse_hostport(r) for r in settings.replicas]
    return settings.replicas.index(me), addresses, listen


async def open_log_stream(address: tuple[str, int], tls: Tls | None) -> trio.abc.Stream:
    """A connection to the replica at ``address``: TCP, or with ``tls`` a TLS 1.3 stream whose
    handshake verified a master's certificate naming ``address``'s host.

    Raises:
        OSError: The replica cannot be reached, or its certificate is not a master's.
        trio.BrokenResourceError: The TLS handshake failed (the reason is its ``__cause__``).
    """
    tcp = await trio.open_tcp_stream(*address)
    if tls is None:
        return tcp
    stream = await tls_over(tcp, tls.client, server_side=False, server_hostname=address[0])
    try:
        role = peer_role(stream.getpeercert(binary_form=True))
        if role != "master":
            raise OSError(f"{format_address(*address)}: its certificate is not a master's ({role})")
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return stream


async def run_log_replica(
    config: MasterConfig,
    *,
    task_status: trio.TaskStatus[ReplicatedLog] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the replica of ``config`` (data in ``master.data_dir``) until SIGINT/SIGTERM.

    SIGHUP reloads the ``[tls]`` files for new connections (:func:`vxnet.pki.reload_logged`);
    the established ones, the quorum's among them, are kept.

    Raises:
        StorageFailure: The disk cannot be used or failed.
        OSError: The listen address cannot be bound.
    """
    import signal
    from pathlib import Path

    from vxnet.pki import reload_logged
    from vxnet.replog._sqlite import SqliteLogStorage

    replica_id, addresses, listen = log_addresses(config.log)
    # Opening initialises a new file (commits, a directory fsync): off the event loop too.
    storage = await trio.to_thread.run_sync(
        SqliteLogStorage, Path(config.master.data_dir) / LOG_FILE
    )
    replica = ReplicatedLog(replica_id, addresses, storage, listen=listen, tls=log_tls(config.tls))
    with (
        trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals,
        raise_plain(StorageFailure),
    ):
        async with trio.open_nursery() as nursery:
            await nursery.start(replica.serve)
            task_status.started(replica)
            async for signum in signals:
                if signum == signal.SIGHUP:
                    reload_logged(replica.tls, log)
                    continue
                log.info("received %s: stopping", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break
