"""The zone's sans-IO core: names, records and replies as dig sees them, the fast path's bytes,
and never a crash on any bytes (queries built and replies read with dnspython)."""

from __future__ import annotations

import itertools
import re
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vxnet.dns._wire import encode_name
from vxnet.dns._zone import (
    ZONE_SUFFIX,
    Answer,
    Port,
    Zone,
    normalize_label,
    task_from_record,
)
from vxnet.records import TaskRecord as Task

Z = ZONE_SUFFIX

TASKS = (
    Task(
        "web",
        "marathon",
        "10.0.0.1",
        ip="9.0.1.2",
        ip6="fd01:b::2",
        ports=(Port("http", 80), Port("admin", 9090)),
    ),
    Task("web", "marathon", "10.0.0.2", ip="9.0.1.3", ports=(Port("http", 80),)),
    Task("web", "marathon", "10.0.0.2", ip="9.0.1.3"),  # a duplicate value: served once
    Task("db", "marathon", "10.0.0.3", ip="9.0.1.9", ports_mapped=True, ports=(Port("", 5432),)),
    Task("dns", "infra", "10.0.0.4", ip="9.0.1.10", ports=(Port("dns", 53, "udp"),)),
    Task("bare", "cni", "10.0.0.5"),  # no container address: autoip is the agent
    Task("Web_App.v2", "My Framework", "10.0.0.6", ip="9.0.1.11"),
    Task("%%%", "marathon", "10.0.0.7", ip="9.0.1.12"),  # an empty label: no names
)


def zone(tasks: tuple[Task, ...] = TASKS, **kwargs: Any) -> Zone:
    return Zone(tasks, **kwargs)


def ask(
    z: Zone,
    name: str,
    rdtype: str = "A",
    *,
    tcp: bool = False,
    **kwargs: Any,
) -> tuple[Answer, dns.message.Message]:
    query = dns.message.make_query(name, rdtype, **kwargs)
    answer = z.answer(query.to_wire(), tcp=tcp)
    assert answer.reply is not None
    reply = dns.message.from_wire(answer.reply)
    assert reply.id == query.id
    return answer, reply


def values(reply: dns.message.Message, section: str = "answer") -> list[str]:
    rrsets: list[dns.rrset.RRset] = getattr(reply, section)
    return [rdata.to_text() for rrset in rrsets for rdata in rrset]


def owners(reply: dns.message.Message, section: str = "answer") -> list[str]:
    rrsets: list[dns.rrset.RRset] = getattr(reply, section)
    return [rrset.name.to_text() for rrset in rrsets]


# --- labels and records -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("web", "web"),
        ("My_App.v2", "my-app-v2"),
        ("WEB", "web"),
        ("a--b__c..d", "a--b--c--d"),  # runs are kept
        ("-4abc123", "4abc123"),  # leading dashes go
        ("__web__", "web"),  # and trailing ones
        ("my app!", "myapp"),  # other characters are dropped, as in DC/OS
        ("fd%gsf---gs7-f$gs--d7fddg-123", "fdgsf---gs7-fgs--d7fddg-123"),  # DC/OS's own cases
        ("89fdgsf---gs7-fgs--d7fddg-", "89fdgsf---gs7-fgs--d7fddg"),
        (
            "##fdgsf---gs7-fgs--d7fddg123456789012345678901234567890123456789-",
            "fdgsf---gs7-fgs--d7fddg123456789012345678901234567890123456789",
        ),
        (
            "fd%gsf---gs7-f$gs--d7fddg123456789012345678901234567890123456789-123",
            "fdgsf---gs7-fgs--d7fddg1234567890123456789012345678901234567891",
        ),
        (
            "%%fdgsf---gs7-fgs--d7fddg123456789012345678901234567890123456789---123",
            "fdgsf---gs7-fgs--d7fddg1234567890123456789012345678901234567891",
        ),
        ("x" * 70, "x" * 63),
        ("a" * 62 + "-" + "b" * 10, "a" * 62 + "b"),  # cut at 63: the dash goes, letters fill
        ("0-0", "0-0"),
        ("ünïcode", "ncode"),  # not ASCII: dropped
        ("İx", "x"),  # only ASCII letters are lowered
        ("", ""),
        ("---", ""),
        ("%%%", ""),
    ],
)
def test_normalize_label(text: str, label: str) -> None:
    assert normalize_label(text) == label
    assert len(label) <= 63


