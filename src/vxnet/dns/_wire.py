"""DNS messages on the wire for the zone: reading queries and writing replies (RFC 1035, 6891).

Queries are read here, in time linear in their size (:func:`read_query`: the header, the question
and the additional records only; names with at most 16 compression pointers, each pointing
before the last); replies are written with dnslib. This module keeps dnslib's quirks in one
place and gives the zone what it needs: a :class:`Query` (the question as sent, the EDNS
parameters), replies made of :class:`Record` s, header-only error replies, and the UDP size
limit. :func:`write_reply` writes the same bytes as :func:`encode_reply` (dnslib), many times
faster, for the replies the zone encodes ahead. Both compress owner names the way dnslib does: a
name registers each of its suffixes (in the case written) at its offset, and a later name that
ends in a registered suffix points there. Names inside RDATA (SRV targets, SOA, NS) are written
whole: RFC 2782 wants that for SRV, and in this zone they share nothing worth compressing.

Rules:

* A reply echoes the query's ID, opcode, RD and CD bits; it sets QR, sets AA only where the zone
  says so, and leaves RA, Z and AD clear.
* A query that cannot be read is a :class:`FormatError` (FORMERR): not exactly one question, a
  packet that does not parse, a question name with a label over 63 bytes or over 255 bytes in
  all, more than one OPT RR, or an OPT RR outside the additional section or not owned by root.
* EDNS (RFC 6891): a reply to a query with an OPT RR carries our own OPT RR (payload 1232, no
  options, DO copied, the high bits of the RCODE); over UDP a reply may then use the client's
  payload size, but never less than 512 nor more than 1232 (the DNS Flag Day 2020 size, which
  keeps replies out of IP fragments); without an OPT RR it is 512; over TCP it is 65535.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dnslib import EDNS0, RR, DNSHeader, DNSLabel, DNSQuestion, DNSRecord
from dnslib import RD as RawRdata

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "AA",
    "BADVERS",
    "CD",
    "CLASS_ANY",
    "CLASS_IN",
    "FORMERR",
    "HEADER_SIZE",
    "NOERROR",
    "NOTIMP",
    "NXDOMAIN",
    "OPT_RR",
    "QR",
    "RCODE_NAMES",
    "RD",
    "REFUSED",
    "SERVFAIL",
    "TC",
    "TCP_LIMIT",
    "TYPE_A",
    "TYPE_AAAA",
    "TYPE_ANY",
    "TYPE_AXFR",
    "TYPE_IXFR",
    "TYPE_NS",
    "TYPE_OPT",
    "TYPE_SOA",
    "TYPE_SRV",
    "UDP_LIMIT",
    "UDP_PAYLOAD",
    "Edns",
    "FormatError",
    "Name",
    "Query",
    "Record",
    "encode_name",
    "encode_reply",
    "error_reply",
    "header_only",
    "opt_rr",
    "read_name",
    "read_query",
    "reply_flags",
    "size_limit",
    "write_reply",
]

HEADER_SIZE = 12

# The flags word (the header's second 16 bits).
QR = 0x8000
OPCODE_MASK = 0x7800
AA = 0x0400
TC = 0x0200
RD = 0x0100
CD = 0x0010

TYPE_A = 1
TYPE_NS = 2
TYPE_SOA = 6
TYPE_AAAA = 28
TYPE_SRV = 33
TYPE_OPT = 41
TYPE_IXFR = 251
TYPE_AXFR = 252
TYPE_ANY = 255
CLASS_IN = 1
CLASS_ANY = 255

NOERROR = 0
FORMERR = 1
SERVFAIL = 2
NXDOMAIN = 3
NOTIMP = 4
REFUSED = 5
BADVERS = 16  # extended: 1 in the OPT RR's high RCODE bits, 0 in the header
RCODE_NAMES = {
    NOERROR: "NOERROR",
    FORMERR: "FORMERR",
    SERVFAIL: "SERVFAIL",
    NXDOMAIN: "NXDOMAIN",
    NOTIMP: "NOTIMP",
    REFUSED: "REFUSED",
    BADVERS: "BADVERS",
}

UDP_LIMIT = 512  # a UDP reply to a query without EDNS
UDP_PAYLOAD = 1232  # the payload we advertise, and the most we send over UDP
TCP_LIMIT = 65535
# Our OPT RR, as dnslib writes it: root owner, type 41, payload 1232, RCODE 0, version 0,
# flags 0, no options.
OPT_RR = b"\x00\x00\x29" + UDP_PAYLOAD.to_bytes(2, "big") + b"\x00" * 6


Name = tuple[bytes, ...]  # a domain name's labels, root excluded


class FormatError(ValueError):
    """The query cannot be read (the remote's fault: FORMERR); the text says what is wrong, and
    ``edns`` is the query's OPT RR when that could be read all the same."""

    def __init__(self, message: str, *, edns: Edns | None = None) -> None:
        super().__init__(message)
        self.edns = edns


@dataclass(frozen=True, slots=True)
class Edns:
    """The EDNS parameters of a query's OPT RR."""

    payload: int  # the UDP payload size the client can take
    version: int
    do: bool  # DNSSEC OK: copied into the reply's OPT RR


@dataclass(frozen=True, slots=True)
class Query:
    """A query that could be read: its header and its one question, as sent."""

    id: int
    flags: int
    question: Any  # dnslib DNSQuestion, echoed in the reply
    labels: Name  # the question name's labels, in the case sent
    qtype: int
    qclass: int
    edns: Edns | None


MAX_POINTERS = 16  # compression pointers followed in one name
MAX_ADDITIONAL = 4  # additional records a query may carry (an OPT RR, a TSIG, a cookie...)


def read_name(data: bytes, offset: int) -> tuple[Name, int]:
    """The name at ``offset`` and the offset just past it where it was written.

    Linear in the name's length: each compression pointer must point before the one followed
    last (so no chain loops), at most ``MAX_POINTERS`` are followed, and the name may not pass
    255 bytes.

    Raises:
        FormatError: The name cannot be read; the text says why.
    """
    labels: list[bytes] = []
    size = 1
    pos = offset
    end = -1
    floor = offset  # a pointer must go below this
    jumps = 0
    while True:
        if pos >= len(data):
            raise FormatError("a name runs past the end of the message")
        length = data[pos]
        if length >= 0xC0:
            if pos + 1 >= len(data):
                raise FormatError("a compression pointer cut short")
            target = (length & 0x3F) << 8 | data[pos + 1]
            if end < 0:
                end = pos + 2
            jumps += 1
            if jumps > MAX_POINTERS:
                raise FormatError(f"a name with more than {MAX_POINTERS} compression pointers")
            if target >= floor:
                raise FormatError("a compression pointer that does not point back")
            floor = pos = target
            continue
        if length > 63:
            raise FormatError("a label longer than 63 bytes (or of an unknown kind)")
        if length == 0:
            return tuple(labels), end if end >= 0 else pos + 1
        size += length + 1
        if size > 255:
            raise FormatError("a name longer than 255 bytes")
        if pos + 1 + length > len(data):
            raise FormatError("a label runs past the end of the message")
        labels.append(data[pos + 1 : pos + 1 + length])
        pos += 1 + length


def _read_additional(data: bytes, pos: int, count: int) -> Edns | None:
    """The EDNS parameters of the OPT RR among the ``count`` records at ``pos``, if any."""
    if count > MAX_ADDITIONAL:
        raise FormatError(f"{count} additional records, more than {MAX_ADDITIONAL}")
    edns = None
    for _ in range(count):
        owner, pos = read_name(data, pos)
        if pos + 10 > len(data):
            raise FormatError("an additional record cut short")
        rtype, rclass, ttl, rdlength = struct.unpack_from("!HHIH", data, pos)
        pos += 10 + rdlength
        if pos > len(data):
            raise FormatError("an additional record's data runs past the end")
        if rtype != TYPE_OPT:
            continue
        if edns is not None:
            raise FormatError("2 OPT RRs")
        if owner:
            raise FormatError("an OPT RR not owned by the root")
        edns = Edns(payload=rclass, version=(ttl >> 16) & 0xFF, do=bool(ttl & 0x8000))
    return edns


def read_query(data: bytes) -> Query:
    """The query in ``data`` (a whole DNS message, at least a header), read in time linear in
    its size: the header, the one question and the additional records (for the OPT RR) only.

    Raises:
        FormatError: The message cannot be read (see the module docstring); its ``edns`` is
            the query's OPT RR when that could still be read (the FORMERR reply carries ours).
    """
    if len(data) < HEADER_SIZE:
        raise FormatError(f"{len(data)} bytes, shorter than a header")
    qdcount, ancount, nscount, arcount = struct.unpack_from("!4H", data, 4)
    if qdcount == 0 and not ancount and not nscount:
        try:
            edns = _read_additional(data, HEADER_SIZE, arcount)
        except FormatError:
            edns = None
        raise FormatError("0 questions, not 1", edns=edns)
    if qdcount != 1:
        raise FormatError(f"{qdcount} questions, not 1")
    labels, pos = read_name(data, HEADER_SIZE)
    if pos + 4 > len(data):
        raise FormatError("the question is cut short")
    qtype, qclass = struct.unpack_from("!HH", data, pos)
    if ancount or nscount:
        raise FormatError("a query with answer or authority records")
    edns = _read_additional(data, pos + 4, arcount)
    question = DNSQuestion(DNSLabel(list(labels)), qtype, qclass)
    return Query(
        id=int.from_bytes(data[0:2], "big"),
        flags=int.from_bytes(data[2:4], "big"),
        question=question,
        labels=labels,
        qtype=qtype,
        qclass=qclass,
        edns=edns,
    )


def reply_flags(query_flags: int, rcode: int, *, aa: bool = False, tc: bool = False) -> int:
    """The flags word of a reply to a query with flags ``query_flags``."""
    return (
        QR
        | (query_flags & (OPCODE_MASK | RD | CD))
        | (AA if aa else 0)
        | (TC if tc else 0)
        | (rcode & 0xF)
    )


def header_only(data: bytes, rcode: int, edns: Edns | None = None) -> bytes:
    """A reply of nothing but a header, to the query whose header starts ``data``, and our OPT
    RR when the query had one (``edns``: RFC 6891 wants one in every reply to such a query)."""
    flags = reply_flags(int.from_bytes(data[2:4], "big"), rcode)
    if edns is None:
        return data[:2] + flags.to_bytes(2, "big") + bytes(8)
    return data[:2] + flags.to_bytes(2, "big") + bytes(6) + b"\x00\x01" + opt_rr(rcode, edns)


def opt_rr(rcode: int, edns: Edns) -> bytes:
    """Our OPT RR in a reply with ``rcode`` to a query with ``edns``: payload 1232, the high
    bits of the RCODE, version 0, DO copied, no options (what :func:`encode_reply` writes)."""
    return OPT_RR[:5] + bytes([rcode >> 4, 0, 0x80 if edns.do else 0]) + OPT_RR[8:]


@dataclass(frozen=True, slots=True)
class Record:
    """A resource record of class IN, its RDATA in wire form."""

    owner: Name
    rtype: int
    ttl: int
    rdata: bytes


def encode_reply(
    query: Query,
    rcode: int,
    *,
    aa: bool,
    answer: Sequence[Record] = (),
    authority: Sequence[Record] = (),
    additional: Sequence[Record] = (),
    tc: bool = False,
) -> bytes:
    """The reply to ``query`` (by dnslib): its question, the given sections and, when the query
    had an OPT RR, ours last."""
    header = DNSHeader(id=query.id, bitmap=reply_flags(query.flags, rcode, aa=aa, tc=tc))
    message = DNSRecord(
        header,
        questions=[query.question],
        rr=[_rr(record) for record in answer],
        auth=[_rr(record) for record in authority],
        ar=[_rr(record) for record in additional],
    )
    if query.edns is not None:
        flags = "do" if query.edns.do else ""
        message.add_ar(EDNS0(udp_len=UDP_PAYLOAD, ext_rcode=rcode >> 4, flags=flags))
    return bytes(message.pack())


def _rr(record: Record) -> Any:
    owner = DNSLabel(list(record.owner))
    return RR(owner, record.rtype, CLASS_IN, record.ttl, RawRdata(record.rdata))


def write_reply(
    qname: Name,
    qtype: int,
    rcode: int,
    *,
    answer: Sequence[Record] = (),
    authority: Sequence[Record] = (),
    additional: Sequence[Record] = (),
) -> bytes:
    """What :func:`encode_reply` gives for a query with ID 0, flags 0 and no OPT RR, for
    ``qname`` (class IN), as an authoritative answer; written here, not by dnslib."""
    counts = (1, len(answer), len(authority), len(additional))
    header = bytes(2) + reply_flags(0, rcode, aa=True).to_bytes(2, "big")
    writer = _Writer(header + b"".join(count.to_bytes(2, "big") for count in counts))
    writer.name(qname)
    writer.data += qtype.to_bytes(2, "big") + CLASS_IN.to_bytes(2, "big")
    for section in (answer, authority, additional):
        for record in section:
            writer.name(record.owner)
            writer.data += b"".join(
                (
                    record.rtype.to_bytes(2, "big"),
                    CLASS_IN.to_bytes(2, "big"),
                    record.ttl.to_bytes(4, "big"),
                    len(record.rdata).to_bytes(2, "big"),
                    record.rdata,
                )
            )
    return bytes(writer.data)


class _Writer:
    """A message being written, with dnslib's name compression (see the module docstring)."""

    def __init__(self, data: bytes) -> None:
        self.data = bytearray(data)
        self._names: dict[Name, int] = {}

    def name(self, labels: Name) -> None:
        for i, label in enumerate(labels):
            offset = self._names.get(labels[i:])
            if offset is not None:
                self.data += (0xC000 | offset).to_bytes(2, "big")
                return
            if len(self.data) < 0x4000:
                self._names[labels[i:]] = len(self.data)
            self.data += len(label).to_bytes(1, "big") + label
        self.data.append(0)


def size_limit(edns: Edns | None, *, tcp: bool) -> int:
    """The largest reply that may be sent (see the module docstring)."""
    if tcp:
        return TCP_LIMIT
    if edns is None:
        return UDP_LIMIT
    return min(max(edns.payload, UDP_LIMIT), UDP_PAYLOAD)


def encode_name(labels: Name) -> bytes:
    """A name in wire form, uncompressed."""
    return b"".join([bytes((len(label),)) + label for label in labels]) + b"\x00"


def error_reply(query: bytes, rcode: int) -> bytes | None:
    """A reply to ``query`` with ``rcode``, its question and, when it had one, our OPT RR; RA
    set (None: not a query)."""
    if len(query) < 12 or query[2] & 0x80:
        return None
    try:
        reply = encode_reply(read_query(query), rcode, aa=False)
    except FormatError as exc:
        reply = header_only(query, rcode, exc.edns)
    return reply[:3] + bytes([reply[3] | 0x80]) + reply[4:]
