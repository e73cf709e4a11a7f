"""The agent's DNS server: vxnet's zone from the replicated store, and forwarding for the rest.

:class:`DnsService` (run by ``vxnet agent``) keeps a :class:`~._zone.Zone` built from the live
``tasks/`` records of the store, rebuilt and swapped whole when they change (a store change, or
once a second when an owner crossed the grace period, since a dead agent's records drop out
without a store event). It answers on every ``dns.listen`` address:

* UDP: one non-blocking socket per address; each wake-up drains the socket and answers every
  packet at once, mostly from the zone's pre-encoded replies, up to 64 per ``recvmmsg`` and
  ``sendmmsg`` (:mod:`._mmsg`; ``recvfrom``/``sendto`` where those are missing), yielding to the
  agent's other tasks every 2 ms while packets keep coming (a flood costs them at most that
  much delay per turn). No per-packet logging.
* TCP: 2-byte length framing, several queries per connection, an idle timeout.
* Names outside the zone: forwarded to ``dns.upstreams`` (two at a time, the first answer wins,
  5 s, SERVFAIL when all fail) over the transport the client used, for clients inside
  ``dns.forward_clients`` or the overlay's networks; others get REFUSED, and so does everyone
  when no upstream is configured.
* Loop guard (DC/OS's resolver once forwarded to itself through /etc/resolv.conf): an upstream
  that is one of our own listen addresses is never asked, and every forwarded query carries an
  EDNS option (code 65310) with this server's random mark, keeping the marks it arrived with. A
  query that comes back with our own mark, or that has been through 4 vxnet servers, is answered
  SERVFAIL at once (logged once), instead of circling until every hop times out.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import random
import socket
import struct
import time
from ipaddress import ip_address, ip_network
from typing import TYPE_CHECKING, Any

import trio

from vxnet._limits import ConnectionCaps
from vxnet.dns._mmsg import BUFFER as MMSG_BUFFER
from vxnet.dns._mmsg import Batch
from vxnet.dns._mmsg import available as mmsg_available
from vxnet.dns._pool import WorkerPool, reuseport_sockets, set_freebind
from vxnet.dns._rrl import SEND, RateLimiter, client_prefix
from vxnet.dns._tally import LATENCY_BUCKETS, Tally
from vxnet.dns._wire import error_reply
from vxnet.dns._worker import WorkerSettings
from vxnet.dns._zone import Answer, Zone, task_from_record
from vxnet.records import TASK_PREFIX

if TYPE_CHECKING:
    from ipaddress import IPv4Network, IPv6Network

    from vxnet.config import DnsSettings
    from vxnet.gossip import GossipService
    from vxnet.records import TaskRecord

__all__ = [
    "LATENCY_BUCKETS",
    "DnsService",
    "error_reply",
    "kernel_drops",
    "mark_query",
    "strip_opt",
]

log = logging.getLogger("vxnet.dns")

FORWARD_TIMEOUT = 5.0
TCP_IDLE = 10.0
MAX_UDP = 65535
RECHECK = 1.0
BATCH = 64
FORWARD_RATE = 1000  # forwarded queries per second from one client address
MAX_FORWARDING = 512  # queries waiting on upstreams at once
TCP_PER_CLIENT = 64  # open TCP connections from one client address
SLICE = 0.002  # seconds of answering UDP before the other tasks of the agent get their turn
DEBOUNCE = 0.02
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


def _packed(host: str) -> bytes:
    """A client's address in binary (b"" for one that is not an address)."""
    host = host.split("%")[0]
    try:
        return socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except OSError:
        return b""


def _peer_prefix(peer: Any) -> bytes:
    """The rate limiter's key of the client ``peer`` (a socket address): its prefix."""
    return client_prefix(_packed(str(peer[0])))


def kernel_drops(inodes: set[int], proc: str = "/proc/net") -> int | None:
    """The drops the kernel counted on the UDP sockets with ``inodes`` (the last column of
    ``/proc/net/udp`` and ``udp6``, the tenth is the inode); None when neither file reads."""
    total, read = 0, False
    for name in ("udp", "udp6"):
        try:
            with open(f"{proc}/{name}") as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        read = True
        for line in lines:
            fields = line.split()
            if len(fields) >= 13 and fields[9].isdigit() and int(fields[9]) in inodes:
                total += int(fields[-1]) if fields[-1].isdigit() else 0
    return total if read else None