RECORD: dict[str, Any] = {
    "name": "web",
    "framework": "marathon",
    "network": "dcos",
    "agent_ip": "10.0.0.1",
    "ip": "9.0.1.2",
    "ip6": "fd01:b:0::2",
    "ports_mapped": True,
    "runtime": "docker",
    "container_id": "abc",
    "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "udp"}],
}


def test_task_from_record() -> None:
    assert task_from_record(RECORD) == Task(
        "web",
        "marathon",
        "10.0.0.1",
        ip="9.0.1.2",
        ip6="fd01:b::2",
        ports_mapped=True,
        ports=(Port("http", 80, "tcp"), Port("", 53, "udp")),
    )
    minimal = {"name": "a", "framework": "b", "agent_ip": "10.0.0.1"}
    assert task_from_record(minimal) == Task("a", "b", "10.0.0.1")
    assert task_from_record({**minimal, "ip": None, "ports": None}) == Task("a", "b", "10.0.0.1")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": None}, "name"),
        ({"name": ""}, "name"),
        ({"framework": 3}, "framework"),
        ({"agent_ip": None}, "agent_ip"),
        ({"agent_ip": "fd01::1"}, "agent_ip"),
        ({"agent_ip": "10.0.0"}, "agent_ip"),
        ({"ip": "fd01::1"}, "ip"),
        ({"ip": 167772161}, "ip"),
        ({"ip6": "9.0.1.2"}, "ip6"),
        ({"ports_mapped": "yes"}, "ports_mapped"),
        ({"ports": {"port": 80}}, "ports"),
        ({"ports": [80]}, "ports[0]"),
        ({"ports": [{"port": 80}, {"port": 0}]}, "ports[1].port"),
        ({"ports": [{"port": True}]}, "ports[0].port"),
        ({"ports": [{"port": 65536}]}, "ports[0].port"),
        ({"ports": [{"port": 80, "protocol": "sctp"}]}, "ports[0].protocol"),
        ({"ports": [{"port": 80, "name": 7}]}, "ports[0].name"),
    ],
)
def test_task_from_record_names_the_bad_field(change: dict[str, Any], field: str) -> None:
    record = {**RECORD, **change}
    with pytest.raises(ValueError, match=f"^{re.escape(field)}:"):
        task_from_record(record)


def test_task_from_record_needs_an_object() -> None:
    with pytest.raises(ValueError, match="object"):
        task_from_record(["web"])


def test_records_lists_everything_served_in_order() -> None:
    records = zone().records()
    assert records == sorted(records, key=lambda r: (r["name"], r["type"], r["value"]))
    assert {"name": Z, "type": "NS", "value": "ns.spartan.", "ttl": 3600} in records
    soa = "ns.spartan. support.mesosphere.com. 1 60 180 86400 1"
    assert {"name": Z, "type": "SOA", "value": soa, "ttl": 5} in records
    web = [r["value"] for r in records if r["name"] == f"web.marathon.containerip.{Z}"]
    assert web == ["9.0.1.2", "9.0.1.3", "fd01:b::2"]  # the duplicate task adds nothing
    srv = [r for r in records if r["name"] == f"_http._web._marathon._tcp.{Z}"]
    assert srv == [
        {
            "name": f"_http._web._marathon._tcp.{Z}",
            "type": "SRV",
            "value": f"1 1 80 web.marathon.autoip.{Z}.",
            "ttl": 5,
        }
    ]
    assert any(r["name"] == f"web-app-v2.myframework.containerip.{Z}" for r in records)
    assert not any(r["name"].startswith(".") or ".." in r["name"] for r in records)


def test_the_serial_and_suffix_are_the_zones() -> None:
    z = Zone(TASKS[:1], suffix="Cluster.Example.", serial=2024)
    assert z.suffix == "cluster.example"
    _, reply = ask(z, "cluster.example", "SOA")
    assert values(reply) == ["ns.spartan. support.mesosphere.com. 2024 60 180 86400 1"]
    _, reply = ask(z, "web.marathon.agentip.cluster.example")
    assert values(reply) == ["10.0.0.1"]
    assert z.answer(dns.message.make_query(f"web.marathon.agentip.{Z}", "A").to_wire()).forward


