"""AES-GCM keys as memberlist uses them (``serf agent -encrypt``, ``serf keys``).

An encrypted payload is ``version (1 byte) | nonce (12 bytes) | ciphertext | tag (16 bytes)``.
Version 1 encrypts the plaintext as it is; version 0 (protocol 1 peers) first pads it with PKCS7 to
a multiple of 16 bytes. Packets have no additional authenticated data; streams authenticate their
5-byte ``encrypt`` header. A receiver tries every installed key; a sender uses the primary one.
"""

from __future__ import annotations

import base64
import binascii
import os
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ._errors import WireError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

__all__ = ["KEY_SIZES", "Keyring", "encrypted_length", "parse_key"]

KEY_SIZES = (16, 24, 32)  # AES-128, AES-192, AES-256
_NONCE_SIZE = 12
_TAG_SIZE = 16
_BLOCK_SIZE = 16


def parse_key(text: str) -> bytes:
    """Decode a key as ``serf keygen`` prints it (standard base64).

    Raises:
        ValueError: If ``text`` is not base64 or does not decode to 16, 24 or 32 bytes.
    """
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except binascii.Error as e:
        raise ValueError(f"encryption key {text!r} is not valid base64: {e}") from e
    _check_key(key)
    return key


def format_key(key: bytes) -> str:
    """Encode a key the way ``serf keygen`` and ``serf keys -list`` print it."""
    return base64.b64encode(key).decode("ascii")


def encrypted_length(plain_len: int, version: int = 1) -> int:
    """Return the size of an encrypted payload for ``plain_len`` bytes of plaintext."""
    if version == 0:
        plain_len += _BLOCK_SIZE - plain_len % _BLOCK_SIZE
    return 1 + _NONCE_SIZE + plain_len + _TAG_SIZE


def _check_key(key: bytes) -> None:
    if len(key) not in KEY_SIZES:
        raise ValueError(f"encryption key must be 16, 24 or 32 bytes long, not {len(key)}")


class Keyring:
    """The installed keys, primary first; the primary one encrypts, all of them decrypt.

    Args:
        keys: The keys, each 16, 24 or 32 bytes; the first one is the primary key.
        random_bytes: Where nonces come from (``os.urandom`` unless a test passes its own).

    Raises:
        ValueError: If no key is given or a key has the wrong length.
    """

    __slots__ = ("_ciphers", "_keys", "_random_bytes")

    def __init__(
        self, keys: Iterable[bytes], *, random_bytes: Callable[[int], bytes] = os.urandom
    ) -> None:
        self._keys: list[bytes] = []
        self._ciphers: list[AESGCM] = []
        self._random_bytes = random_bytes
        for key in keys:
            self.add_key(key)
        if not self._keys:
            raise ValueError("a keyring needs at least one key")

    @classmethod
    def from_base64(cls, *keys: str, random_bytes: Callable[[int], bytes] = os.urandom) -> Keyring:
        """Build a keyring from keys as serf prints them, the first one primary."""
        return cls([parse_key(k) for k in keys], random_bytes=random_bytes)

    @property
    def keys(self) -> tuple[bytes, ...]:
        """The installed keys, the primary one first."""
        return tuple(self._keys)

    @property
    def primary_key(self) -> bytes:
        """The key used to encrypt."""
        return self._keys[0]

    def add_key(self, key: bytes) -> None:
        """Install ``key`` as a secondary key (the first key ever added becomes primary).

        Raises:
            ValueError: If the key is not 16, 24 or 32 bytes long.
        """
        key = bytes(key)
        _check_key(key)
        if key not in self._keys:
            self._keys.append(key)
            self._ciphers.append(AESGCM(key))

    def use_key(self, key: bytes) -> None:
        """Make the installed ``key`` the primary one.

        Raises:
            ValueError: If the key is not installed.
        """
        try:
            i = self._keys.index(key)
        except ValueError:
            raise ValueError("the requested key is not in the keyring") from None
        self._keys.insert(0, self._keys.pop(i))
        self._ciphers.insert(0, self._ciphers.pop(i))

    def remove_key(self, key: bytes) -> None:
        """Uninstall a secondary ``key`` (removing an absent key does nothing).

        Raises:
            ValueError: If ``key`` is the primary key.
        """
        if key == self._keys[0]:
            raise ValueError("removing the primary key is not allowed")
        if key in self._keys:
            i = self._keys.index(key)
            del self._keys[i]
            del self._ciphers[i]

    def encrypt(self, plaintext: bytes, aad: bytes = b"", *, version: int = 1) -> bytes:
        """Encrypt with the primary key: version byte, random nonce, ciphertext and tag.

        Args:
            plaintext: What to encrypt.
            aad: Additional authenticated data (the stream header; nothing for packets).
            version: 1 (what memberlist protocol 2+ writes) or 0 (PKCS7 padding, protocol 1).
        """
        if version not in (0, 1):
            raise ValueError(f"encryption version must be 0 or 1, not {version}")
        if version == 0:
            pad = _BLOCK_SIZE - len(plaintext) % _BLOCK_SIZE
            plaintext = bytes(plaintext) + bytes((pad,)) * pad
        nonce = self._random_bytes(_NONCE_SIZE)
        if len(nonce) != _NONCE_SIZE:
            raise ValueError(f"random source gave {len(nonce)} bytes for a 12-byte nonce")
        return bytes((version,)) + nonce + self._ciphers[0].encrypt(nonce, plaintext, aad or None)

    def decrypt(self, data: bytes, aad: bytes = b"") -> bytes:
        """Decrypt a payload with whichever installed key opens it.

        Raises:
            WireError: If the payload is too short, has an unknown version, no key opens it, or
                its version-0 padding is malformed.
        """
        if not data:
            raise WireError("encrypted payload is empty")
        version = data[0]
        if version > 1:
            raise WireError(f"unsupported encryption version {version}")
        if len(data) < encrypted_length(0, version):
            raise WireError(
                f"encrypted payload of {len(data)} bytes is shorter than the "
                f"{encrypted_length(0, version)} bytes of its framing"
            )
        nonce = bytes(data[1 : 1 + _NONCE_SIZE])
        body = bytes(data[1 + _NONCE_SIZE :])
        for cipher in self._ciphers:
            try:
                plain = cipher.decrypt(nonce, body, aad or None)
            except InvalidTag:
                continue
            if version == 0:
                pad = plain[-1] if plain else 0
                if not 1 <= pad <= min(_BLOCK_SIZE, len(plain)):
                    raise WireError(f"encrypted payload has invalid PKCS7 padding {pad}")
                plain = plain[:-pad]
            return plain
        raise WireError(f"none of the {len(self._keys)} installed keys could decrypt the payload")
