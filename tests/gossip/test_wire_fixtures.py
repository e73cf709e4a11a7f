"""Decode traffic captured from real serf 0.9.4 agents (see fixtures/README.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgpack
import pytest

from vxnet.gossip._keyring import Keyring
from vxnet.gossip._lzw import lzw_compress, lzw_decompress
from vxnet.gossip._messages import Alive, Dead, Message, NodeStatus, Ping, PushPull, User
from vxnet.gossip._wire import (
    StreamDecoder,
    WireError,
    decode_message,
    decode_packet,
    encode_message,
    encode_stream,
    split_compound,
)

FIXTURES = Path(__file__).parent / "fixtures"
NAMES = ["serf_plain", "serf_encrypted", "serf_ip_names", "serf_30_members"]
VSN = bytes([1, 5, 2, 2, 5, 5])


def load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return doc


def keyring(doc: dict[str, Any]) -> Keyring | None:
    return Keyring.from_base64(doc["key"]) if doc["key"] else None


def packets(name: str) -> list[bytes]:
    return [bytes.fromhex(u["hex"]) for u in load(name)["udp"]]


def streams(name: str) -> list[bytes]:
    doc = load(name)
    return [bytes.fromhex(t[k]) for t in doc["tcp"] for k in ("to_server", "to_client")]


def decode_stream(data: bytes, ring: Keyring | None) -> PushPull:
    dec = StreamDecoder(keyring=ring)
    dec.feed(data)
    msg = dec.next_message()
    dec.eof()
    assert isinstance(msg, PushPull)
    return msg


def lzw_payloads(buf: bytes, found: list[bytes]) -> None:
    """Collect every LZW buffer Go wrote inside an unencrypted packet or stream."""
    if buf[0] == 12:
        buf = buf[5:]
    if buf[0] == 7:
        for part in split_compound(buf[1:])[0]:
            lzw_payloads(part, found)
    elif buf[0] == 9:
        lzw = msgpack.unpackb(buf[1:], raw=True)[b"Buf"]
        found.append(lzw)
        lzw_payloads(lzw_decompress(lzw, max_output=1 << 24), found)


@pytest.mark.parametrize("name", NAMES)
def test_every_packet_decodes(name: str) -> None:
    ring = keyring(load(name))
    for data in packets(name):
        messages = decode_packet(data, keyring=ring)
        assert messages
        for msg in messages:
            assert decode_message(encode_message(msg)) == msg
            if isinstance(msg, Alive):
                assert msg.vsn == VSN
                assert msg.meta[0] == 0xFF
                assert msg.addr[0] == 127


@pytest.mark.parametrize("name", NAMES)
def test_every_stream_decodes_and_re_encodes_exactly(name: str) -> None:
    ring = keyring(load(name))
    for data in streams(name):
        msg = decode_stream(data, ring)
        assert msg.join
        assert all(n.vsn == VSN and n.meta[0] == 0xFF for n in msg.nodes)
        again = encode_stream(msg, keyring=ring, compress=True)
        assert decode_stream(again, ring) == msg
        if ring is None:
            assert again == data  # sorted keys, raw strings, nil slices and Go's LZW, byte for byte


@pytest.mark.parametrize("name", ["serf_plain", "serf_ip_names", "serf_30_members"])
def test_lzw_matches_go_bit_for_bit(name: str) -> None:
    found: list[bytes] = []
    for data in packets(name) + streams(name):
        lzw_payloads(data, found)
    assert found
    for lzw in found:
        assert lzw_compress(lzw_decompress(lzw, max_output=1 << 24)) == lzw


def test_plain_pair() -> None:
    msgs = [m for p in packets("serf_plain") for m in decode_packet(p, keyring=None)]
    alive = {m.node: m for m in msgs if isinstance(m, Alive)}
    assert alive["a"].port == 17946
    assert alive["b"].port == 17947
    assert msgpack.unpackb(alive["a"].meta[1:]) == {"role": "x", "dc": "one"}
    assert Ping(1, "a", bytes([127, 0, 0, 1]), 17947, "b") in msgs
    users = [m.payload for m in msgs if isinstance(m, User)]
    assert any(u[0] == 3 and b"deploy" in u for u in users)  # serf user event
    assert any(u[0] == 4 and b"whoami" in u for u in users)  # serf query
    assert Dead(1, "b", "b") in msgs  # b left gracefully
    # Real packets come bare, as compounds, CRC-wrapped and compressed.
    assert {p[0] for p in packets("serf_plain")} >= {0, 7, 9, 12}


def test_encrypted_pair() -> None:
    ring = keyring(load("serf_encrypted"))
    assert ring is not None
    data = packets("serf_encrypted")[0]
    assert data[0] == 1  # encryption version 1
    with pytest.raises(WireError, match="cannot decrypt"):
        decode_packet(data, keyring=Keyring([bytes(32)]))
    stream = streams("serf_encrypted")[0]
    assert stream[0] == 10
    names = {n.name for n in decode_stream(stream, ring).nodes}
    assert names == {"b"}


def test_thirty_members_push_pull() -> None:
    final = decode_stream(streams("serf_30_members")[-1], None)
    assert len(final.nodes) == 30
    assert {n.name for n in final.nodes} == {f"n{i:02d}" for i in range(30)}
    assert all(n.state is NodeStatus.ALIVE for n in final.nodes)
    assert {n.port for n in final.nodes} == set(range(18000, 18030))
    assert final.user_state[0] == 2  # serf's own push-pull message
    raw = streams("serf_30_members")[-1]
    plain = lzw_decompress(msgpack.unpackb(raw[1:], raw=True)[b"Buf"], max_output=1 << 20)
    assert len(plain) > 12_000  # several LZW table resets


def test_messages_round_trip_through_the_fixtures() -> None:
    seen: set[str] = set()
    for name in NAMES:
        ring = keyring(load(name))
        for data in packets(name):
            for msg in decode_packet(data, keyring=ring):
                seen.add(type(msg).__name__)
                if not isinstance(msg, User):
                    body: Message = msg
                    assert decode_message(encode_message(body)) == body
    assert seen >= {"Alive", "Ping", "Ack", "User", "Dead"}