@pytest.mark.parametrize("suffix", ["", ".", "a..b", "x" * 64 + ".com", "ä.com", "a." * 130])
def test_a_bad_suffix_is_refused(suffix: str) -> None:
    with pytest.raises(ValueError, match="suffix"):
        Zone([], suffix=suffix)


def test_bad_serials_and_addresses_are_the_callers_fault() -> None:
    with pytest.raises(ValueError, match="serial"):
        Zone([], serial=-1)
    with pytest.raises(ValueError, match="'web' of 'marathon'"):
        Zone([Task("web", "marathon", "10.0.0.1", ip="not-an-ip")])


# --- answers ------------------------------------------------------------------------------------


def test_containerip_gives_the_container_addresses() -> None:
    z = zone()
    answer, reply = ask(z, f"web.marathon.containerip.{Z}")
    assert answer == Answer(answer.reply, rcode="NOERROR", fast=True)
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.flags & dns.flags.QR
    assert reply.flags & dns.flags.AA
    assert reply.flags & dns.flags.RD
    assert not reply.flags & dns.flags.RA
    assert sorted(values(reply)) == ["9.0.1.2", "9.0.1.3"]
    assert [rrset.ttl for rrset in reply.answer] == [5]
    _, reply = ask(z, f"web.marathon.containerip.{Z}", "AAAA")
    assert values(reply) == ["fd01:b::2"]


def test_agentip_and_autoip() -> None:
    z = zone()
    _, reply = ask(z, f"web.marathon.agentip.{Z}")
    assert sorted(values(reply)) == ["10.0.0.1", "10.0.0.2"]
    # ports not mapped: the container addresses
    _, reply = ask(z, f"web.marathon.autoip.{Z}")
    assert sorted(values(reply)) == ["9.0.1.2", "9.0.1.3"]
    _, reply = ask(z, f"web.marathon.autoip.{Z}", "AAAA")
    assert values(reply) == ["fd01:b::2"]
    # ports mapped: the agent, and no AAAA
    _, reply = ask(z, f"db.marathon.autoip.{Z}")
    assert values(reply) == ["10.0.0.3"]
    _, reply = ask(z, f"db.marathon.autoip.{Z}", "AAAA")
    assert reply.answer == []
    assert values(reply, "authority")[0].startswith("ns.spartan.")
    # no container address: autoip is the agent, containerip does not exist
    _, reply = ask(z, f"bare.cni.autoip.{Z}")
    assert values(reply) == ["10.0.0.5"]
    _, reply = ask(z, f"bare.cni.containerip.{Z}")
    assert reply.rcode() == dns.rcode.NXDOMAIN


def test_srv_with_the_targets_addresses_in_additional() -> None:
    z = zone()
    _, reply = ask(z, f"_web._marathon._tcp.{Z}", "SRV")
    target = f"web.marathon.autoip.{Z}."
    assert sorted(values(reply)) == [f"1 1 80 {target}", f"1 1 9090 {target}"]
    assert reply.answer[0].ttl == 5
    assert set(owners(reply, "additional")) == {target}
    assert sorted(values(reply, "additional")) == ["9.0.1.2", "9.0.1.3", "fd01:b::2"]
    _, reply = ask(z, f"_http._web._marathon._tcp.{Z}", "SRV")
    assert values(reply) == [f"1 1 80 {target}"]
    _, reply = ask(z, f"_dns._dns._infra._udp.{Z}", "SRV")
    assert values(reply) == [f"1 1 53 dns.infra.autoip.{Z}."]
    assert values(reply, "additional") == ["9.0.1.10"]
    _, reply = ask(z, f"_db._marathon._tcp.{Z}", "SRV")  # mapped: the target is the agent
    assert values(reply, "additional") == ["10.0.0.3"]
    _, reply = ask(z, f"_dns._infra._tcp.{Z}", "SRV")  # only a UDP port
    assert reply.rcode() == dns.rcode.NXDOMAIN


