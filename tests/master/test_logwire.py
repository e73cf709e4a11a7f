"""The replicated log's frames and message codec."""

from __future__ import annotations

import struct

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vxnet.replog._core import (
    MAX_POSITION,
    Accept,
    Accepted,
    Fetch,
    Heartbeat,
    Learned,
    Message,
    Prepare,
    Promise,
    RecoverRequest,
    RecoverResponse,
    Reject,
)
from vxnet.replog._storage import Entry, ReplicaStatus, Snapshot
from vxnet.replog._wire import (
    MAX_FRAME,
    FrameReader,
    WireError,
    client_hello,
    decode_hello,
    decode_map,
    decode_message,
    encode_frame,
    encode_message,
    peer_hello,
)

pos = st.integers(0, MAX_POSITION)  # MAX_POSITION == MAX_BALLOT; beyond, test_hostile_peer
value = st.binary(max_size=64)
pairs = st.lists(st.tuples(pos, value), max_size=5).map(tuple)
entries = st.lists(st.builds(Entry, pos, pos, value, st.booleans()), max_size=5).map(tuple)
messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(Prepare, pos, pos),
    st.builds(Promise, pos, entries, pos),
    st.builds(Accept, pos, pairs, pos),
    st.builds(Accepted, pos, st.lists(pos, max_size=5).map(tuple)),
    st.builds(Heartbeat, pos, pos, pos),
    st.builds(Reject, pos, pos),
    st.builds(Fetch, pos, pos),
    st.builds(Learned, pairs, st.none() | st.builds(Snapshot, pos, value), pos),
    st.just(RecoverRequest()),
    st.builds(RecoverResponse, st.sampled_from(ReplicaStatus), pos, pos, pos),
)


@given(st.lists(messages, min_size=1, max_size=8), st.integers(1, 50))
def test_messages_round_trip_through_frames_split_anywhere(msgs: list[Message], chunk: int) -> None:
    data = b"".join(encode_frame(encode_message(m)) for m in msgs)
    reader = FrameReader()
    out: list[Message] = []
    for i in range(0, len(data), chunk):
        out.extend(decode_message(b) for b in reader.feed(data[i : i + chunk]))
    assert out == msgs
    assert reader.buffered == 0


def test_hellos() -> None:
    hello = decode_hello(peer_hello(3, 2))
    assert (hello.kind, hello.n, hello.replica) == ("peer", 3, 2)
    assert decode_hello(client_hello()).kind == "client"


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"a": 1}, "bad hello"),
        (["http", 1, "client"], "bad hello"),
        (["vxlog", 2, "client"], "protocol version 2; this replica speaks 1"),
        (["vxlog", 1, "peer", 3, 3], "replica number 3 is not 0..2"),
        (["vxlog", 1, "peer", 0, 0], "replica count 0 is not 1..256"),
        (["vxlog", 1, "peer", 3, "1"], "replica number '1'"),
        (["vxlog", 1, "admin"], "unknown kind 'admin'"),
    ],
)
def test_bad_hellos_are_refused(body: object, error: str) -> None:
    with pytest.raises(WireError, match=error):
        decode_hello(body)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("x", "not a non-empty array"),
        ([], "not a non-empty array"),
        ([99], "unknown type 99"),
        ([1, 5], "prepare: 2 fields, expected 3"),
        ([1, -1, 0], "prepare: ballot -1 is not a non-negative 64-bit integer"),
        ([1, 2**64 - 1, 0], "prepare: ballot"),
        ([3, 1, [[0, "text"]], 0], r"accept: an entry is not \[position, bytes\]"),
        ([3, 1, "entries", 0], "accept: entries is not an array"),
        (
            [2, 1, [[0, 1, b"v"]], 1],
            r"promise: an entry is not \[position, ballot, bytes, chosen\]",
        ),
        ([2, 1, [[0, 1, b"v", 1]], 1], "promise: an entry is not"),
        ([4, 1, [True]], "accepted: position True"),
        ([8, [], [1], 0], r"learned: snapshot is not \[position, bytes\]"),
        ([10, 7, 0, 0, 0], "recover response: unknown replica status 7"),
    ],
)
def test_malformed_messages_name_what_is_wrong(body: object, error: str) -> None:
    with pytest.raises(WireError, match=error):
        decode_message(body)


def test_an_oversized_frame_is_refused_before_it_is_buffered() -> None:
    reader = FrameReader()
    with pytest.raises(WireError, match="announces"):
        list(reader.feed(struct.pack(">I", MAX_FRAME + 1)))


def test_a_frame_that_is_not_msgpack_is_refused() -> None:
    body = b"\xc1"  # never used in msgpack
    with pytest.raises(WireError, match="not msgpack"):
        list(FrameReader().feed(struct.pack(">I", len(body)) + body))


def test_client_maps_need_an_integer_id() -> None:
    assert decode_map({"id": 4, "op": "status"}, "request")["op"] == "status"
    with pytest.raises(WireError, match="request: no integer id"):
        decode_map({"id": "4"}, "request")
    with pytest.raises(WireError, match="answer: not a map"):
        decode_map([1], "answer")


def test_frames_are_plain_msgpack() -> None:
    frame = encode_frame(encode_message(Heartbeat(257, 3, 4)))
    assert struct.unpack(">I", frame[:4])[0] == len(frame) - 4
    assert msgpack.unpackb(frame[4:]) == [5, 257, 3, 4]
