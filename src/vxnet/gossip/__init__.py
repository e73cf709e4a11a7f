"""Cluster membership and the replicated store.

This subpackage owns how nodes find each other and agree on who is alive: SWIM membership with the
Lifeguard refinements, speaking the HashiCorp memberlist / Serf 0.9 wire protocol so that a real
``serf agent`` can join a vxnet cluster, and a Lashup-like replicated key/value store (a CRDT
carried on that gossip) in which agents publish their overlay records and task records. Its cores
are sans-IO; thin trio drivers move their datagrams and streams.
"""

from vxnet.gossip._config import GossipTiming
from vxnet.gossip._errors import WireError
from vxnet.gossip._keyring import Keyring
from vxnet.gossip._membership import Membership
from vxnet.gossip._membership_types import Delegate, Member, MemberEvent, StreamRequest
from vxnet.gossip._messages import NodeStatus
from vxnet.gossip._serf_codec import decode_tags, encode_tags
from vxnet.gossip._serf_state import MemberStatus
from vxnet.gossip._service import GossipService, member_json

__all__ = [
    "Delegate",
    "GossipService",
    "GossipTiming",
    "Keyring",
    "Member",
    "MemberEvent",
    "MemberStatus",
    "Membership",
    "NodeStatus",
    "StreamRequest",
    "WireError",
    "decode_tags",
    "encode_tags",
    "member_json",
]