def test_the_apex_has_soa_and_ns() -> None:
    z = zone()
    _, reply = ask(z, Z, "SOA")
    assert values(reply) == ["ns.spartan. support.mesosphere.com. 1 60 180 86400 1"]
    assert reply.answer[0].ttl == 5
    _, reply = ask(z, Z, "NS")
    assert values(reply) == ["ns.spartan."]
    assert reply.answer[0].ttl == 3600
    assert reply.additional == []
    _, reply = ask(z, Z, "ANY")
    assert sorted(rrset.rdtype for rrset in reply.answer) == [
        dns.rdatatype.NS,
        dns.rdatatype.SOA,
    ]
    _, reply = ask(z, Z, "A")
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.answer == []


def test_any_gives_every_record_of_the_name() -> None:
    _, reply = ask(zone(), f"web.marathon.containerip.{Z}", "ANY")
    assert sorted(values(reply)) == ["9.0.1.2", "9.0.1.3", "fd01:b::2"]


@pytest.mark.parametrize(
    "name",
    [
        f"nope.marathon.containerip.{Z}",
        f"web.nope.containerip.{Z}",
        f"web.marathon.otherip.{Z}",
        f"x.web.marathon.containerip.{Z}",  # below a name that exists
        f"%%%.marathon.containerip.{Z}",
        f"-.marathon.containerip.{Z}",
    ],
)
def test_a_missing_name_is_nxdomain_with_the_soa(name: str) -> None:
    answer, reply = ask(zone(), name, use_edns=0)
    assert answer.rcode == "NXDOMAIN"
    assert not answer.fast
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert reply.flags & dns.flags.AA
    assert reply.answer == []
    assert owners(reply, "authority") == [f"{Z}."]
    assert reply.authority[0].rdtype == dns.rdatatype.SOA
    assert reply.authority[0].ttl == 1  # RFC 2308: min(SOA TTL 5, MINIMUM 1)


@pytest.mark.parametrize(
    ("name", "rdtype"),
    [
        (f"bare.cni.agentip.{Z}", "AAAA"),  # no IPv6
        (f"web.marathon.containerip.{Z}", "TXT"),
        (f"web.marathon.containerip.{Z}", "SRV"),
        (f"_web._marathon._tcp.{Z}", "A"),
        (f"marathon.containerip.{Z}", "A"),  # empty non-terminals
        (f"containerip.{Z}", "A"),
        (f"agentip.{Z}", "AAAA"),
        (f"_marathon._tcp.{Z}", "SRV"),
        (f"_tcp.{Z}", "SRV"),
        (f"web.marathon.containerip.{Z}", "SOA"),
    ],
)
def test_an_existing_name_without_the_type_is_nodata(name: str, rdtype: str) -> None:
    answer, reply = ask(zone(), name, rdtype)
    assert answer.rcode == "NOERROR"
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.flags & dns.flags.AA
    assert reply.answer == []
    assert owners(reply, "authority") == [f"{Z}."]
    assert reply.authority[0].rdtype == dns.rdatatype.SOA
    assert reply.authority[0].ttl == 1  # RFC 2308 section 3, on the fast path too


def test_nodata_for_the_other_address_family_is_on_the_fast_path() -> None:
    answer, _ = ask(zone(), f"bare.cni.agentip.{Z}", "AAAA")
    assert answer.fast


def test_case_is_ignored_and_echoed() -> None:
    z = zone()
    name = "WeB.Marathon.ContainerIP.DCOS.thisdcos.Directory"
    query = dns.message.make_query(name, "A")
    answer = z.answer(query.to_wire())
    assert answer.reply is not None
    assert not answer.fast
    # the question as sent, byte for byte, and the owner names in the query's case
    question = query.to_wire()[12:]
    assert answer.reply[12 : 12 + len(question)] == question
    reply = dns.message.from_wire(answer.reply)
    assert owners(reply) == [f"{name}."]
    assert sorted(values(reply)) == ["9.0.1.2", "9.0.1.3"]
    _, reply = ask(z, f"_WEB._marathon._TCP.{Z.upper()}", "SRV")
    assert len(values(reply)) == 2
    assert len(values(reply, "additional")) == 3


