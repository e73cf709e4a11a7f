"""The store's messages: what travels in a gossip delta and in an anti-entropy frame.

Gossip deltas: ``STORE_MAGIC`` then msgpack ``[1, [key, value, hlc, writer]]`` where value is the
msgpack encoding of the value map as a bin (it travels and is hashed as the writer encoded it) or
nil for a tombstone. A receiver returns the deltas that changed its store, for infection-style
re-broadcast; a delta that changed nothing is not spread further.

Anti-entropy, two request/response rounds; each message is one frame, ``STORE_MAGIC``, a u32
big-endian body length and a msgpack array body, at most ``FRAME_MAX`` bytes in all:
  1. initiator -> ``[1, b, digests]``: the XOR of a 64-bit record hash over each of ``2**b``
     buckets (by key hash; kept incrementally in 65,536 leaves), ``b`` chosen from the
     initiator's size; responder -> ``[2, b, buckets, summaries]``: the mismatching buckets and
     ``[key, hlc, writer, hash]`` of its records in them (whole buckets only, up to the cap);
  2. initiator -> ``[3, records, wanted]``: its records the responder lacks or holds older, and
     the keys it wants; responder merges, then -> ``[4, records]``: the wanted records.
  The initiator keeps no state between rounds (``b`` comes back in the round-1 reply). Anything
  that did not fit under the cap is left for the next exchange.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "DELTA",
    "DELTA_SLACK",
    "FRAME_MAX",
    "STORE_MAGIC",
    "SYNC_DIGESTS",
    "SYNC_PUSH",
    "SYNC_RECORDS",
    "SYNC_SUMMARIES",
]

STORE_MAGIC: Final = 0x56  # the first byte of every store message
FRAME_MAX: Final = 16 * 1024 * 1024  # a whole frame, header included
DELTA: Final = 1  # the kind of a gossip delta
SYNC_DIGESTS: Final = 1  # round 1, initiator -> responder
SYNC_SUMMARIES: Final = 2  # round 1, responder -> initiator
SYNC_PUSH: Final = 3  # round 2, initiator -> responder
SYNC_RECORDS: Final = 4  # round 2, responder -> initiator
DELTA_SLACK: Final = 2048  # a delta's bytes beyond its value: key, writer, hlc, framing
