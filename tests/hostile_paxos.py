"""Well-framed but hostile Paxos messages, as a peer holding a master's certificate could send
them (shared by the simulation test and the test against real masters)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vxnet.replog import (
    Accept,
    Accepted,
    Fetch,
    Heartbeat,
    Learned,
    Prepare,
    Promise,
    RecoverRequest,
    RecoverResponse,
    Reject,
)
from vxnet.replog._core import MAX_BALLOT
from vxnet.replog._storage import Entry, ReplicaStatus, Snapshot

if TYPE_CHECKING:
    import random

    from vxnet.replog._core import Message

EDGES = [0, 1, 255, 256, 2**31, 2**40, 2**47]  # in range, with room for elections above
OUT = [MAX_BALLOT + 1, 2**62, 2**63 - 1, 2**63, 2**64 - 1]  # above every bound

# Kinds whose every in-range value is safe from any sender: Paxos lets anyone propose a ballot
# (Prepare), refuse one (Reject) or read (Fetch, RecoverRequest). The others carry claims (this
# was accepted, that is chosen, the commit is there) that a peer holding a master's certificate
# can forge: no protocol without Byzantine quorums survives those, so for them only "no replica
# stops" is asked.
SAFE_KINDS = (0, 5, 6, 8)


def hostile(rng: random.Random, ballot: int, commit: int, kinds: tuple[int, ...]) -> Message:
    """One message of a random kind among ``kinds``, its numbers near the cluster's, at the
    edges, or (one in five messages) above every bound."""
    out = rng.random() < 0.2

    def num(near: int) -> int:
        if out and rng.random() < 0.5:
            return rng.choice(OUT)
        if rng.random() < 0.5:
            return max(0, near + rng.randint(-3, 3))
        return rng.choice(EDGES) if rng.random() < 0.6 else rng.randint(0, 5000)

    count = rng.randint(0, 3)
    entries = tuple((num(commit), rng.randbytes(rng.randint(0, 6))) for _ in range(count))
    kind = rng.choice(range(10) if out else kinds)
    if kind == 0:
        return Prepare(num(ballot), num(commit))
    if kind == 1:
        accepted = tuple(
            Entry(num(commit), num(ballot), rng.randbytes(3), rng.random() < 0.5)
            for _ in range(rng.randint(0, 3))
        )
        return Promise(num(ballot), accepted, num(commit))
    if kind == 2:
        return Accept(num(ballot), entries, num(commit))
    if kind == 3:
        return Accepted(num(ballot), tuple(num(commit) for _ in range(rng.randint(0, 3))))
    if kind == 4:
        return Heartbeat(num(ballot), num(commit), num(commit))
    if kind == 5:
        return Reject(num(ballot), num(ballot))
    if kind == 6:
        return Fetch(num(commit), num(commit))
    if kind == 7:
        snapshot = None if rng.random() < 0.7 else Snapshot(num(commit), rng.randbytes(5))
        return Learned(entries, snapshot, num(commit))
    if kind == 8:
        return RecoverRequest()
    return RecoverResponse(rng.choice(list(ReplicaStatus)), num(ballot), num(commit), num(commit))
