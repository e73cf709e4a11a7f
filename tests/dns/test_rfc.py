"""The zone's answers where RFCs say exactly what to send, read with dnspython: an OPT RR in
every reply to an EDNS query (RFC 6891 6.1.1), BADVERS for any name, negative answers' SOA TTL
(RFC 2308), legal owner names; and the query reader's bounds (compression pointers)."""

from __future__ import annotations

import struct
import time

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdatatype
import pytest

from vxnet.dns._server import error_reply
from vxnet.dns._wire import MAX_POINTERS, FormatError, read_query
from vxnet.dns._zone import ZONE_SUFFIX, Zone
from vxnet.records import TaskRecord as Task

Z = ZONE_SUFFIX
WEB = Task(name="web", framework="marathon", agent_ip="10.0.0.1", ip="9.0.1.2")


def reply_of(z: Zone, data: bytes) -> dns.message.Message:
    answer = z.answer(data)
    assert answer.reply is not None
    return dns.message.from_wire(answer.reply)


def edns_query(name: str, rdtype: str = "A", rdclass: str = "IN", **kwargs: object) -> bytes:
    query = dns.message.make_query(name, rdtype, rdclass, use_edns=0, want_dnssec=True)
    if kwargs.get("opcode") is not None:
        query.set_opcode(kwargs["opcode"])  # type: ignore[arg-type]
    return query.to_wire()


def test_every_error_to_an_edns_query_carries_an_opt_rr() -> None:
    z = Zone([WEB])
    cases = {
        "REFUSED (AXFR)": (edns_query(Z, "AXFR"), dns.rcode.REFUSED),
        "REFUSED (class CH)": (
            edns_query(f"web.marathon.containerip.{Z}", rdclass="CH"),
            dns.rcode.REFUSED,
        ),
        "NOTIMP (NOTIFY)": (edns_query(Z, "SOA", opcode=dns.opcode.NOTIFY), dns.rcode.NOTIMP),
        "NXDOMAIN": (edns_query(f"nope.{Z}"), dns.rcode.NXDOMAIN),
    }
    no_question = bytearray(edns_query(Z))
    question_end = 12 + len(dns.name.from_text(Z).to_wire() or b"") + 4
    formerr = bytes(no_question[:4]) + b"\x00\x00" + bytes(no_question[6:12])
    formerr += bytes(no_question[question_end:])  # the OPT RR alone, no question
    cases["FORMERR (no question)"] = (formerr, dns.rcode.FORMERR)
    for what, (data, rcode) in cases.items():
        reply = reply_of(z, data)
        assert reply.rcode() == rcode, what
        assert reply.edns == 0, f"{what}: no OPT RR"
        assert reply.payload == 1232, what
        assert reply.ednsflags & dns.flags.DO, f"{what}: DO not copied"
    plain = dns.message.make_query(Z, "AXFR").to_wire()
    assert reply_of(z, plain).edns == -1, "an OPT RR for a query that had none"


def test_badvers_for_any_name_in_the_zone_or_not() -> None:
    z = Zone([WEB])
    for name in (f"web.marathon.containerip.{Z}", "example.com"):
        query = dns.message.make_query(name, "A", use_edns=1)
        answer = z.answer(query.to_wire())
        assert answer.rcode == "BADVERS", name
        assert answer.forward is False
        reply = dns.message.from_wire(answer.reply or b"")
        assert reply.rcode() == dns.rcode.BADVERS
        assert reply.edns == 0


def test_the_servers_refusals_echo_the_question_and_carry_an_opt_rr() -> None:
    query = dns.message.make_query("example.com", "A", use_edns=0)
    reply = dns.message.from_wire(error_reply(query.to_wire(), dns.rcode.REFUSED) or b"")
    assert reply.rcode() == dns.rcode.REFUSED
    assert reply.question == query.question
    assert reply.edns == 0
    assert reply.flags & dns.flags.RA
    plain = dns.message.make_query("example.com", "A")
    assert dns.message.from_wire(error_reply(plain.to_wire(), 5) or b"").edns == -1