def test_answers_rotate() -> None:
    tasks = tuple(Task("web", "m", f"10.0.0.{i}", ip=f"9.0.0.{i}") for i in range(1, 5))
    z = Zone(tasks)
    for name in (f"web.m.containerip.{Z}", f"WEB.m.containerip.{Z}"):  # fast and slow paths
        orders = [values(ask(z, name)[1]) for _ in range(8)]
        assert orders[0] != orders[1]
        assert all(sorted(order) == sorted(orders[0]) for order in orders)
        firsts = [order[0] for order in orders[:4]]
        assert sorted(firsts) == ["9.0.0.1", "9.0.0.2", "9.0.0.3", "9.0.0.4"]
        assert orders[4:] == orders[:4]  # a full cycle, then again
        for a, b in itertools.pairwise(orders):
            assert b == a[1:] + a[:1]  # each starts one later


def test_out_of_zone_names_are_forwarded() -> None:
    z = zone()
    for name in ("example.com", "thisdcos.directory", "ns.spartan", f"{Z}.evil.com", "."):
        query = dns.message.make_query(name, "A")
        assert z.answer(query.to_wire()) == Answer(reply=None, forward=True)


# --- protocol -----------------------------------------------------------------------------------


def test_edns_gives_our_opt_without_options() -> None:
    z = zone()
    cookie = dns.edns.GenericOption(dns.edns.OptionType.COOKIE, b"\x01" * 8)
    for name in (f"web.marathon.containerip.{Z}", f"nope.{Z}", f"WEB.marathon.agentip.{Z}"):
        _, reply = ask(z, name, use_edns=0, payload=4096, options=[cookie])
        assert reply.edns == 0
        assert reply.payload == 1232
        assert reply.options == ()
        assert not reply.ednsflags & dns.flags.DO
    _, reply = ask(z, f"web.marathon.containerip.{Z}", use_edns=0, want_dnssec=True)
    assert reply.ednsflags & dns.flags.DO  # copied (RFC 3225)
    _, reply = ask(z, f"web.marathon.containerip.{Z}")
    assert reply.edns == -1  # no OPT asked, none given


def test_an_edns_version_above_0_is_badvers() -> None:
    answer, reply = ask(zone(), f"web.marathon.containerip.{Z}", use_edns=1)
    assert answer.rcode == "BADVERS"
    assert reply.rcode() == dns.rcode.BADVERS
    assert reply.edns == 0
    assert reply.answer == []


def test_many_instances_truncate_over_udp_and_come_whole_over_tcp() -> None:
    tasks = tuple(Task("web", "m", "10.0.0.1", ip=f"9.0.{i // 200}.{i % 200}") for i in range(100))
    z = Zone(tasks)
    name = f"web.m.containerip.{Z}"
    plain: dict[str, Any] = {}
    for edns in (plain, {"use_edns": 0, "payload": 4096}):
        answer, reply = ask(z, name, **edns)
        assert not answer.fast
        assert answer.rcode == "NOERROR"
        assert reply.flags & dns.flags.TC
        assert reply.flags & dns.flags.AA
        assert reply.answer == reply.authority == reply.additional == []
        assert reply.question[0].name.to_text() == f"{name}."
        assert reply.edns == (0 if edns else -1)
        answer, reply = ask(z, name, tcp=True, **edns)
        assert not reply.flags & dns.flags.TC
        assert len(values(reply)) == 100


def test_the_udp_limit_follows_the_clients_payload_up_to_1232() -> None:
    tasks = tuple(Task("web", "m", "10.0.0.1", ip=f"9.0.0.{i}") for i in range(1, 51))
    z = Zone(tasks)
    name = f"web.m.containerip.{Z}"
    _, whole = ask(z, name, use_edns=0, tcp=True)
    size = len(whole.to_wire())
    assert 512 < size < 1232
    for payload, truncated in ((0, True), (512, True), (size - 1, True), (size, False)):
        answer, reply = ask(z, name, use_edns=0, payload=payload)
        assert bool(reply.flags & dns.flags.TC) is truncated
        assert answer.fast is not truncated
        if not truncated:
            assert len(values(reply)) == 50
    _, reply = ask(z, name)
    assert reply.flags & dns.flags.TC
    # 100 records (1661 bytes) are more than 1232: truncated whatever the client says
    tasks = tuple(Task("web", "m", "10.0.0.1", ip=f"9.0.1.{i}") for i in range(1, 101))
    _, reply = ask(Zone(tasks), name, use_edns=0, payload=65535)
    assert reply.flags & dns.flags.TC


