"""The memberlist codec: message tables, packets, streams and hostile input."""

from __future__ import annotations

import contextlib
import struct
import zlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vxnet.gossip._keyring import Keyring
from vxnet.gossip._messages import (
    Ack,
    Alive,
    Dead,
    ErrorResponse,
    IndirectPing,
    Message,
    Nack,
    NodeStatus,
    Ping,
    PushNodeState,
    PushPull,
    Suspect,
    User,
)
from vxnet.gossip._wire import (
    PartialPacketError,
    StreamDecoder,
    StreamMessage,
    WireError,
    compress_payload,
    decode_message,
    decode_packet,
    encode_message,
    encode_packet,
    encode_stream,
    make_compound,
)

VSN = bytes([1, 5, 2, 2, 5, 5])
LO = bytes([127, 0, 0, 1])
KEY = Keyring([bytes(range(32))])

MESSAGES: list[Message] = [
    Ping(1, "a"),
    Ping(2**32 - 1, "b", LO, 7946, "c"),
    IndirectPing(7, LO, 7946, "b", nack=True, source_addr=LO, source_port=1, source_node="a"),
    IndirectPing(8, LO, 0, "b"),
    Ack(3),
    Ack(4, b"\x01coordinate"),
    Nack(5),
    ErrorResponse("boom"),
    Suspect(3, "b", "a"),
    Alive(1, "a", LO, 7946, b"\xff\x81\xa4role\xa1x", VSN),
    Alive(0, "ü-node", b"", 0, b"", b""),
    Dead(2, "b", "b"),
    User(b"\x03serf event"),
    User(b""),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=repr)
def test_message_round_trip(msg: Message) -> None:
    data = encode_message(msg)
    assert decode_message(data) == msg
    assert decode_packet(data, keyring=None) == [msg]


def test_ping_exact_bytes_and_omitempty() -> None:
    # As serf 0.9.4 wrote it (serf_plain.json): keys sorted, raw strings, shortest integers.
    serf = (
        "0085a44e6f6465a161a55365714e6f01aa536f7572636541646472a47f000001"
        "aa536f757263654e6f6465a162aa536f75726365506f7274cd461b"
    )
    assert encode_message(Ping(1, "a", LO, 17947, "b")).hex() == serf
    bare = msgpack.unpackb(encode_message(Ping(9, "x"))[1:], raw=True)
    assert bare == {b"Node": b"x", b"SeqNo": 9}


def test_empty_byte_fields_are_nil_like_go() -> None:
    assert msgpack.unpackb(encode_message(Ack(1))[1:], raw=True) == {b"Payload": None, b"SeqNo": 1}


def test_decoding_accepts_new_spec_and_missing_fields() -> None:
    body = msgpack.packb({"SeqNo": 5, "Payload": b"xy", "Extra": [1, 2]}, use_bin_type=True)
    assert decode_message(b"\x02" + body) == Ack(5, b"xy")
    assert decode_message(b"\x04" + msgpack.packb({"Vsn": [1, 5, 2, 2, 5, 5]})) == Alive(
        0, "", b"", 0, b"", VSN
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "no type byte"),
        (b"\x63", "unknown message type 99"),
        (b"\x06\x80", "only valid on a stream"),
        (b"\x07\x00", "compound wrapper"),
        (b"\x00", "truncated"),
        (b"\x00\xc1", "malformed"),
        (b"\x00\x93\x01\x02\x03", "expected a msgpack map, got list"),
        (b"\x00" + msgpack.packb({"SeqNo": -1}), "does not fit 32"),
        (b"\x00" + msgpack.packb({"SeqNo": 2**32}), "does not fit 32"),
        (b"\x00" + msgpack.packb({"Node": 5}), "Node is a int"),
        (b"\x01" + msgpack.packb({"Nack": 1}), "Nack is a int"),
    ],
)
def test_bad_messages(data: bytes, message: str) -> None:
    with pytest.raises(WireError, match=message):
        decode_message(data)


