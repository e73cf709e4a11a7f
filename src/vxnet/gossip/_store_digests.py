"""How the store hashes its records, for merge tie-breaks and anti-entropy digests.

Each record has a 64-bit hash of the whole record (key, writer, hlc and value bytes) and a 16-bit
hash of its key, its *leaf*. The store keeps the XOR of the record hashes per leaf (65,536 leaves);
an exchange compares ``2**b`` buckets of leaves, ``b`` chosen from the store's size.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from vxnet.gossip._store_records import Record

__all__ = [
    "LEAF_BITS",
    "MAX_BUCKET_BITS",
    "MIN_BUCKET_BITS",
    "Entry",
    "bucket_bits",
    "key_leaf",
    "make_entry",
]

LEAF_BITS: Final = 16
MAX_BUCKET_BITS: Final = 16
MIN_BUCKET_BITS: Final = 4


@dataclass(slots=True)
class Entry:
    """A record as the store keeps it: with its value's bytes, its hash and its leaf."""

    record: Record
    blob: bytes | None  # the value's msgpack encoding, as it travels; None for a tombstone
    digest: int  # 64-bit hash of the whole record
    leaf: int  # 16-bit hash of the key
    seq: int = 0  # identifies the current entry of a key in the timer heap

    @property
    def rank(self) -> tuple[int, str, int]:
        """What merge compares: ``(hlc, writer, record hash)``; the higher rank wins."""
        version = self.record.version
        return (version.hlc, version.writer, self.digest)


def key_leaf(key: str) -> int:
    """The 16-bit hash of ``key``: which leaf of the digest tree the record belongs to."""
    digest = hashlib.blake2b(key.encode(), digest_size=2, person=b"vxnet-store-key").digest()
    return int.from_bytes(digest, "big")


def make_entry(record: Record, blob: bytes | None) -> Entry:
    """``record`` with its value's wire bytes ``blob``, hashed."""
    # Keys are printable ASCII and writers printable: neither holds a NUL, hlc is fixed-width.
    version = record.version
    hasher = hashlib.blake2b(digest_size=8, person=b"vxnet-store-rec")
    hasher.update(record.key.encode() + b"\0" + version.writer.encode() + b"\0")
    hasher.update(version.hlc.to_bytes(8, "big"))
    hasher.update(b"\0" if blob is None else b"\1" + blob)
    digest = int.from_bytes(hasher.digest(), "big")
    return Entry(record, blob, digest, key_leaf(record.key))


def bucket_bits(n: int) -> int:
    """``clamp(ceil(log2(n / 4)), 4, 16)``: about four records per bucket."""
    if n <= 4 << MIN_BUCKET_BITS:
        return MIN_BUCKET_BITS
    return min(MAX_BUCKET_BITS, max(MIN_BUCKET_BITS, math.ceil(math.log2(n / 4))))
