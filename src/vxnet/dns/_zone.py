"""The cluster zone ``dcos.thisdcos.directory``, answered from task records: sans-IO DNS.

A :class:`Zone` is built from the tasks in the replicated store and turns query bytes into reply
bytes; the UDP/TCP server around it only moves packets (and forwards what :meth:`Zone.answer`
says is not ours). The names are those of DC/OS's dcos-dns, so ``dig`` gives what it gave::

    <task>.<framework>.containerip.<zone>     A: container IPv4   AAAA: container IPv6
    <task>.<framework>.agentip.<zone>         A: the agent's IPv4
    <task>.<framework>.autoip.<zone>          A: the agent's IPv4 if ports are mapped, else the
                                              container's addresses (A and AAAA)
    _<task>._<framework>._tcp.<zone>          SRV 1 1 <port> <task>.<framework>.autoip.<zone>.
    _<port>._<task>._<framework>._tcp.<zone>  the same for one named port (and ``_udp``)
    <zone>                                    SOA ns.spartan. support.mesosphere.com. <serial>
                                              60 180 86400 1, and NS ns.spartan.

TTLs: 5 s, but NS 3600 s. ``<task>`` and ``<framework>`` are the names made into labels by
:func:`normalize_label` (DC/OS's ``mesos_state:label/1``); a task whose label comes out empty has
no names, and a task without a container address has its ``autoip`` name on the agent (as in
DC/OS).

Rules (``zone`` matching ignores case; the reply echoes the question as sent):

====================================================  ==========================================
query                                                 reply
====================================================  ==========================================
under 12 bytes, or QR set (a response)                nothing (``reply`` None)
OPCODE not QUERY                                      NOTIMP, header only (and OPT)
QDCOUNT not 1, or does not parse                      FORMERR, header only (and OPT)
EDNS version above 0                                  BADVERS, in the zone or not
name outside the zone                                 nothing: ``forward`` (the caller forwards)
QTYPE AXFR/IXFR, or QCLASS not IN (or ANY)            REFUSED
name with records of QTYPE (ANY: all its records)     NOERROR, AA, the records; SRV adds the
                                                      targets' A/AAAA in ADDITIONAL
name that exists (or an empty non-terminal)           NOERROR, AA, no answer, SOA in AUTHORITY
any other name in the zone                            NXDOMAIN, AA, SOA in AUTHORITY
====================================================  ==========================================

* Every reply to a query with an OPT RR carries ours (RFC 6891 6.1.1), errors included.
  Negative answers carry the SOA with TTL min(SOA TTL, MINIMUM) = 1 (RFC 2308 section 3).
* SRV owner labels are ``_`` and the task, framework or port label cut to 62 characters (and
  the dashes that cut leaves at its end), so that every label is legal (63 bytes at most).
* Several tasks with the same labels give several records (each value once); successive answers
  for one question start one record later (round robin, ANSWER section only).
* Answers take the owner name in the query's case. A reply over the size limit (see
  :mod:`vxnet.dns._wire`) first loses its ADDITIONAL glue; if still too big it is sent with TC
  and only the question (and OPT), so the client retries over TCP.
* Speed: at construction every positive answer, and the NODATA answers for A/AAAA at the names
  that have addresses, are encoded ahead, in every rotation, with and without a minimal OPT RR.
  A query that is exactly such a question (QDCOUNT 1, other counts 0, or ARCOUNT 1 with a bare
  OPT RR: version 0, no flags, no options) is answered by copying its ID and RD/CD bits into
  the encoded reply; anything else goes through the full path, which gives the same bytes.
  A zone built with ``previous`` (the zone it replaces) takes over the encoded replies of every
  question whose records, and SRV glue, are unchanged, and patches the new serial into its
  NODATA replies, so a rebuild after a few changes encodes only what changed.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from vxnet.dns._wire import (
    AA,
    BADVERS,
    CLASS_ANY,
    CLASS_IN,
    FORMERR,
    HEADER_SIZE,
    NOERROR,
    NOTIMP,
    NXDOMAIN,
    OPT_RR,
    QR,
    RCODE_NAMES,
    REFUSED,
    SERVFAIL,
    TYPE_A,
    TYPE_AAAA,
    TYPE_ANY,
    TYPE_AXFR,
    TYPE_IXFR,
    TYPE_NS,
    TYPE_SOA,
    TYPE_SRV,
    UDP_LIMIT,
    UDP_PAYLOAD,
    Edns,
    FormatError,
    Name,
    Query,
    Record,
    encode_name,
    encode_reply,
    header_only,
    read_name,
    read_query,
    size_limit,
    write_reply,
)
from vxnet.records import PROTOCOLS, Port, TaskRecord

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "NS_NAME",
    "SOA_RNAME",
    "ZONE_SUFFIX",
    "Answer",
    "Port",
    "Zone",
    "normalize_label",
    "task_from_record",
]

ZONE_SUFFIX = "dcos.thisdcos.directory"
NS_NAME = "ns.spartan"  # DC/OS's name server name (SOA MNAME and the NS record)
SOA_RNAME = "support.mesosphere.com"
TTL = 5  # A, AAAA, SRV, SOA
NS_TTL = 3600
SOA_TIMES = (60, 180, 86400, 1)  # refresh, retry, expire, minimum (after the serial)
SRV_PRIORITY = 1
SRV_WEIGHT = 1
LABEL_MAX = 63
_SUFFIX_LABEL = re.compile(r"[a-z0-9_-]{1,63}")
TYPE_NAMES = {TYPE_A: "A", TYPE_NS: "NS", TYPE_SOA: "SOA", TYPE_AAAA: "AAAA", TYPE_SRV: "SRV"}

# The fast path's header bytes 2-3 (QR, AA, RCODE NOERROR, RD and CD as in the query), indexed by
# the query's byte 2 & RD | byte 3 & CD.
_FAST_FLAGS = tuple(bytes(((QR | AA) >> 8 | (i & 0x01), i & 0x10)) for i in range(0x12))
BUILT_MAX = 65536  # slow-path replies kept per zone (the table is emptied when full)
_PLAIN_COUNTS = b"\x00\x01\x00\x00\x00\x00\x00\x00"  # QDCOUNT 1, nothing else
_EDNS_COUNTS = b"\x00\x01\x00\x00\x00\x00\x00\x01"  # QDCOUNT 1, ARCOUNT 1
_OPT_HEAD = b"\x00\x00\x29"  # root owner, type OPT
_OPT_TAIL = b"\x00" * 6  # RCODE 0, version 0, flags 0 (DO clear), no options
_CLASS_IN = CLASS_IN.to_bytes(2, "big")
FAST_MAX = 12 + 255 + 4 + 11  # header, the longest name, QTYPE and QCLASS, a bare OPT RR
_POINTER_MAX = 0x3FFF  # dnslib writes bad pointers to names beyond this offset


@dataclass(frozen=True, slots=True)
class Answer:
    """What to do with one query."""

    reply: bytes | None  # the reply to send; None = send nothing
    forward: bool = False  # the name is outside the zone: the caller forwards the query
    rcode: str = "NOERROR"  # for metrics; "DROPPED" when nothing is sent and nothing forwarded
    fast: bool = False  # answered from the pre-encoded table


_DROP = Answer(None, rcode="DROPPED")
_FORWARD = Answer(None, forward=True)


def normalize_label(text: str) -> str:
    """``text`` made a DNS label the way DC/OS does (``mesos_state:label/1``).

    ASCII letters are lowered; characters before the first letter or digit are dropped; then
    ``-``, ``_`` and ``.`` become ``-`` (runs are kept), other characters are dropped; at 63
    characters trailing dashes are cut and only letters and digits fill up to 63; trailing
    dashes are cut at the end. ``"My_App.v2"`` gives ``"my-app-v2"``; the result may be empty.
    """
    out: list[str] = []
    started = False
    full = False  # DC/OS's "terminate" state
    for char in text:
        if "A" <= char <= "Z":
            char = chr(ord(char) + 32)
        alnum = "a" <= char <= "z" or "0" <= char <= "9"
        if not started:
            if not alnum:
                continue
            started = True
        if not full and len(out) >= LABEL_MAX:
            while out and out[-1] == "-":
                out.pop()
            full = True
        if full:
            if len(out) == LABEL_MAX:
                break
            if alnum:
                out.append(char)
        elif char in "-_.":
            out.append("-")
        elif alnum:
            out.append(char)
    return "".join(out).rstrip("-")


def task_from_record(value: object) -> TaskRecord:
    """The task a store task record describes, as the zone keeps it.

    Only ``name``, ``framework``, ``agent_ip``, ``ip``, ``ip6``, ``ports_mapped`` and ``ports``
    matter to DNS: the other fields are cleared, so that tasks DNS cannot tell apart are one.

    Raises:
        ValueError: The record does not fit; the message names the field.
    """
    record = TaskRecord.from_json(value)
    return replace(record, network=None, runtime=None, container_id=None)


@dataclass(frozen=True, slots=True)
class _RRSet:
    """The records of one type at one name, in their base (unrotated) order."""

    rtype: int
    ttl: int
    rdatas: tuple[bytes, ...]  # in wire form
    texts: tuple[str, ...]  # the same, in zone-file form
    glue: tuple[Name, ...] = ()  # SRV: the targets, whose A/AAAA records go in ADDITIONAL


_TaskRecord = tuple[Name, int, str, int, bytes]


class _Entry:
    """One question's rotation counter and, when it is on the fast path, its encoded replies
    (from the header's byte 4 on, one per rotation)."""

    __slots__ = ("edns", "edns_size", "plain", "turn")

    def __init__(self) -> None:
        self.turn = 0
        self.plain: tuple[bytes, ...] = ()
        self.edns: tuple[bytes, ...] = ()
        self.edns_size = 0  # the whole reply with OPT, header included


class Zone:
    """The zone of ``suffix`` holding the records of ``tasks`` (see the module docstring).

    Args:
        tasks: The running tasks.
        suffix: The zone's name.
        serial: The SOA serial.
        previous: The zone this one replaces, whose encoded replies it reuses where they are
            still right (read only: it may go on answering meanwhile).

    Raises (constructor):
        ValueError: A bad suffix or serial, or a task with an address that is not one (the
            caller's fault: :func:`task_from_record` checks them).
    """

    def __init__(
        self,
        tasks: Iterable[TaskRecord],
        *,
        suffix: str = ZONE_SUFFIX,
        serial: int = 1,
        previous: Zone | None = None,
    ) -> None:
        self.suffix = _check_suffix(suffix)
        if not 0 <= serial <= 0xFFFFFFFF:
            raise ValueError(f"serial: a number from 0 to 4294967295, got {serial}")
        self.serial = serial
        self._apex: Name = tuple(label.encode() for label in self.suffix.split("."))
        self._nodes: dict[Name, dict[int, _RRSet]] = {}
        self._entries: dict[tuple[Name, int], _Entry] = {}
        self._plain: dict[bytes, _Entry] = {}
        # replies built by the slow path for plain questions that are not in the tables
        # (NXDOMAIN above all), by question bytes: (byte 3 of the flags, reply from byte 4 on)
        self._built: dict[bytes, tuple[int, bytes]] = {}
        self._edns: dict[bytes, _Entry] = {}
        self._task_records: dict[TaskRecord, tuple[_TaskRecord, ...]] = {}
        if previous is not None and previous.suffix != self.suffix:
            previous = None
        self._build(tasks, previous)
        soa = self._nodes[self._apex][TYPE_SOA]
        # RFC 2308 section 3: a negative answer's SOA has the TTL min(SOA TTL, SOA MINIMUM).
        self._soa = Record(self._apex, TYPE_SOA, min(soa.ttl, SOA_TIMES[-1]), soa.rdatas[0])
        self.reused = 0  # questions whose encoded replies came from ``previous``
        self._pre_encode(previous)

    # --- answering ------------------------------------------------------------------------------

    def answer(self, query: bytes, *, tcp: bool = False) -> Answer:
        """What to do with ``query``, a DNS message received over UDP (or TCP if ``tcp``).

        Never raises: bytes that are not a query get FORMERR or nothing.
        """
        reply = self.fast(query, tcp)
        if reply is not None:
            return Answer(reply, False, "NXDOMAIN" if reply[3] & 0x0F == 3 else "NOERROR", True)
        answer = self._answer_slow(query, tcp)
        if (
            answer.reply is not None
            and answer.rcode in ("NXDOMAIN", "NOERROR")
            and answer.reply[6:8] == b"\x00\x00"  # no answer records (NXDOMAIN, NODATA)
            and query[4:12] == _PLAIN_COUNTS
            and not query[2] & 0xF8
            and not answer.reply[2] & 0x02  # not truncated
        ):
            if len(self._built) >= BUILT_MAX:
                self._built.clear()
            self._built[query[12:]] = (answer.reply[3] & 0x0F, answer.reply[4:])
        return answer

    def fast(self, query: bytes, tcp: bool = False) -> bytes | None:
        """The pre-encoded reply to ``query`` (its ID and flags patched in), or None when the
        query is not one of the table's (then :meth:`answer` builds the reply).

        This is the server's per-packet hot path: slicing and one dict lookup, no parsing.
        """
        if len(query) > FAST_MAX:  # no question in the table is that long: no 64 KB hashing
            return None
        counts = query[4:12]
        if counts == _PLAIN_COUNTS:
            entry = self._plain.get(query[12:])
            if entry is not None and not query[2] & 0xF8:  # QR 0, OPCODE QUERY
                turn = entry.turn
                entry.turn = turn + 1
                bodies = entry.plain
                flags = _FAST_FLAGS[query[2] & 0x01 | query[3] & 0x10]
                return query[:2] + flags + bodies[turn % len(bodies)]
            built = self._built.get(query[12:])
            if built is not None and not query[2] & 0xF8:
                flags = _FAST_FLAGS[query[2] & 0x01 | query[3] & 0x10]
                return query[:2] + flags[:1] + bytes([flags[1] | built[0]]) + built[1]
        elif counts == _EDNS_COUNTS and query[-6:] == _OPT_TAIL and query[-11:-8] == _OPT_HEAD:
            entry = self._edns.get(query[12:-11])
            if (
                entry is not None
                and not query[2] & 0xF8
                and (
                    tcp
                    or entry.edns_size <= UDP_LIMIT
                    or entry.edns_size <= (query[-8] << 8 | query[-7])
                )
            ):
                turn = entry.turn
                entry.turn = turn + 1
                bodies = entry.edns
                flags = _FAST_FLAGS[query[2] & 0x01 | query[3] & 0x10]
                return query[:2] + flags + bodies[turn % len(bodies)]
        return None

    def _answer_slow(self, query: bytes, tcp: bool = False) -> Answer:
        """:meth:`answer` without the pre-encoded tables (the same reply, built anew)."""
        if len(query) < HEADER_SIZE or query[2] & 0x80:
            return _DROP
        try:
            return self._respond(query, tcp)
        except Exception:  # a bug of ours, not the client's: it still gets an answer
            return Answer(header_only(query, SERVFAIL), rcode="SERVFAIL")

    def _respond(self, data: bytes, tcp: bool) -> Answer:
        if data[2] & 0x78:  # OPCODE not QUERY: read only for its OPT RR
            return Answer(header_only(data, NOTIMP, _edns_of(data)), rcode="NOTIMP")
        try:
            query = read_query(data)
        except FormatError as exc:
            return Answer(header_only(data, FORMERR, exc.edns), rcode="FORMERR")
        if query.edns is not None and query.edns.version > 0:  # in the zone or not
            return _error(query, BADVERS)
        name = tuple(label.lower() for label in query.labels)
        if name[-len(self._apex) :] != self._apex:
            return _FORWARD
        if query.qtype in (TYPE_AXFR, TYPE_IXFR) or query.qclass not in (CLASS_IN, CLASS_ANY):
            return _error(query, REFUSED)
        entry = self._entries.get((name, query.qtype))
        turn = 0
        if entry is not None:
            turn = entry.turn
            entry.turn = turn + 1
        reply, rcode = self._reply(query, name, turn, size_limit(query.edns, tcp=tcp))
        return Answer(reply, rcode=RCODE_NAMES[rcode])

    def _reply(self, query: Query, name: Name, turn: int, limit: int) -> tuple[bytes, int]:
        """The reply to an in-zone ``query`` for ``name`` (lower case), rotated by ``turn``,
        cut to ``limit`` bytes, and its RCODE."""
        rcode, answer, authority, glue = self._sections(query.labels, name, query.qtype, turn)
        reply = encode_reply(
            query, rcode, aa=True, answer=answer, authority=authority, additional=glue
        )
        if glue and (len(reply) > limit or len(reply) > _POINTER_MAX):
            reply = encode_reply(query, rcode, aa=True, answer=answer, authority=authority)
        if len(reply) > limit:
            reply = encode_reply(query, rcode, aa=True, tc=True)
        return reply, rcode

    def _sections(
        self, owner: Name, name: Name, qtype: int, turn: int
    ) -> tuple[int, list[Record], list[Record], list[Record]]:
        """RCODE, ANSWER, AUTHORITY and ADDITIONAL for ``qtype`` at ``name`` (lower case),
        answers owned by ``owner`` (the name in the query's case), rotated by ``turn``."""
        node = self._nodes.get(name)
        if node is None:
            return NXDOMAIN, [], [self._soa], []
        answer: list[Record] = []
        glue: list[Record] = []
        for rtype in sorted(node) if qtype == TYPE_ANY else [qtype]:
            rrset = node.get(rtype)
            if rrset is None:
                continue
            shift = turn % len(rrset.rdatas)
            for rdata in rrset.rdatas[shift:] + rrset.rdatas[:shift]:
                answer.append(Record(owner, rtype, rrset.ttl, rdata))
            for target in rrset.glue:
                glue.extend(self._glue(target))
        if not answer:
            return NOERROR, [], [self._soa], []
        return NOERROR, answer, [], glue

    def _glue(self, target: Name) -> list[Record]:
        node = self._nodes.get(target, {})
        return [
            Record(target, rtype, rrset.ttl, rdata)
            for rtype in (TYPE_A, TYPE_AAAA)
            if (rrset := node.get(rtype)) is not None
            for rdata in rrset.rdatas
        ]

    # --- contents -------------------------------------------------------------------------------

    def records(self) -> list[dict[str, Any]]:
        """Every record served, as ``{"name", "type", "value", "ttl"}``, sorted by name, type
        and value (for ``GET /v1/records``)."""
        found = [
            {
                "name": ".".join(label.decode() for label in name),
                "type": TYPE_NAMES[rtype],
                "value": text,
                "ttl": rrset.ttl,
            }
            for name, node in self._nodes.items()
            for rtype, rrset in node.items()
            for text in rrset.texts
        ]
        return sorted(found, key=lambda r: (r["name"], r["type"], r["value"]))

    @property
    def fast_entries(self) -> int:
        """How many questions are answered from the pre-encoded tables."""
        return len(self._plain.keys() | self._edns.keys())

    # --- construction ---------------------------------------------------------------------------

    def _build(self, tasks: Iterable[TaskRecord], previous: Zone | None) -> None:
        found: dict[Name, dict[int, dict[str, tuple[int, bytes]]]] = {}  # -> sort key, RDATA

        def add(name: Name, rtype: int, text: str, key: int, rdata: bytes) -> None:
            if sum(map(len, name)) + len(name) < 255:  # its wire form fits 255 bytes
                found.setdefault(name, {}).setdefault(rtype, {})[text] = (key, rdata)

        apex = self._apex
        known = {} if previous is None else previous._task_records
        for task in tasks:
            records = known.get(task)
            if records is None:
                records = _task_records(task, apex)
            self._task_records[task] = records
            for record in records:
                add(*record)
        soa = (self.serial, *SOA_TIMES)
        soa_wire = _text_name(NS_NAME) + _text_name(SOA_RNAME) + struct.pack("!5I", *soa)
        soa_text = f"{NS_NAME}. {SOA_RNAME}. " + " ".join(map(str, soa))
        add(apex, TYPE_SOA, soa_text, 0, soa_wire)
        add(apex, TYPE_NS, f"{NS_NAME}.", 0, _text_name(NS_NAME))

        for name, by_type in found.items():
            node = self._nodes.setdefault(name, {})
            for rtype, values in by_type.items():
                ordered = sorted(values.items(), key=lambda item: item[1][0])
                rdatas = tuple(rdata for _, (_, rdata) in ordered)
                node[rtype] = _RRSet(
                    rtype=rtype,
                    ttl=NS_TTL if rtype == TYPE_NS else TTL,
                    rdatas=rdatas,
                    texts=tuple(text for text, _ in ordered),
                    glue=_srv_targets(rdatas) if rtype == TYPE_SRV else (),
                )
            for cut in range(1, len(name) - len(apex)):  # empty non-terminals
                self._nodes.setdefault(name[cut:], {})
        for name, node in self._nodes.items():
            for rtype in (*node, TYPE_ANY):
                self._entries[(name, rtype)] = _Entry()

    def _pre_encode(self, previous: Zone | None) -> None:
        """Fill the fast tables (see the module docstring)."""
        serial = self.serial.to_bytes(4, "big")
        for name, node in self._nodes.items():
            rtypes = list(node)
            if TYPE_A in node or TYPE_AAAA in node:  # NODATA for the other address family
                rtypes.extend(t for t in (TYPE_A, TYPE_AAAA) if t not in node)
            question = encode_name(name)
            for rtype in rtypes:
                key = question + rtype.to_bytes(2, "big") + _CLASS_IN
                if previous is not None and self._take_over(previous, name, rtype, key, serial):
                    self.reused += 1
                    continue
                first = self._write(name, rtype, 0)
                size = len(first)
                if size + len(OPT_RR) > UDP_PAYLOAD:
                    continue  # too big for either table
                rrset = node.get(rtype)
                turns = range(1, 1 if rrset is None else len(rrset.rdatas))
                replies = [first, *(self._write(name, rtype, turn) for turn in turns)]
                entry = self._entries.setdefault((name, rtype), _Entry())
                if size <= UDP_LIMIT:
                    entry.plain = tuple(reply[4:] for reply in replies)
                    self._plain[key] = entry
                entry.edns = tuple(_with_opt(reply)[4:] for reply in replies)
                entry.edns_size = size + len(OPT_RR)
                self._edns[key] = entry

    def _take_over(self, previous: Zone, name: Name, rtype: int, key: bytes, serial: bytes) -> bool:
        """Copy ``previous``'s encoded replies for ``rtype`` at ``name`` if they are still right
        (NODATA ones with this zone's serial patched in); whether it did."""
        old = previous._edns.get(key)
        old_node = previous._nodes.get(name)
        if old is None or old_node is None or name == self._apex:
            return False  # (the apex's SOA and NS replies carry the serial: encoded anew)
        rrset = self._nodes[name].get(rtype)
        if rrset is None:  # NODATA: the question and the SOA; only the serial changes
            if rtype in old_node:
                return False
            plain = old.plain and tuple(_patch_serial(body, 0, serial) for body in old.plain)
            edns = tuple(_patch_serial(body, len(OPT_RR), serial) for body in old.edns)
        else:
            if old_node.get(rtype) != rrset:
                return False
            for target in rrset.glue:
                glue, old_glue = self._nodes.get(target, {}), previous._nodes.get(target, {})
                if any(glue.get(t) != old_glue.get(t) for t in (TYPE_A, TYPE_AAAA)):
                    return False
            plain, edns = old.plain, old.edns
        entry = self._entries.setdefault((name, rtype), _Entry())
        entry.plain, entry.edns, entry.edns_size = plain, edns, old.edns_size
        if plain:
            self._plain[key] = entry
        self._edns[key] = entry
        return True

    def _write(self, name: Name, rtype: int, turn: int) -> bytes:
        """The reply for ``rtype`` at ``name`` asked in lower case, with ID 0, flags 0 and no OPT
        RR: what the slow path gives for that query (rotated by ``turn``)."""
        rcode, answer, authority, glue = self._sections(name, name, rtype, turn)
        return write_reply(name, rtype, rcode, answer=answer, authority=authority, additional=glue)


def _task_records(task: TaskRecord, apex: Name) -> tuple[_TaskRecord, ...]:
    """The records ``task`` adds to the zone of ``apex``: (name, type, text, sort key, RDATA).

    Raises:
        ValueError: An address that is not one, or a port out of range.
    """
    out: list[_TaskRecord] = []
    task_label = normalize_label(task.name).encode()
    framework = normalize_label(task.framework).encode()
    if not task_label or not framework:
        return ()
    try:
        agent = ipaddress.IPv4Address(task.agent_ip)
        ip = None if task.ip is None else ipaddress.IPv4Address(task.ip)
        ip6 = None if task.ip6 is None else ipaddress.IPv6Address(task.ip6)
    except ValueError as exc:
        raise ValueError(f"task {task.name!r} of {task.framework!r}: {exc}") from exc
    container: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [
        address for address in (ip, ip6) if address is not None
    ]
    auto = [agent] if task.ports_mapped or not container else container
    for kind, addresses in (
        (b"containerip", container),
        (b"agentip", [agent]),
        (b"autoip", auto),
    ):
        name = (task_label, framework, kind, *apex)
        for address in addresses:
            rtype = TYPE_A if address.version == 4 else TYPE_AAAA
            out.append((name, rtype, str(address), int(address), address.packed))
    target = (task_label, framework, b"autoip", *apex)
    target_text = ".".join(label.decode() for label in target) + "."
    target_wire = encode_name(target)
    for port in task.ports:
        protocol = port.protocol.lower()
        if protocol not in PROTOCOLS:
            continue
        if not 0 <= port.port <= 65535:
            raise ValueError(f"task {task.name!r}: port {port.port} out of range")
        service = (
            _underscored(task_label),
            _underscored(framework),
            b"_" + protocol.encode(),
            *apex,
        )
        port_label = normalize_label(port.name).encode()
        names = [service, (_underscored(port_label), *service)] if port_label else [service]
        text = f"{SRV_PRIORITY} {SRV_WEIGHT} {port.port} {target_text}"
        rdata = struct.pack("!HHH", SRV_PRIORITY, SRV_WEIGHT, port.port) + target_wire
        for name in names:
            out.append((name, TYPE_SRV, text, port.port, rdata))
    return tuple(out)


def _edns_of(data: bytes) -> Edns | None:
    try:
        return read_query(data).edns
    except FormatError as exc:
        return exc.edns


def _error(query: Query, rcode: int) -> Answer:
    return Answer(encode_reply(query, rcode, aa=False), rcode=RCODE_NAMES[rcode])


def _check_suffix(suffix: str) -> str:
    text = suffix.lower().removesuffix(".")
    if not all(_SUFFIX_LABEL.fullmatch(label) for label in text.split(".")) or len(text) > 253:
        raise ValueError(f"suffix: a domain name such as {ZONE_SUFFIX!r}, got {suffix!r}")
    return text


def _text_name(text: str) -> bytes:
    """``text`` (``a.b``) in wire form."""
    return encode_name(tuple(label.encode() for label in text.split(".")))


def _srv_targets(rdatas: tuple[bytes, ...]) -> tuple[Name, ...]:
    """The distinct targets of SRV ``rdatas`` (priority, weight, port, then the name whole)."""
    return tuple(dict.fromkeys(read_name(rdata, 6)[0] for rdata in rdatas))


def _underscored(label: bytes) -> bytes:
    """An SRV owner label ``_<label>``, legal: ``label`` (at most 63 bytes) is cut to 62 and
    loses the dashes the cut leaves at its end. Long names that agree on their first 62
    characters so share SRV names (each record keeps its own target)."""
    return b"_" + label[: LABEL_MAX - 1].rstrip(b"-")


def _patch_serial(body: bytes, tail: int, serial: bytes) -> bytes:
    """``body`` (a NODATA reply ending in the SOA record, then ``tail`` bytes) with ``serial``
    in place of the SOA's serial (the first of its five closing 32-bit numbers)."""
    end = len(body) - tail
    return body[: end - 20] + serial + body[end - 16 :]


def _with_opt(reply: bytes) -> bytes:
    """``reply`` (to a query without EDNS) with our OPT RR added last."""
    arcount = int.from_bytes(reply[10:12], "big") + 1
    return reply[:10] + arcount.to_bytes(2, "big") + reply[12:] + OPT_RR