def test_encoding_checks_ranges() -> None:
    with pytest.raises(ValueError, match="SeqNo"):
        encode_message(Ping(2**32, "a"))
    with pytest.raises(ValueError, match="Port"):
        encode_message(Alive(1, "a", LO, 70000, b"", VSN))


# ------------------------------------------------------------------------------------ packets


@pytest.mark.parametrize("crc", [False, True])
@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("keyring", [None, KEY])
def test_packet_round_trip(crc: bool, compress: bool, keyring: Keyring | None) -> None:
    parts = [encode_message(m) for m in MESSAGES]
    for chosen in (parts[:1], parts):
        packet = encode_packet(chosen, keyring=keyring, crc=crc, compress=compress)
        assert decode_packet(packet, keyring=keyring) == [decode_message(p) for p in chosen]


def test_compression_only_when_smaller() -> None:
    small = encode_message(Ping(1, "a"))
    assert encode_packet([small], keyring=None, crc=False, compress=True) == small
    big = encode_message(User(b"abc" * 200))
    assert encode_packet([big], keyring=None, crc=False, compress=True)[0] == 9


def test_compound_layout() -> None:
    assert make_compound([b"\x0b\x80", b"\x08xyz"]) == b"\x07\x02\x00\x02\x00\x04\x0b\x80\x08xyz"
    with pytest.raises(ValueError, match="at most 255"):
        make_compound([b"\x08"] * 256)
    with pytest.raises(ValueError, match="more than 65535"):
        make_compound([b"\x08" * 70000])
    with pytest.raises(ValueError, match="at least one"):
        encode_packet([], keyring=None, crc=False)


def test_truncated_compound_keeps_complete_parts() -> None:
    parts = [encode_message(Nack(1)), encode_message(Nack(2)), encode_message(Nack(3))]
    packet = make_compound(parts)[:-2]
    with pytest.raises(PartialPacketError, match="part 3 needs 9 bytes but only 7 remain") as info:
        decode_packet(packet, keyring=None)
    assert info.value.messages == [Nack(1), Nack(2)]


def test_bad_part_does_not_hide_the_good_ones() -> None:
    packet = make_compound([encode_message(Nack(1)), b"\x63", b"", encode_message(Nack(2))])
    with pytest.raises(PartialPacketError) as info:
        decode_packet(packet, keyring=None)
    assert info.value.messages == [Nack(1), Nack(2)]
    assert len(info.value.errors) == 2


@pytest.mark.parametrize(
    ("packet", "message"),
    [
        (b"\x07\x03\x00\x01", "3 parts declared, header truncated at byte 4"),
        (b"\x07", "missing the part count"),
        (b"\x0c\x00\x00", "CRC wrapper truncated"),
        (b"\x0c\x00\x00\x00\x00\x0b\x80", "CRC mismatch"),
        (b"\x09" + msgpack.packb({"Algo": 1, "Buf": b""}), "unknown algorithm 1"),
        (b"\x09\x80", "end-of-stream"),
        (b"", "no type byte"),
        (b"\x0a\x00", "encrypt wrapper"),
    ],
)
def test_bad_packets(packet: bytes, message: str) -> None:
    with pytest.raises(WireError, match=message):
        decode_packet(packet, keyring=None)


def test_nesting_is_limited() -> None:
    packet = encode_message(Nack(1))
    for _ in range(10):
        packet = make_compound([packet])
    with pytest.raises(WireError, match="deep"):
        decode_packet(packet, keyring=None)


def test_crc_covers_the_rest() -> None:
    body = encode_message(Nack(7))
    good = b"\x0c" + struct.pack(">I", zlib.crc32(body)) + body
    assert decode_packet(good, keyring=None) == [Nack(7)]
    assert decode_packet(body, keyring=None) == [Nack(7)]


