"""Cluster membership and the replicated store.

This subpackage owns how nodes find each other and agree on who is alive: SWIM membership with the
Lifeguard refinements, speaking the HashiCorp memberlist / Serf 0.9 wire protocol so that a real
``serf agent`` can join a vxnet cluster, and a Lashup-like replicated key/value store (a CRDT
carried on that gossip) in which agents publish their overlay records and task records. Its cores
are sans-IO (bytes, events and the time in; what to send and the next deadline out; the RNG a
parameter); thin trio drivers move their datagrams and streams.

Layout, one concern per module, in three layers as memberlist, Serf and the store are:

memberlist (the membership core):
    ``_messages`` the memberlist messages; ``_wire`` their codec (compound, CRC, LZW, encryption
    framing); ``_keyring`` AES-GCM keys; ``_lzw`` Go's LZW; ``_queue`` the transmit-limited
    broadcast queue; ``_lifeguard`` awareness, suspicion and timeout scaling maths;
    ``_membership_types`` members, events, stream requests, the delegate protocol, counters;
    ``_membership`` the SWIM core; ``_config`` its timing presets.
Serf (what a Serf agent expects of a member):
    ``_serf_messages`` Serf's messages; ``_serf_codec`` their codec and the node-meta tags;
    ``_lamport`` Lamport clocks; ``_serf_state`` member intents and push-pull state.
The store:
    ``_store_records`` records, versions, changes and the key and value rules; ``_hlc`` the hybrid
    logical clock; ``_store_digests`` record hashes and anti-entropy buckets; ``_store_messages``
    delta and frame layout; ``_store_codec`` their encoding and validation; ``_store`` the store.
Gluing and running:
    ``_layers`` the core's delegate (Serf layer and store layer on one gossip); ``_clock`` the wall
    clock seam; ``_driver`` the trio driver (UDP and TCP on one port); ``_service`` a node as a
    process runs it (:class:`GossipService`). ``_errors``: the peer's-fault exceptions.
"""

from vxnet.gossip._clock import SystemWallClock, WallClock
from vxnet.gossip._config import GossipTiming
from vxnet.gossip._errors import StoreError, WireError
from vxnet.gossip._keyring import Keyring
from vxnet.gossip._membership import Membership
from vxnet.gossip._membership_types import Delegate, Member, MemberEvent, StreamRequest
from vxnet.gossip._messages import NodeStatus
from vxnet.gossip._serf_codec import decode_tags, encode_tags
from vxnet.gossip._serf_state import MemberStatus
from vxnet.gossip._service import GossipService, Subscription, member_json, record_json
from vxnet.gossip._store import Store
from vxnet.gossip._store_records import Change, Record, Version

__all__ = [
    "Change",
    "Delegate",
    "GossipService",
    "GossipTiming",
    "Keyring",
    "Member",
    "MemberEvent",
    "MemberStatus",
    "Membership",
    "NodeStatus",
    "Record",
    "Store",
    "StoreError",
    "StreamRequest",
    "Subscription",
    "SystemWallClock",
    "Version",
    "WallClock",
    "WireError",
    "decode_tags",
    "encode_tags",
    "member_json",
    "record_json",
]
