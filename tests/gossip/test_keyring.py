"""The AES-GCM keyring, compatible with ``serf agent -encrypt``."""

from __future__ import annotations

import base64
import itertools

import pytest

from vxnet.gossip._errors import WireError
from vxnet.gossip._keyring import Keyring, encrypted_length, format_key, parse_key

K16, K24, K32 = bytes(range(16)), bytes(range(24)), bytes(range(100, 132))


def counter_nonces() -> Keyring:
    counter = itertools.count()
    return Keyring([K32], random_bytes=lambda n: next(counter).to_bytes(n, "big"))


@pytest.mark.parametrize("key", [K16, K24, K32])
def test_each_key_size_round_trips(key: bytes) -> None:
    ring = Keyring([key])
    sealed = ring.encrypt(b"hello", b"aad")
    assert sealed[0] == 1
    assert len(sealed) == encrypted_length(5) == 1 + 12 + 5 + 16
    assert ring.decrypt(sealed, b"aad") == b"hello"


@pytest.mark.parametrize("size", [0, 1, 15, 17, 31, 33, 64])
def test_other_key_sizes_are_refused(size: int) -> None:
    with pytest.raises(ValueError, match="16, 24 or 32 bytes"):
        Keyring([bytes(size)])


def test_empty_keyring_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one key"):
        Keyring([])


def test_wrong_key_and_wrong_aad_fail() -> None:
    sealed = Keyring([K16]).encrypt(b"secret")
    with pytest.raises(WireError, match="none of the 1 installed keys"):
        Keyring([K32]).decrypt(sealed)
    with pytest.raises(WireError):
        Keyring([K16]).decrypt(Keyring([K16]).encrypt(b"x", b"header"), b"other")


def test_every_installed_key_is_tried() -> None:
    sender = Keyring([K24])
    receiver = Keyring([K16, K32, K24])
    assert receiver.decrypt(sender.encrypt(b"m")) == b"m"


def test_primary_rotation() -> None:
    ring = Keyring([K16, K32])
    assert ring.primary_key == K16
    ring.use_key(K32)
    assert ring.keys == (K32, K16)
    assert Keyring([K32]).decrypt(ring.encrypt(b"new")) == b"new"
    with pytest.raises(WireError):
        Keyring([K16]).decrypt(ring.encrypt(b"new"))
    with pytest.raises(ValueError, match="primary"):
        ring.remove_key(K32)
    ring.remove_key(K16)
    assert list(ring.keys) == [K32]
    with pytest.raises(ValueError, match="not in the keyring"):
        ring.use_key(K24)


def test_adding_a_key_twice_keeps_one() -> None:
    ring = Keyring([K16, K16])
    ring.add_key(K16)
    assert ring.keys == (K16,)


def test_tampering_is_detected() -> None:
    sealed = bytearray(Keyring([K16]).encrypt(b"payload"))
    for i in range(1, len(sealed)):
        tampered = bytearray(sealed)
        tampered[i] ^= 0x01
        with pytest.raises(WireError):
            Keyring([K16]).decrypt(bytes(tampered))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"\x02" + bytes(40), "unsupported encryption version 2"),
        (b"\x01" + bytes(27), "shorter than the 29 bytes"),
        (b"\x00" + bytes(43), "shorter than the 45 bytes"),
    ],
    ids=["empty", "version", "short-v1", "short-v0"],
)
def test_malformed_payloads(data: bytes, message: str) -> None:
    with pytest.raises(WireError, match=message):
        Keyring([K16]).decrypt(data)


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 100])
def test_version_0_padding(size: int) -> None:
    ring = Keyring([K16])
    sealed = ring.encrypt(bytes(range(size)), version=0)
    assert sealed[0] == 0
    assert len(sealed) == encrypted_length(size, version=0)
    assert ring.decrypt(sealed) == bytes(range(size))


def test_version_0_bad_padding_is_refused() -> None:
    ring = counter_nonces()
    nonce = bytes(12)
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    body = AESGCM(K32).encrypt(nonce, b"x" * 15 + b"\x11", None)  # pad byte 17 > block size
    with pytest.raises(WireError, match="PKCS7"):
        ring.decrypt(b"\x00" + nonce + body)


def test_nonces_come_from_the_given_source() -> None:
    ring = counter_nonces()
    first, second = ring.encrypt(b"a"), ring.encrypt(b"a")
    assert first[1:13] == bytes(12)
    assert second[1:13] == (1).to_bytes(12, "big")
    assert first != second


def test_serf_keygen_format() -> None:
    text = "d6sJathyBWRu2UrgnfgouGX4pJcBI0a66MtaN/WgDck="
    key = parse_key(text)
    assert len(key) == 32
    assert format_key(key) == text
    assert Keyring.from_base64(text, base64.b64encode(K16).decode()).keys == (key, K16)
    with pytest.raises(ValueError, match="not valid base64"):
        parse_key("not base64!")
    with pytest.raises(ValueError, match="not 5"):
        parse_key(base64.b64encode(b"short").decode())
