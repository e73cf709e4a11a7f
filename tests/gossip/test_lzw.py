"""LZW: bit-exact with Go's compress/lzw (LSB, litWidth 8), and safe on hostile input."""

from __future__ import annotations

import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vxnet.gossip._errors import WireError
from vxnet.gossip._lzw import lzw_compress, lzw_decompress

BIG = 1 << 24


def make_rng(seed: int) -> random.Random:
    """Reproducible test data (not secrets)."""
    return random.Random(seed)


def pack_codes(codes: list[int]) -> bytes:
    """Pack codes LSB first with the widths Go's decoder expects (a test-only encoder)."""
    bits = nbits = 0
    width, hi = 9, 257
    out = bytearray()
    for code in codes:
        bits |= code << nbits
        nbits += width
        while nbits >= 8:
            out.append(bits & 0xFF)
            bits >>= 8
            nbits -= 8
        if code == 256:
            width, hi = 9, 257
        elif code != 257:
            hi += 1
            if hi >= 1 << width:
                if width == 12:
                    hi -= 1
                else:
                    width += 1
    if nbits:
        out.append(bits & 0xFF)
    return bytes(out)


# Go's exact output. The empty stream is clear (256) then eof (257), 9 bits each, LSB first; "a" is
# clear, 97, eof. The third is an ack serf 0.9.4 compressed into a UDP packet (serf_plain.json);
# the fixtures test also checks every LZW payload captured from serf.
SERF_ACK = (
    "0282a75061796c6f6164da00820184aa41646a7573746d656e74cb0000000000000000a54572726f72cb3ff8"
    "000000000000a6486569676874cb3ee4f8b588e368f1a356656398"
    + "cb0000000000000000" * 8
    + "a55365714e6f01"
)
SERF_ACK_LZW = (
    "0005083a05254c1e366fc290d10640500042aa82905153670e9d3665dcd05906a0a3c78ea58ac891f346ceb21f"
    "f83e763485a44c9a336836fa2087af16a27168e28db252660c268e2a3b020d3a5465d18f473d26151a9469d3"
    "5253cac471f2264040"
)
GO_VECTORS = [
    (b"", "000302"),
    (b"a", "00c30404"),
    (bytes.fromhex(SERF_ACK), SERF_ACK_LZW),
]


@pytest.mark.parametrize(("plain", "compressed"), GO_VECTORS)
def test_known_vectors(plain: bytes, compressed: str) -> None:
    assert lzw_compress(plain).hex() == compressed
    assert lzw_decompress(bytes.fromhex(compressed), max_output=len(plain)) == plain


def _data(seed: int, size: int, alphabet: int) -> bytes:
    rng = make_rng(seed)
    if alphabet == 0:  # long runs, the case that grows long table entries
        return bytes(rng.choice(b"ab") for _ in range(64)) * (size // 64)
    return (
        rng.randbytes(size)
        if alphabet == 256
        else bytes(rng.randrange(alphabet) for _ in range(size))
    )


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    size=st.integers(0, 300_000),
    alphabet=st.sampled_from([0, 1, 2, 4, 16, 256]),
)
def test_round_trip_large(seed: int, size: int, alphabet: int) -> None:
    data = _data(seed, size, alphabet)
    assert lzw_decompress(lzw_compress(data), max_output=len(data)) == data


@given(st.binary(max_size=3000))
def test_round_trip_small(data: bytes) -> None:
    assert lzw_decompress(lzw_compress(data), max_output=len(data)) == data


def test_saturated_table_is_frozen_until_clear() -> None:
    # A non-Go encoder may never clear: at 12 bits with the table full, Go's decoder keeps the
    # table and reads 12-bit codes; entry 4095 stays usable.
    rng = make_rng(1)
    literals = [rng.randrange(256) for _ in range(5000)]
    stream = pack_codes([256, *literals, 4095, 257])
    out = lzw_decompress(stream, max_output=BIG)
    assert out[:5000] == bytes(literals)
    # code 4095 was assigned to literals[3837] + literals[3838][0] (assigned from code 258 on)
    assert out[5000:] == bytes(literals[3837:3839])


def test_stream_without_leading_clear_decodes() -> None:
    assert lzw_decompress(pack_codes([104, 105, 257]), max_output=10) == b"hi"


def test_bytes_after_eof_are_ignored() -> None:
    assert lzw_decompress(lzw_compress(b"hello") + b"junk", max_output=10) == b"hello"


@pytest.mark.parametrize(
    ("codes", "message"),
    [
        ([256, 300, 257], "invalid code 300"),
        ([256, 65, 259, 257], "invalid code 259"),
        ([256, 65, 66], "without an end-of-stream code"),
    ],
)
def test_invalid_streams(codes: list[int], message: str) -> None:
    with pytest.raises(WireError, match=message):
        lzw_decompress(pack_codes(codes), max_output=100)


@pytest.mark.parametrize("cut", [0, 1, 2, 10, 100])
def test_truncated_stream(cut: int) -> None:
    data = lzw_compress(make_rng(cut).randbytes(500))
    with pytest.raises(WireError, match="end-of-stream"):
        lzw_decompress(data[:cut], max_output=1000)


def test_kwkwk_code_is_accepted() -> None:
    # code 258 right after literal "a" is the code being defined: "aa"
    assert lzw_decompress(pack_codes([256, 97, 258, 257]), max_output=10) == b"aaa"


def test_bomb_is_refused_quickly() -> None:
    # Each cycle is 0, 258, 259, ... 4094: about 7.3 MB of zeros from 5.6 KB; 20 cycles: 150 MB.
    cycle = [256, 0, *range(258, 4095)]
    bomb = pack_codes(cycle * 20 + [257])
    assert len(bomb) < 120_000
    start = time.perf_counter()
    with pytest.raises(WireError, match="exceeds the limit of 1048576"):
        lzw_decompress(bomb, max_output=1 << 20)
    assert time.perf_counter() - start < 1.0


def test_output_exactly_at_limit_is_accepted() -> None:
    assert lzw_decompress(lzw_compress(b"x" * 1000), max_output=1000) == b"x" * 1000
    with pytest.raises(WireError):
        lzw_decompress(lzw_compress(b"x" * 1000), max_output=999)


def test_decoding_a_megabyte_is_fast() -> None:
    data = make_rng(5).randbytes(1 << 20)
    packed = lzw_compress(data)
    start = time.perf_counter()
    assert lzw_decompress(packed, max_output=1 << 20) == data
    assert time.perf_counter() - start < 2.0  # about 0.4 s on the development machine