def test_glue_goes_before_the_answer_is_truncated() -> None:
    ports = tuple(Port(f"p{i}", 8000 + i) for i in range(7))
    tasks = tuple(Task("web", "m", "10.0.0.1", ip=f"9.0.0.{i}", ports=ports) for i in range(1, 5))
    z = Zone(tasks)
    name = f"_web._m._tcp.{Z}"
    answer, reply = ask(z, name, "SRV", tcp=True)
    assert answer.reply is not None
    assert len(answer.reply) > 512
    assert len(values(reply, "additional")) == 4
    _, reply = ask(z, name, "SRV")
    assert not reply.flags & dns.flags.TC
    assert len(values(reply)) == 7
    assert reply.additional == []
    answer, reply = ask(z, name, "SRV", use_edns=0)
    assert answer.fast
    assert len(values(reply, "additional")) == 4


def test_huge_tcp_answers_leave_the_glue_out() -> None:
    # dnslib points to names written beyond 16 KiB with the offset's top bits lost: the glue
    # would come out with a wrong owner, so past that size it is not sent
    ports = tuple(Port("", 10000 + i) for i in range(300))
    z = Zone([Task("web", "m", "10.0.0.1", ip="9.0.0.1", ip6="fd01::1", ports=ports)])
    answer, reply = ask(z, f"_web._m._tcp.{Z}", "SRV", tcp=True)
    assert answer.reply is not None
    assert len(answer.reply) > 0x4000
    assert len(values(reply)) == 300
    assert reply.additional == []


def test_an_empty_zone_has_its_apex() -> None:
    z = Zone([])
    assert [(r["type"], r["value"]) for r in z.records()] == [
        ("NS", "ns.spartan."),
        ("SOA", "ns.spartan. support.mesosphere.com. 1 60 180 86400 1"),
    ]
    assert z.fast_entries == 2
    _, reply = ask(z, f"containerip.{Z}")
    assert reply.rcode() == dns.rcode.NXDOMAIN


def test_rd_and_cd_are_echoed_ra_and_ad_are_not() -> None:
    z = zone()
    for name in (f"web.marathon.containerip.{Z}", f"WEB.marathon.containerip.{Z}"):
        for flags in (0, dns.flags.RD, dns.flags.CD, dns.flags.RD | dns.flags.CD | dns.flags.AD):
            _, reply = ask(z, name, flags=flags)
            assert reply.flags & (dns.flags.RD | dns.flags.CD) == flags & ~dns.flags.AD
            assert not reply.flags & (dns.flags.RA | dns.flags.AD | dns.flags.TC)


def test_formerr_notimp_refused_and_drops() -> None:
    z = zone()
    good = dns.message.make_query(f"web.marathon.containerip.{Z}", "A", id=0x1234).to_wire()

    def reply_to(data: bytes) -> dns.message.Message:
        answer = z.answer(data)
        assert answer.reply is not None
        message = dns.message.from_wire(answer.reply)
        assert message.id == 0x1234
        assert message.flags & dns.flags.QR
        return message

    for data in (
        good[:4] + b"\x00\x00" + good[6:12],  # no question
        good[:4] + b"\x00\x02" + good[6:],  # two questions, one there
        good[:12] + b"\x05abc",  # cut in the name
        good[:12] + b"\xc0\x0c\x00\x01\x00\x01",  # a pointer to itself
        good[:12],
    ):
        message = reply_to(data)
        assert message.rcode() == dns.rcode.FORMERR
        assert message.question == []
    assert z.answer(good[:4] + b"\x00\x00" + good[6:12]).rcode == "FORMERR"
    for opcode in (dns.opcode.IQUERY, dns.opcode.STATUS, dns.opcode.NOTIFY, dns.opcode.UPDATE):
        flags = dns.opcode.to_flags(opcode).to_bytes(2, "big")
        for data in (good[:2] + flags + good[4:], good[:2] + flags + good[4:12] + b"junk"):
            answer = z.answer(data)
            assert answer.rcode == "NOTIMP"
            message = reply_to(data)
            assert message.rcode() == dns.rcode.NOTIMP
            assert message.opcode() == opcode
    axfr = dns.message.make_query(Z, "AXFR", id=0x1234)
    assert reply_to(axfr.to_wire()).rcode() == dns.rcode.REFUSED
    chaos = dns.message.make_query(f"web.marathon.containerip.{Z}", "A", "CH", id=0x1234)
    assert reply_to(chaos.to_wire()).rcode() == dns.rcode.REFUSED
    anyclass = dns.message.make_query(f"web.marathon.containerip.{Z}", "A", "ANY", id=0x1234)
    assert len(values(reply_to(anyclass.to_wire()))) == 2
    # nothing for what is not a query
    assert z.answer(good[:11]) == Answer(reply=None, rcode="DROPPED")
    assert z.answer(b"") == Answer(reply=None, rcode="DROPPED")
    response = good[:2] + bytes([good[2] | 0x80]) + good[3:]
    assert z.answer(response) == Answer(reply=None, rcode="DROPPED")