def test_encryption_is_enforced_both_ways() -> None:
    plain = encode_packet([encode_message(Nack(1))], keyring=None, crc=False)
    with pytest.raises(WireError, match="cannot decrypt packet"):
        decode_packet(plain, keyring=KEY)
    sealed = encode_packet([encode_message(Nack(1))], keyring=KEY, crc=False)
    with pytest.raises(WireError):
        decode_packet(sealed, keyring=Keyring([bytes(16)]))


def test_oversized_packet_and_decompression_bomb() -> None:
    with pytest.raises(WireError, match="over the limit"):
        decode_packet(bytes(70000), keyring=None)
    bomb = compress_payload(encode_message(User(bytes(200_000))))
    assert len(bomb) < 5000
    with pytest.raises(WireError, match="exceeds the limit of 65536"):
        decode_packet(bomb, keyring=None)


# ------------------------------------------------------------------------------------ streams

NODES = tuple(
    PushNodeState(
        f"n{i}",
        LO,
        18000 + i,
        b"\xff\x81\xa3idx\xa1" + bytes([48 + i % 10]),
        i,
        NodeStatus(i % 4),
        VSN,
    )
    for i in range(40)
)
STREAM_MESSAGES: list[StreamMessage] = [
    PushPull(NODES, b"\x02serf state", join=True),
    PushPull((), b"", join=False),
    User(b"\x03user"),
    User(b""),
    Ping(5, "a", LO, 1, "b"),
    Ack(5, b"p"),
    ErrorResponse("nope"),
]


def _decode_stream(data: bytes, keyring: Keyring | None, chunk: int) -> list[StreamMessage]:
    dec = StreamDecoder(keyring=keyring)
    out = []
    for i in range(0, len(data), chunk):
        dec.feed(data[i : i + chunk])
        while (msg := dec.next_message()) is not None:
            out.append(msg)
    dec.eof()
    return out


@pytest.mark.parametrize("keyring", [None, KEY])
@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("msg", STREAM_MESSAGES, ids=lambda m: type(m).__name__)
def test_stream_round_trip(msg: StreamMessage, keyring: Keyring | None, compress: bool) -> None:
    data = encode_stream(msg, keyring=keyring, compress=compress)
    for chunk in (1, 7, len(data)):
        assert _decode_stream(data, keyring, chunk) == [msg]


def test_stream_layouts() -> None:
    user = encode_stream(User(b"hi"), keyring=None, compress=False)
    assert user == b"\x08\x81\xaaUserMsgLen\x02hi"
    pp = encode_stream(PushPull(NODES[:1], b"S", join=True), keyring=None, compress=False)
    assert pp.startswith(b"\x06\x83\xa4Join\xc3\xa5Nodes\x01\xacUserStateLen\x01\x87\xa4Addr")
    assert pp.endswith(b"S")
    sealed = encode_stream(User(b"hi"), keyring=KEY, compress=False)
    assert sealed[0] == 10
    assert struct.unpack(">I", sealed[1:5])[0] == len(sealed) - 5
    assert KEY.decrypt(sealed[5:], aad=sealed[:5]) == user


def test_plain_messages_follow_one_another() -> None:
    a = encode_stream(Ping(1, "x"), keyring=None, compress=False)
    b = encode_stream(User(b"u"), keyring=None, compress=True)
    assert _decode_stream(a + b, None, 3) == [Ping(1, "x"), User(b"u")]


def test_cut_off_stream_is_an_error() -> None:
    data = encode_stream(PushPull(NODES, b"xyz", join=False), keyring=None, compress=False)
    dec = StreamDecoder()
    dec.feed(data[:-100])
    assert dec.next_message() is None
    with pytest.raises(WireError, match="node state"):
        dec.eof()
    dec = StreamDecoder()
    dec.feed(data[:-1])
    assert dec.next_message() is None
    with pytest.raises(WireError, match="3 bytes of push-pull user state"):
        dec.eof()


