"""vxnet's zone against Knot serving the same records (the zone's own ``records()``, as
``GET /v1/records`` exports them), for a generated corpus of names, types, classes, EDNS variants
and opcodes. Each reply pair is compared on what a client acts on: RCODE (extended included), AA,
TC, the answer's records, whether the authority carries the SOA, the question echoed, and the OPT
RR. The differences that remain are listed in :func:`justified`, each with its reason; anything
else fails the test."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import pytest

from vxnet.dns._zone import ZONE_SUFFIX, Zone
from vxnet.records import TaskRecord
from vxnet.sandbox.knot import Knot

if TYPE_CHECKING:
    from collections.abc import Iterator

Z = ZONE_SUFFIX
TASKS = [
    TaskRecord.from_json(
        {
            "name": name,
            "framework": framework,
            "agent_ip": f"10.0.0.{i + 1}",
            "ip": f"9.0.{i}.2",
            **({"ip6": f"fd01:b::{i}:2"} if i % 2 else {}),
            "ports_mapped": i % 3 == 0,
            "ports": [{"name": "http", "port": 8000 + i, "protocol": "tcp"}],
        }
    )
    for i, (name, framework) in enumerate(
        [("web", "marathon"), ("web", "marathon"), ("db", "shop"), ("cache", "shop")]
    )
]
NAMES = [
    f"web.marathon.containerip.{Z}",
    f"WEB.Marathon.containerip.{Z}",
    f"db.shop.agentip.{Z}",
    f"cache.shop.autoip.{Z}",
    f"_web._marathon._tcp.{Z}",
    f"_http._db._shop._tcp.{Z}",
    f"marathon.containerip.{Z}",  # an empty non-terminal
    f"containerip.{Z}",
    f"nope.marathon.containerip.{Z}",
    f"x.web.marathon.containerip.{Z}",
    f"nothing.{Z}",
    Z,
]
TYPES = ["A", "AAAA", "SRV", "TXT", "MX", "SOA", "NS", "ANY", "CNAME"]
EDNS: list[dict[str, Any]] = [
    {"use_edns": False},
    {"use_edns": 0},
    {"use_edns": 0, "want_dnssec": True},
    {"use_edns": 0, "payload": 512},
    {"use_edns": 1},
]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Zone, Knot]]:
    if shutil.which("knotd") is None and not Path("/usr/sbin/knotd").exists():
        pytest.skip("needs knotd (knot)")
    zone = Zone(TASKS)
    lines = [
        f"{r['name']}. {r['ttl']} {r['type']} {r['value']}"
        for r in zone.records()
        if r["type"] not in ("SOA", "NS")  # Knot's helper writes its own apex SOA and NS
    ]
    with Knot(tmp_path_factory.mktemp("knot-diff"), Z, lines) as knot:
        yield zone, knot


def view(message: dns.message.Message) -> dict[str, Any]:
    """What a client acts on in a reply."""
    return {
        "rcode": message.rcode(),
        "aa": bool(message.flags & dns.flags.AA),
        "tc": bool(message.flags & dns.flags.TC),
        "question": [(q.name.to_text().lower(), q.rdtype, q.rdclass) for q in message.question],
        "answer": sorted(
            (
                rrset.name.to_text().lower(),
                rrset.rdtype,
                rrset.ttl,
                sorted(r.to_text() for r in rrset),
            )
            for rrset in message.answer
            if rrset.name.to_text().lower() != f"ns.{Z}."
        ),
        # a negative answer's SOA: its TTL is min(SOA TTL, MINIMUM) on both (RFC 2308)
        "soa_ttl": [r.ttl for r in message.authority if r.rdtype == dns.rdatatype.SOA],
        "edns": message.edns,
    }


def justified(query: dns.message.Message, ours: dict[str, Any], knot: dict[str, Any]) -> str:
    """Why ``ours`` may differ from Knot's reply to ``query`` (empty: it may not)."""
    qtype = query.question[0].rdtype
    name = query.question[0].name.to_text().lower()
    if qtype in (dns.rdatatype.SOA, dns.rdatatype.NS) and name == f"{Z}.":
        return "the apex SOA and NS: DC/OS's ns.spartan against the Knot helper's own"
    if qtype == dns.rdatatype.ANY:
        return "ANY: vxnet answers every record (as dcos-dns); Knot answers RFC 8482's minimum"
    same = ours["rcode"] == knot["rcode"] and ours["answer"] == knot["answer"]
    if same and ours["tc"] != knot["tc"] and qtype == dns.rdatatype.SRV:
        return "SRV glue: vxnet adds the targets' addresses, so truncates sooner"
    return ""


def ask_knot(knot: Knot, query: dns.message.Message) -> dns.message.Message:
    return dns.query.udp(query, "127.0.0.1", port=knot.port, timeout=5, ignore_trailing=True)


def test_vxnet_answers_as_knot_does_but_for_the_listed_differences(
    servers: tuple[Zone, Knot],
) -> None:
    zone, knot = servers
    unexplained: list[str] = []
    asked = 0
    corpus = itertools.product(NAMES, TYPES, EDNS)
    for name, rdtype, edns in corpus:
        query = dns.message.make_query(name, rdtype, **edns)
        answer = zone.answer(query.to_wire())
        assert answer.reply is not None, (name, rdtype, edns)
        ours = view(dns.message.from_wire(answer.reply))
        theirs = view(ask_knot(knot, query))
        asked += 1
        if ours != theirs and not justified(query, ours, theirs):
            unexplained.append(f"{name} {rdtype} {edns}:\n  vxnet {ours}\n  knot  {theirs}")
    # Other classes and opcodes, as a client sends them.
    for rdclass in ("CH", "HS"):
        query = dns.message.make_query(f"web.marathon.containerip.{Z}", "A", rdclass, use_edns=0)
        ours = view(dns.message.from_wire(zone.answer(query.to_wire()).reply or b""))
        theirs = view(ask_knot(knot, query))
        asked += 1
        if (ours["rcode"], ours["edns"]) != (theirs["rcode"], theirs["edns"]):
            unexplained.append(f"class {rdclass}: vxnet {ours} knot {theirs}")
    assert asked == len(NAMES) * len(TYPES) * len(EDNS) + 2
    assert unexplained == [], "\n".join(unexplained[:20])


def test_opcodes_other_than_query_get_an_error_with_an_opt_rr_from_both(
    servers: tuple[Zone, Knot],
) -> None:
    """vxnet answers NOTIMP to every opcode but QUERY (it has no secondaries to notify and
    takes no updates); Knot's RCODE is listed beside it. Both carry the OPT RR."""
    zone, knot = servers
    seen = {}
    for opcode in (dns.opcode.NOTIFY, dns.opcode.STATUS, dns.opcode.UPDATE):
        query = dns.message.make_query(Z, "SOA", use_edns=0)
        query.set_opcode(opcode)
        ours = dns.message.from_wire(zone.answer(query.to_wire()).reply or b"")
        theirs = ask_knot(knot, query)
        assert ours.rcode() == dns.rcode.NOTIMP
        assert ours.opcode() == opcode
        assert ours.edns == theirs.edns == 0, opcode
        assert theirs.rcode() != dns.rcode.NOERROR, "Knot served an opcode we refuse"
        seen[dns.opcode.to_text(opcode)] = dns.rcode.to_text(theirs.rcode())
    assert set(seen) == {"NOTIFY", "STATUS", "UPDATE"}