# --- the fast path ------------------------------------------------------------------------------


def test_every_fast_entry_gives_the_slow_paths_bytes() -> None:
    many = tuple(
        Task("big", "m", "10.0.0.1", ip=f"9.0.0.{i}", ports=(Port("", 1000 + i),))
        for i in range(40)
    )
    fast, slow = Zone(TASKS + many), Zone(TASKS + many)
    keys = fast._plain.keys() | fast._edns.keys()
    assert fast.fast_entries == len(keys) > 40
    opts = [b""] + [b"\x00\x00\x29" + size.to_bytes(2, "big") + bytes(6) for size in (512, 1232)]
    for key in sorted(keys):
        entry = fast._plain.get(key) or fast._edns[key]
        rotations = len(entry.plain or entry.edns)
        for flags in (b"\x00\x00", b"\x01\x00", b"\x01\x10", b"\x06\x70"):
            for opt in opts:
                counts = b"\x00\x01" + bytes(5) + (b"\x01" if opt else b"\x00")
                query = b"\xab\xcd" + flags + counts + key + opt
                for _ in range(rotations + 1):
                    quick, full = fast.answer(query), slow._answer_slow(query)
                    assert quick.reply is not None
                    assert (quick.reply, quick.rcode) == (full.reply, full.rcode)
                    assert not full.fast
                    table = fast._edns if opt else fast._plain
                    fits = not opt or entry.edns_size <= max(512, int.from_bytes(opt[3:5]))
                    assert quick.fast is (key in table and fits)


CHANGE_TASK = st.builds(
    Task,
    name=st.sampled_from(["web", "db", "api"]),
    framework=st.sampled_from(["marathon", "infra"]),
    agent_ip=st.sampled_from(["10.0.0.1", "10.0.0.2"]),
    ip=st.one_of(st.none(), st.sampled_from(["9.0.1.2", "9.0.1.3", "9.0.2.2"])),
    ip6=st.one_of(st.none(), st.sampled_from(["fd01:b::2", "fd01:b::3"])),
    ports_mapped=st.booleans(),
    ports=st.lists(
        st.builds(Port, st.sampled_from(["", "http"]), st.sampled_from([80, 443])), max_size=2
    ).map(tuple),
)


@given(
    st.lists(CHANGE_TASK, max_size=8),
    st.lists(CHANGE_TASK, max_size=8),
    st.integers(0, 8),
    st.integers(1, 2**32 - 1),
)
def test_a_zone_built_on_its_predecessor_encodes_what_a_fresh_one_does(
    before: list[Task], added: list[Task], kept: int, serial: int
) -> None:
    old = Zone(before, serial=serial - 1 if serial > 1 else 7)
    after = before[:kept] + added
    fresh = Zone(after, serial=serial)
    built = Zone(after, serial=serial, previous=old)
    for mine, theirs in ((built._plain, fresh._plain), (built._edns, fresh._edns)):
        assert mine.keys() == theirs.keys()
        for key, entry in mine.items():
            want = theirs[key]
            assert (entry.plain, entry.edns, entry.edns_size) == (
                want.plain,
                want.edns,
                want.edns_size,
            ), key
    if before == after:
        assert built.reused == sum(
            1 for k in built._edns if not k.startswith(encode_name(built._apex))
        )