@pytest.mark.parametrize(
    ("data", "keyring", "message"),
    [
        (b"\x0a\x02\x00\x00\x00", KEY, "over the limit"),
        (b"\x0a\x00\x00\x00\x00", None, "no keyring"),
        (b"\x06\x80", KEY, "not encrypted"),
        (b"\x04\x80", None, "type 4 is not valid on a stream"),
        (b"\x09\x09", None, "expected a msgpack map"),
        (b"\x06" + msgpack.packb({"Nodes": 10**9}), None, "Nodes 1000000000 is over the limit"),
        (b"\x06" + msgpack.packb({"UserStateLen": 2**40}), None, "UserStateLen"),
        (b"\x08" + msgpack.packb({"UserMsgLen": 2**30}), None, "UserMsgLen"),
        (b"\x06" + msgpack.packb({"Nodes": 1}) + msgpack.packb({"State": 9}), None, "State 9"),
        (b"\x06\xdf\xff\xff\xff\xff", None, "malformed"),
        (b"\x00\xdd\xff\xff\xff\xff", None, "malformed"),
    ],
)
def test_bad_streams_fail_fast(data: bytes, keyring: Keyring | None, message: str) -> None:
    dec = StreamDecoder(keyring=keyring, max_size=1 << 20)
    dec.feed(data)
    with pytest.raises(WireError, match=message):
        dec.next_message()
    with pytest.raises(WireError, match=message):  # the decoder stays failed
        dec.next_message()


def test_compressed_stream_bomb_is_refused() -> None:
    bomb = compress_payload(encode_stream(User(bytes(3_000_000)), keyring=None, compress=False))
    dec = StreamDecoder(max_size=1 << 20)
    dec.feed(bomb)
    with pytest.raises(WireError, match="exceeds the limit"):
        dec.next_message()


def test_buffer_cap() -> None:
    dec = StreamDecoder(max_size=1000)
    with pytest.raises(WireError, match="buffered"):
        dec.feed(bytes(5000))


def test_inner_stream_cut_short() -> None:
    inner = encode_stream(User(b"abcdef"), keyring=None, compress=False)[:-2]
    dec = StreamDecoder()
    dec.feed(compress_payload(inner))
    with pytest.raises(WireError, match="decompressed stream ends"):
        dec.next_message()


# ------------------------------------------------------------------------------------ fuzzing


@settings(max_examples=300)
@given(st.binary(max_size=400), st.booleans())
def test_decode_packet_raises_only_wire_error(data: bytes, encrypted: bool) -> None:
    with contextlib.suppress(WireError):
        decode_packet(data, keyring=KEY if encrypted else None)


SEEDS = [
    encode_packet([encode_message(m) for m in MESSAGES], keyring=None, crc=True, compress=True),
    encode_packet([encode_message(m) for m in MESSAGES], keyring=None, crc=False),
    *(
        encode_stream(m, keyring=None, compress=c)
        for m in STREAM_MESSAGES[:3]
        for c in (False, True)
    ),
]


@settings(max_examples=300)
@given(
    st.sampled_from(SEEDS),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=6),
    st.integers(0, 10**6),
)
def test_mutated_inputs_raise_only_wire_error(
    seed: bytes, flips: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(seed)
    for pos, value in flips:
        data[pos % len(data)] = value
    data = data[: max(1, cut % (len(data) + 1))]
    with contextlib.suppress(WireError):
        decode_packet(bytes(data), keyring=None)
    with contextlib.suppress(WireError):
        _decode_stream(bytes(data), None, 5)


@settings(max_examples=300)
@given(st.binary(max_size=400), st.integers(1, 50), st.booleans())
def test_stream_decoder_raises_only_wire_error(data: bytes, chunk: int, encrypted: bool) -> None:
    with contextlib.suppress(WireError):
        _decode_stream(data, KEY if encrypted else None, chunk)
