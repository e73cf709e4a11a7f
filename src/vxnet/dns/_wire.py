"""DNS messages on the wire for the zone: reading queries and writing replies (RFC 1035, 6891).

Queries are read with dnslib and replies written with it; this module keeps dnslib's quirks in
one place and gives the zone what it needs: a :class:`Query` (the question as sent, the EDNS
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

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dnslib import EDNS0, RR, DNSHeader, DNSLabel, DNSRecord
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
    "header_only",
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
    """The query cannot be read (the remote's fault: FORMERR); the text says what is wrong."""


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


def read_query(data: bytes) -> Query:
    """The query in ``data`` (a whole DNS message, at least a header).

    Raises:
        FormatError: The message cannot be read (see the module docstring).
    """
    if len(data) < HEADER_SIZE:
        raise FormatError(f"{len(data)} bytes, shorter than a header")
    qdcount = int.from_bytes(data[4:6], "big")
    if qdcount != 1:
        raise FormatError(f"{qdcount} questions, not 1")
    try:
        message = DNSRecord.parse(data)
    except Exception as exc:  # dnslib raises many kinds on bad input, not only DNSError
        raise FormatError(f"does not parse: {exc}") from exc
    question = message.questions[0]
    labels = tuple(bytes(label) for label in question.qname.label)
    if any(len(label) > 63 for label in labels):
        raise FormatError("a label longer than 63 bytes")
    if sum(len(label) + 1 for label in labels) + 1 > 255:
        raise FormatError("a name longer than 255 bytes")
    if any(rr.rtype == TYPE_OPT for rr in (*message.rr, *message.auth)):
        raise FormatError("an OPT RR outside the additional section")
    opts = [rr for rr in message.ar if rr.rtype == TYPE_OPT]
    if len(opts) > 1:
        raise FormatError(f"{len(opts)} OPT RRs")
    edns = None
    if opts:
        opt = opts[0]
        if tuple(opt.rname.label):
            raise FormatError("an OPT RR not owned by the root")
        ttl = int(opt.ttl)
        edns = Edns(payload=int(opt.rclass), version=(ttl >> 16) & 0xFF, do=bool(ttl & 0x8000))
    return Query(
        id=int.from_bytes(data[0:2], "big"),
        flags=int.from_bytes(data[2:4], "big"),
        question=question,
        labels=labels,
        qtype=int(question.qtype),
        qclass=int(question.qclass),
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


def header_only(data: bytes, rcode: int) -> bytes:
    """A reply of nothing but a header, to the query whose header starts ``data``."""
    flags = reply_flags(int.from_bytes(data[2:4], "big"), rcode)
    return data[:2] + flags.to_bytes(2, "big") + bytes(8)


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