def test_long_task_and_port_names_give_legal_srv_owners() -> None:
    long_a = "a" * 61 + "-x" + "1" * 5  # normalized to 63 characters; cut to 62 for "_"
    long_b = "a" * 61 + "-y"
    tasks = [
        Task.from_json(
            {
                "name": name,
                "framework": "f" * 70,
                "agent_ip": "10.0.0.1",
                "ip": f"9.0.1.{i}",
                "ports": [{"name": "p" * 70, "port": 80, "protocol": "tcp"}],
            }
        )
        for i, name in enumerate((long_a, long_b), start=2)
    ]
    z = Zone(tasks)
    names = {r["name"] for r in z.records()}
    for name in names:
        assert all(len(label) <= 63 for label in name.split(".")), name
        assert len(name) + 2 <= 255, name
    srv = [r for r in z.records() if r["type"] == "SRV"]
    owners = {r["name"] for r in srv}
    # "a"*61 + "-x..." and "a"*61 + "-y" agree on 62 characters: one SRV name, two targets.
    assert owners == {
        f"_{'a' * 61}._{'f' * 62}._tcp.{Z}",
        f"_{'p' * 62}._{'a' * 61}._{'f' * 62}._tcp.{Z}",
    }
    query = dns.message.make_query(sorted(owners)[1], "SRV").to_wire()
    answer = z.answer(query, tcp=True)  # two long records and their glue: over 512 bytes
    reply = dns.message.from_wire(answer.reply or b"")
    targets = {str(rr.target) for rr in reply.answer[0]}
    assert len(targets) == 2
    glue = {rrset.name.to_text() for rrset in reply.additional}
    assert glue == targets, "each record's target has its addresses in ADDITIONAL"


def pointer_chain(size: int) -> bytes:
    """A query whose question name is a chain of compression pointers filling ``size`` bytes,
    each pointing 2 bytes further on (the classic amplification packet)."""
    header = struct.pack("!6H", 0x1234, 0, 1, 0, 0, 0)
    body = bytearray()
    for offset in range(12, size - 1, 2):
        body += struct.pack("!H", 0xC000 | min(offset + 2, 0x3FFF))
    return header + bytes(body)


def backward_chain(hops: int) -> bytes:
    """A query with two additional records: the first's RDATA holds ``hops`` pointers, each
    pointing at the one before it and the first at a root label; the second's owner points at
    the last. Every pointer is legal alone (it points back); the chain is ``hops + 1`` long."""
    question = (dns.name.from_text(Z).to_wire() or b"") + struct.pack("!HH", 1, 1)
    header = struct.pack("!6H", 0x1234, 0, 1, 0, 0, 2)
    rdata_at = 12 + len(question) + 1 + 10  # after the first record's root owner and fields
    chain = b"\x00"
    for i in range(hops):
        chain += struct.pack("!H", 0xC000 | (rdata_at if i == 0 else rdata_at + 1 + 2 * (i - 1)))
    first = b"\x00" + struct.pack("!HHIH", 16, 1, 0, len(chain)) + chain
    last = rdata_at + len(chain) - 2
    second = struct.pack("!H", 0xC000 | last) + struct.pack("!HHIH", 16, 1, 0, 0)
    return header + question + first + second


@pytest.mark.parametrize("size", [512, 4096, 65535])
def test_pointer_chains_are_refused_in_constant_time(size: int) -> None:
    z = Zone([WEB])
    data = pointer_chain(size)
    with pytest.raises(FormatError, match="does not point back"):
        read_query(data)
    start = time.process_time()
    for _ in range(100):
        assert z.answer(data).rcode == "FORMERR"
    assert time.process_time() - start < 1.0  # 100 packets: a generous bound, not a timing


def test_a_name_of_too_many_pointers_is_refused_and_a_short_one_read() -> None:
    with pytest.raises(FormatError, match=f"more than {MAX_POINTERS} compression pointers"):
        read_query(backward_chain(40))
    assert read_query(backward_chain(MAX_POINTERS - 1)).labels == tuple(Z.encode().split(b"."))
    with pytest.raises(FormatError, match="does not point back"):
        read_query(struct.pack("!6H", 1, 0, 1, 0, 0, 0) + b"\xc0\x0c\x00\x01\x00\x01")


def test_a_compressed_owner_in_the_additional_section_is_read() -> None:
    query = dns.message.make_query(f"web.marathon.containerip.{Z}", "A")
    wire = query.to_wire()
    # a TSIG-like record owned by the question's name, compressed (a pointer to offset 12)
    extra = b"\xc0\x0c" + struct.pack("!HHIH", 250, 255, 0, 0)
    data = wire[:10] + b"\x00\x01" + wire[12:] + extra
    assert read_query(data).labels == (b"web", b"marathon", b"containerip", *Z.encode().split(b"."))
    with pytest.raises(FormatError, match="answer or authority"):
        read_query(wire[:6] + b"\x00\x01" + wire[8:] + extra)