LOOP_OPTION = 65310  # EDNS option code (local use) carrying the marks of vxnet forwarders
MAX_HOPS = 4


def mark_query(query: bytes, mark: bytes) -> tuple[bytes, bool] | None:
    """``query`` with ``mark`` added to its loop option, and whether it had an OPT record;
    None when it already carries ``mark`` or ``MAX_HOPS`` marks (a loop)."""
    from dnslib import EDNS0, DNSError, DNSRecord, EDNSOption

    try:
        record = DNSRecord.parse(query)
    except (DNSError, ValueError, IndexError, struct.error):
        return query, False  # the upstream will say what is wrong with it
    opt = next((rr for rr in record.ar if rr.rtype == 41), None)
    had_opt = opt is not None
    if opt is None:
        opt = EDNS0(udp_len=1232)
        record.add_ar(opt)
    marks = b"".join(o.data for o in opt.rdata if o.code == LOOP_OPTION)
    seen = [marks[i : i + 8] for i in range(0, len(marks), 8)]
    if mark in seen or len(seen) >= MAX_HOPS:
        return None
    opt.rdata = [o for o in opt.rdata if o.code != LOOP_OPTION]
    opt.rdata.append(EDNSOption(LOOP_OPTION, marks + mark))
    return record.pack(), had_opt


def strip_opt(reply: bytes) -> bytes:
    """``reply`` without its OPT record (for a client that sent none)."""
    from dnslib import DNSError, DNSRecord

    try:
        record = DNSRecord.parse(reply)
    except (DNSError, ValueError, IndexError, struct.error):
        return reply
    record.ar = [rr for rr in record.ar if rr.rtype != 41]
    return bytes(record.pack())