def test_a_rebuild_with_one_change_reuses_the_rest() -> None:
    tasks = [
        Task(f"app{i}", "marathon", "10.0.0.1", ip=f"9.0.{i // 200}.{i % 200 + 2}")
        for i in range(600)
    ]
    old = Zone(tasks, serial=1)
    new = Zone(
        [*tasks[1:], Task("new", "marathon", "10.0.0.2", ip="9.0.9.2")], serial=2, previous=old
    )
    # per task 3 names (containerip, agentip, autoip) x (A, NODATA AAAA); agentip is shared
    assert new.fast_entries - new.reused <= 10
    query = dns.message.make_query(f"app5.marathon.containerip.{Z}", "AAAA", id=7)
    reply = dns.message.from_wire(new.answer(query.to_wire()).reply or b"")
    (soa,) = reply.authority
    assert soa[0].serial == 2


def test_queries_off_the_fast_path_still_answer() -> None:
    z = zone()
    name = f"web.marathon.containerip.{Z}"
    plain = dns.message.make_query(name, "A").to_wire()
    assert z.answer(plain).fast
    variants = [
        plain + b"\x00",  # trailing byte
        dns.message.make_query(name, "A", use_edns=0, want_dnssec=True).to_wire(),  # DO
        dns.message.make_query(name, "A", use_edns=0, options=[dns.edns.NSIDOption(b"")]).to_wire(),
    ]
    for data in variants:
        answer = z.answer(data)
        assert not answer.fast
        assert answer.reply is not None
        assert sorted(values(dns.message.from_wire(answer.reply))) == ["9.0.1.2", "9.0.1.3"]


# --- any bytes ----------------------------------------------------------------------------------

SEEDS = [
    dns.message.make_query(name, rdtype, use_edns=edns).to_wire()
    for name, rdtype in (
        (f"web.marathon.containerip.{Z}", "A"),
        (f"WEB.marathon.autoip.{Z}", "AAAA"),
        (f"_web._marathon._tcp.{Z}", "SRV"),
        (f"nope.{Z}", "A"),
        (Z, "SOA"),
        ("example.com", "A"),
    )
    for edns in (None, 0)
]
# Twins: the first answers as the server will, the second only by the slow path; fed the same
# queries, their rotation counters stay in step, so their replies must be equal.
FAST_TWIN, SLOW_TWIN = Zone(TASKS), Zone(TASKS)


def check_any_bytes(data: bytes, tcp: bool) -> None:
    answer = FAST_TWIN.answer(data, tcp=tcp)
    slow = SLOW_TWIN._answer_slow(data, tcp)
    assert (answer.reply, answer.forward, answer.rcode) == (slow.reply, slow.forward, slow.rcode)
    assert answer.rcode != "SERVFAIL"  # our bugs hide there
    if answer.reply is None:
        assert answer.forward or answer.rcode == "DROPPED"
        return
    message = dns.message.from_wire(answer.reply)
    assert message.flags & dns.flags.QR
    assert answer.reply[:2] == data[:2]
    assert tcp or len(answer.reply) <= 1232


@settings(max_examples=300)
@given(st.binary(max_size=600), st.booleans())
def test_random_bytes_never_raise(data: bytes, tcp: bool) -> None:
    check_any_bytes(data, tcp)


@settings(max_examples=300)
@given(st.binary(min_size=12, max_size=600), st.booleans())
def test_random_queries_never_raise(tail: bytes, tcp: bool) -> None:
    check_any_bytes(b"\x12\x34\x01\x00\x00\x01" + tail, tcp)


MUTATION = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 4096), st.integers(0, 7)),
    st.tuples(st.just("cut"), st.integers(0, 4096), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 4096), st.integers(0, 255)),
)


@settings(max_examples=300)
@given(st.sampled_from(SEEDS), st.lists(MUTATION, min_size=1, max_size=5), st.booleans())
def test_mutated_queries_never_raise(
    seed: bytes, mutations: list[tuple[str, int, int]], tcp: bool
) -> None:
    data = bytearray(seed)
    for kind, where, what in mutations:
        at = where % (len(data) + 1)
        if kind == "flip" and at < len(data):
            data[at] ^= 1 << what
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = bytes([what])
    check_any_bytes(bytes(data), tcp)