class DnsService:
    """One agent's DNS server; :meth:`run` until cancelled.

    Args:
        settings: The ``[dns]`` settings.
        gossip: The agent's gossip node (its store holds the task records).
        overlay_networks: A callable giving the overlay's networks (clients there may forward).
        container_addresses: Addresses to answer on port 53 as well (``dns.container_addresses``,
            on the overlay's device ``vxnet-dns``), bound before the device has them.
    """

    def __init__(
        self,
        settings: DnsSettings,
        gossip: GossipService,
        overlay_networks: Any = None,
        container_addresses: tuple[str, ...] = (),
    ) -> None:
        self.settings = settings
        # (entry, whether the address may not be on a device yet)
        self._listen = [(entry, False) for entry in settings.listen] + [
            (f"[{a}]:53" if ":" in a else f"{a}:53", True)
            for a in container_addresses
            if (f"[{a}]:53" if ":" in a else f"{a}:53") not in settings.listen
        ]
        self.gossip = gossip
        self.zone = Zone([], suffix=settings.suffix, serial=1)
        self.serial = 1
        self.bad_records: dict[str, str] = {}
        self.tally = Tally()  # what this process answered (the workers count their own)
        self.workers = workers_for(settings)
        self.pool: WorkerPool | None = None
        self._tasks: list[TaskRecord] = []  # the zone's, for the workers
        self._clients = [ip_network(n) for n in settings.forward_clients]
        self._overlay_networks = overlay_networks
        self._own = {_addr(a) for a, _ in self._listen}
        self._upstreams = [_addr(u) for u in settings.upstreams if _addr(u) not in self._own]
        self._mark = random.getrandbits(64).to_bytes(8, "big")
        self._loop_said = False
        self._changed = trio.Event()
        self._builder = trio.CapacityLimiter(1)
        self._build_time = 0.0
        self._hidden: frozenset[str] = frozenset()
        self.bound: list[tuple[str, int]] = []
        self._inodes: set[int] = set()  # the UDP sockets', to find their kernel drop counts
        self.limiter = (
            RateLimiter(settings.rate_limit, settings.rate_limit_slip)
            if settings.rate_limit
            else None
        )
        # Forwarding costs an upstream's time: a cap per client address, and on all at once.
        self.forward_limiter = RateLimiter(FORWARD_RATE, slip=0)
        self._forwarding = 0
        self.tcp_caps = ConnectionCaps(per_client=TCP_PER_CLIENT)

    # --- the zone -------------------------------------------------------------------------------

    def zone_size(self) -> int:
        """How many records the zone serves."""
        return len(self.zone.records())

    async def rebuild(self) -> None:
        """Build the zone from the store's live task records (in a worker thread, on top of the
        previous zone: 10,000 tasks take about 1.8 s from scratch and 1.1 s when few changed) and
        swap it in; queries meanwhile get the previous zone."""
        self._hidden = self.gossip.hidden_owners()
        records = self.gossip.records(TASK_PREFIX, live=True)
        tasks = []
        bad: dict[str, str] = {}
        for record in records:
            try:
                tasks.append(task_from_record(record["value"]))
            except ValueError as exc:
                bad[record["key"]] = str(exc)
        for key in set(bad) - set(self.bad_records):
            log.warning("DNS ignores the task record %s: %s", key, bad[key])
        self.bad_records = bad
        self.serial += 1
        serial, suffix, previous = self.serial, self.settings.suffix, self.zone
        started = time.perf_counter()
        self.zone = await trio.to_thread.run_sync(
            lambda: Zone(tasks, suffix=suffix, serial=serial, previous=previous),
            limiter=self._builder,
        )
        self._build_time = time.perf_counter() - started
        self._tasks = tasks
        await self._publish()

    async def _publish(self) -> None:
        if self.pool is not None:
            await self.pool.publish(self.serial, self._tasks)

    async def _watch(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._subscribe)
            while True:
                with trio.move_on_after(RECHECK):
                    await self._changed.wait()
                changed, self._changed = self._changed.is_set(), trio.Event()
                if changed:
                    # gather a burst into one rebuild; a zone that takes long to build is not
                    # rebuilt more than half the time, so the agent's other work goes on
                    await trio.sleep(max(DEBOUNCE, self._build_time))
                    self._changed = trio.Event()
                    await self.rebuild()
                    continue
                if self.gossip.hidden_owners() != self._hidden:
                    await self.rebuild()  # an owner went beyond the grace, or came back

    async def _subscribe(self) -> None:
        while True:
            subscription = self.gossip.subscribe(TASK_PREFIX)
            # what changed between the last build and this subscription (records that came
            # while the workers started, say) is seen by nobody else
            self._changed.set()
            async for _ in subscription.changes:
                self._changed.set()
            self._changed.set()

    # --- serving --------------------------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[list[tuple[str, int]]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until cancelled; ``task_status`` gets the bound addresses.

        Raises:
            OSError: An address cannot be bound (the message names it).
        """
        await self.rebuild()
        sockets: list[socket.socket] = []  # this process's UDP sockets, or none with workers
        groups: list[list[socket.socket]] = []  # per address, one socket per worker
        listeners: list[trio.SocketListener] = []
        try:
            for entry, free in self._listen:
                host, port = _addr(entry)
                family = socket.AF_INET6 if ":" in host else socket.AF_INET
                try:
                    if self.workers:
                        group = reuseport_sockets(host, port, self.workers, freebind=free)
                        groups.append(group)
                    else:
                        group = [socket.socket(family, socket.SOCK_DGRAM)]
                        sockets.append(group[0])
                        if free:
                            set_freebind(group[0])
                        group[0].bind((host, port))
                        group[0].setblocking(False)
                except OSError as exc:
                    raise OSError(
                        exc.errno, f"DNS cannot listen on {entry} (UDP): {exc.strerror}"
                    ) from exc
                self._inodes.update(os.fstat(udp.fileno()).st_ino for udp in group)
                port = group[0].getsockname()[1]
                tcp = trio.socket.socket(family, socket.SOCK_STREAM)
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if free:
                    set_freebind(tcp)
                try:
                    await tcp.bind((host, port))
                except OSError as exc:
                    tcp.close()
                    raise OSError(
                        exc.errno, f"DNS cannot listen on {entry} (TCP): {exc.strerror}"
                    ) from exc
                tcp.listen(128)
                listeners.append(trio.SocketListener(tcp))
                self.bound.append((host, port))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch)
                if groups:
                    settings = WorkerSettings(
                        self.settings.suffix,
                        self.settings.rate_limit,
                        self.settings.rate_limit_slip,
                    )
                    self.pool = WorkerPool(groups, settings, self._forward_for_worker)
                    await self._publish()
                    await nursery.start(self.pool.run)
                for udp in sockets:
                    nursery.start_soon(self._serve_udp, udp, nursery)
                nursery.start_soon(trio.serve_listeners, self._serve_tcp, listeners)
                log.info(
                    "DNS on %s (zone %s, %s)",
                    ", ".join(f"{h}:{p}" for h, p in self.bound),
                    self.settings.suffix,
                    f"{self.workers} UDP worker processes" if groups else "UDP in the agent",
                )
                task_status.started(list(self.bound))
        finally:
            for udp in sockets + [u for group in groups for u in group]:
                udp.close()

    async def _forward_for_worker(self, query: bytes, client: str) -> bytes | None:
        return await self._forward(query, client, tcp=False)

    async def _serve_udp(self, sock: socket.socket, nursery: trio.Nursery) -> None:
        """Answer on ``sock`` until cancelled.

        Each wake-up drains the socket. Queries in the zone's pre-encoded table are answered
        with nothing but a dict lookup and ``sendto``, and counted and timed per batch (their
        latency is the batch's average); the others go through :meth:`Zone.answer`.
        """
        if mmsg_available():
            await self._serve_udp_batched(sock, nursery)
            return
        buffer = bytearray(MAX_UDP)
        view = memoryview(buffer)
        receive, sendto = sock.recvfrom_into, sock.sendto
        while True:
            await trio.lowlevel.wait_readable(sock)
            zone = self.zone
            fast = zone.fast
            served = missing = packets = 0
            start = time.perf_counter()
            while True:  # drain: everything queued now, without an await per packet
                packets += 1
                if packets & 63 == 0 and time.perf_counter() - start > SLICE:
                    self._count_batch(served, missing, start)
                    served = missing = 0
                    await trio.lowlevel.checkpoint()  # a flood must not starve the agent
                    start = time.perf_counter()
                try:
                    size, peer = receive(buffer)
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH):
                        continue  # an ICMP error for an earlier reply
                    raise
                data = bytes(view[:size])
                reply = fast(data)
                if reply is not None and self.limiter is not None:
                    self.limiter.now = time.monotonic()
                    reply = self._limit(_peer_prefix(peer), reply)
                    if reply is None:
                        continue
                if reply is not None:
                    try:  # noqa: SIM105 (a context manager per packet costs time)
                        sendto(reply, peer)
                    except OSError:
                        pass
                    served += 1
                    if reply[3] & 0x0F:
                        missing += 1
                    continue
                answer = self._answer_slow(zone, data)
                if answer.reply is not None:
                    slow_reply = self._limit(_peer_prefix(peer), answer.reply)
                    if slow_reply is not None:
                        with contextlib.suppress(OSError):
                            sendto(slow_reply, peer)
                elif answer.forward:
                    nursery.start_soon(self._forward_udp, sock, data, peer)
            self._count_batch(served, missing, start)

    async def _serve_udp_batched(self, sock: socket.socket, nursery: trio.Nursery) -> None:
        """:meth:`_serve_udp` with ``recvmmsg``/``sendmmsg``: up to 64 queries per system call
        each way (:mod:`._mmsg`), each batch timed from its queries' arrival in the kernel."""
        batch = Batch(sock, BATCH, timestamps=True)
        limiter = self.limiter
        while True:
            await trio.lowlevel.wait_readable(sock)
            zone = self.zone
            fast = zone.fast
            query, reply_to = batch.query, batch.reply
            start = time.perf_counter()
            while True:
                received = batch.receive()
                if limiter is not None:
                    limiter.now = time.monotonic()
                missed = batch.answer_all(received, fast, limiter)
                served = batch.queued
                missing = 0
                for reply_slot in range(served):
                    if batch.out_view[reply_slot * MMSG_BUFFER + 3] & 0x0F:
                        missing += 1
                for i in missed:
                    data = query(i)
                    answer = self._answer_slow(zone, data)
                    if answer.reply is not None:
                        reply = self._limit(batch.prefix(i), answer.reply)
                        if reply is not None:
                            reply_to(i, reply)
                    elif answer.forward:
                        nursery.start_soon(self._forward_udp, sock, data, batch.peer(i))
                batch.flush()
                self.tally.count_batch(served, missing, batch.waited(received, time.time_ns()))
                if received < BATCH:
                    break  # drained
                if time.perf_counter() - start > SLICE:
                    # Full batches keep coming: let the rest of the agent (gossip probes and
                    # acks, the API, the store) run before the next slice.
                    await trio.lowlevel.checkpoint()
                    start = time.perf_counter()

    def _limit(self, prefix: bytes, reply: bytes) -> bytes | None:
        """``reply`` as the rate limiter lets it go to a client of ``prefix``: whole, truncated
        (slip) or not at all (None)."""
        return reply if self.limiter is None else self.limiter.limit(prefix, reply)

    def kernel_drops(self) -> int | None:
        """Queries the kernel dropped before this server read them (its UDP sockets' receive
        queues overflowed), from ``/proc/net/udp`` and ``udp6``; None where those cannot be
        read."""
        return kernel_drops(self._inodes)

    def _answer_slow(self, zone: Zone, data: bytes) -> Answer:
        """``zone``'s answer to a query the pre-encoded table did not know, counted and timed
        (a query to forward is counted when its answer comes)."""
        began = time.perf_counter()
        answer = zone.answer(data)
        if answer.reply is not None:
            self._count(answer.rcode, began)
        elif not answer.forward:
            self._count("dropped", began)
        return answer

    def _count_batch(self, served: int, missing: int, start: float) -> None:
        """Count the ``served`` pre-encoded answers of a batch begun at ``start`` (``missing``
        of them NXDOMAIN); each gets the batch's average time."""
        if served:
            self.tally.count_batch(served, missing, (time.perf_counter() - start) / served)

    async def _serve_tcp(self, stream: trio.SocketStream) -> None:
        client = "?"
        with contextlib.suppress(OSError, IndexError, TypeError):
            client = str(stream.socket.getpeername()[0])
        if self.tcp_caps.admit(client) is not None:  # one client cannot hold every slot
            await trio.aclose_forcefully(stream)
            return
        try:
            await self._serve_tcp_admitted(stream)
        finally:
            self.tcp_caps.release(client)

    async def _serve_tcp_admitted(self, stream: trio.SocketStream) -> None:
        async with stream:
            buffer = b""
            while True:
                with trio.move_on_after(TCP_IDLE) as idle:
                    while len(buffer) < 2 or len(buffer) < 2 + struct.unpack_from("!H", buffer)[0]:
                        try:
                            chunk = await stream.receive_some(65536)
                        except (trio.BrokenResourceError, trio.ClosedResourceError):
                            return
                        if not chunk:
                            return
                        buffer += chunk
                if idle.cancelled_caught:
                    return
                length = struct.unpack_from("!H", buffer)[0]
                query, buffer = buffer[2 : 2 + length], buffer[2 + length :]
                start = time.perf_counter()
                answer = self.zone.answer(query, tcp=True)
                reply = answer.reply
                if answer.forward:
                    peer = stream.socket.getpeername()
                    reply = await self._forward(query, peer[0], tcp=True)
                elif reply is None:
                    self._count("dropped", start)
                    continue
                else:
                    self._count(answer.rcode, start)
                if reply is None:
                    continue
                try:
                    await stream.send_all(struct.pack("!H", len(reply)) + reply)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return

    # --- forwarding -----------------------------------------------------------------------------

    async def _forward_udp(self, sock: socket.socket, query: bytes, peer: Any) -> None:
        reply = await self._forward(query, peer[0], tcp=False)
        if reply is not None:
            with contextlib.suppress(OSError):
                sock.sendto(reply, peer)

    def _may_forward(self, client: str) -> bool:
        try:
            address = ip_address(client.split("%")[0])
        except ValueError:
            return False
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        networks: list[IPv4Network | IPv6Network] = list(self._clients)
        if self._overlay_networks is not None:
            networks += self._overlay_networks()
        return any(address in n for n in networks)

    async def _forward(self, query: bytes, client: str, *, tcp: bool) -> bytes | None:
        start = time.perf_counter()
        if not self._upstreams or not self._may_forward(client):
            self._count("REFUSED", start)
            return error_reply(query, 5)
        if self._forwarding >= MAX_FORWARDING:
            self._count("forward_busy", start)  # upstreams this slow: no more waiting queries
            return error_reply(query, 2)
        self.forward_limiter.now = time.monotonic()
        if self.forward_limiter.verdict(_packed(client)) != SEND:
            self._count("forward_limited", start)
            return None
        self._forwarding += 1
        try:
            return await self._forward_admitted(query, start, tcp=tcp)
        finally:
            self._forwarding -= 1

    async def _forward_admitted(self, query: bytes, start: float, *, tcp: bool) -> bytes | None:
        marked = mark_query(query, self._mark)
        if marked is None:
            if not self._loop_said:
                self._loop_said = True
                log.warning(
                    "DNS forwarding loop: a query came back through the upstreams %s; answering "
                    "SERVFAIL (point dns.upstreams at resolvers that do not ask vxnet)",
                    ", ".join(f"{h}:{p}" for h, p in self._upstreams),
                )
            self._count("SERVFAIL", start)
            return error_reply(query, 2)
        forwarded, had_opt = marked
        forwarded = struct.pack("!H", random.getrandbits(16)) + forwarded[2:]
        upstreams = random.sample(self._upstreams, min(2, len(self._upstreams)))
        reply = await self._ask_first(forwarded, upstreams, tcp)
        if reply is None or len(reply) < 12:
            self._count("SERVFAIL", start)
            return error_reply(query, 2)
        self._count("forwarded", start)
        if not had_opt:
            reply = strip_opt(reply)
        # recursion is available through us, whatever the upstream said
        return query[:2] + reply[2:3] + bytes([reply[3] | 0x80]) + reply[4:]

    async def _ask_first(
        self, query: bytes, upstreams: list[tuple[str, int]], tcp: bool
    ) -> bytes | None:
        send, receive = trio.open_memory_channel[bytes | None](len(upstreams))
        async with trio.open_nursery() as nursery:
            for upstream in upstreams:
                nursery.start_soon(self._ask_one, query, upstream, tcp, send.clone())
            send.close()
            reply: bytes | None = None
            with trio.move_on_after(FORWARD_TIMEOUT):
                async for answer in receive:
                    if answer is not None:
                        reply = answer
                        break
            nursery.cancel_scope.cancel()
        return reply

    async def _ask_one(
        self,
        query: bytes,
        upstream: tuple[str, int],
        tcp: bool,
        send: trio.MemorySendChannel[bytes | None],
    ) -> None:
        async with send:
            try:
                with trio.fail_after(FORWARD_TIMEOUT):
                    reply = await (_ask_tcp if tcp else _ask_udp)(query, upstream)
            except (OSError, trio.TooSlowError, ValueError):
                reply = None
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await send.send(reply)

    # --- metrics --------------------------------------------------------------------------------

    def _count(self, what: str, start: float) -> None:
        self.tally.count(what, time.perf_counter() - start)

    def totals(self) -> Tally:
        """Every query this agent answered, by its own process and by its workers, with the
        rate limiters' counters."""
        tally = Tally()
        tally.add(self.tally.snapshot())
        if self.limiter is not None:
            tally.limited, tally.slipped = self.limiter.limited, self.limiter.slipped
        if self.pool is not None:
            tally.add(self.pool.totals().snapshot())
        return tally


def workers_for(settings: DnsSettings) -> int:
    """How many worker processes answer UDP: ``dns.workers``, unset one per CPU this process may
    run on (at most 64); 0 where batched UDP is missing (the agent answers itself)."""
    if not mmsg_available():
        return 0
    if settings.workers is None:
        return min(len(os.sched_getaffinity(0)), 64)
    return settings.workers


async def _ask_udp(query: bytes, upstream: tuple[str, int]) -> bytes:
    family = socket.AF_INET6 if ":" in upstream[0] else socket.AF_INET
    with trio.socket.socket(family, socket.SOCK_DGRAM) as sock:
        await sock.connect(upstream)
        await sock.send(query)
        while True:
            reply = await sock.recv(MAX_UDP)
            if reply[:2] == query[:2]:
                return reply


async def _ask_tcp(query: bytes, upstream: tuple[str, int]) -> bytes:
    stream = await trio.open_tcp_stream(*upstream)
    async with stream:
        await stream.send_all(struct.pack("!H", len(query)) + query)
        buffer = b""
        while len(buffer) < 2 or len(buffer) < 2 + struct.unpack_from("!H", buffer)[0]:
            chunk = await stream.receive_some(65536)
            if not chunk:
                raise ValueError("the upstream closed the connection")
            buffer += chunk
        return buffer[2 : 2 + struct.unpack_from("!H", buffer)[0]]


def _addr(entry: str) -> tuple[str, int]:
    from vxnet.config import parse_hostport

    host, port = parse_hostport(entry, any_port=True)
    return (host, port)
