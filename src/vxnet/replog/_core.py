"""Multi-Paxos for the masters' replicated log: the sans-IO replica (acceptor, learner, proposer).

``n = 2 * quorum - 1`` replicas, numbered ``0 .. n-1``, hold the same log. Any replica may become
the coordinator (proposer); clients append through it and are answered once the value is chosen.
The replica is fed messages, client requests and the time, and says what to write, what to send
and when it next needs waking. It does no I/O: see "Writes" below for how its driver performs the
disk writes and when it may release the messages that depend on them.

Rules (Mesos's replicated log, ``src/log/``, is the model):

Ballots
  A ballot is ``round * 256 + replica``: unique per replica, totally ordered. A replica keeps one
  promised ballot for the whole log (the implicit promise of Multi-Paxos): it never accepts, nor
  promises, below it. Fencing is by ballot alone: a deposed coordinator's accepts are refused.

Election (phase 1)
  A replica that hears no coordinator for an election timeout (random in ``[T, 2T)``) prepares a
  ballot above every ballot it has seen, from its commit index (all positions below are chosen and
  known to it). A voting replica whose lease for another coordinator has expired promises (durably)
  and returns what it accepted from that position on. With promises from a quorum the candidate is
  coordinator: for every position up to the highest end reported it re-proposes the value accepted
  under the highest ballot, or a no-op where there was none (filling holes).

Appends (phase 2) and group commit
  The coordinator assigns the next positions and sends one accept for the batch; appends that
  arrive while a batch is in flight wait and go out together in the next batch. A position is
  chosen when a quorum accepted it under the coordinator's ballot; the client is answered then.
  Accepts carry the coordinator's commit index; a follower marks its entries below it chosen only
  where it accepted them under that same ballot (the others it learns by fetching).

Lease
  Followers that accepted from the coordinator refuse to promise anyone else until ``lease`` has
  passed since they last heard from it; the coordinator heartbeats every ``lease / 4``. This avoids
  duelling proposers; safety never depends on it.

Learning and catch-up
  Every replica tracks its commit index and asks a peer for the chosen entries it lacks (or the
  snapshot, when the peer has truncated them); chosen entries are applied in order.

Recovery (EMPTY, STARTING, RECOVERING, VOTING)
  A replica with an empty or corrupt disk does not vote: it could have forgotten a promise or an
  acceptance and so un-choose a value. It asks every replica for its status. A new cluster starts
  in two phases (after Mesos's auto-initialisation): an EMPTY replica that hears every replica
  answer that it never took part (EMPTY, STARTING, or VOTING without a promise or an entry yet)
  becomes STARTING, and a STARTING replica that sees a quorum STARTING or VOTING becomes VOTING;
  neither ever promised or accepted anything, so neither can have forgotten anything. (Mesos
  asks a quorum in the first phase; then two wiped disks that answer each other first can start
  a new log beside the replica that holds the old one, which the simulation found. A replica
  wiped after it promised or accepted is seen through the others: any promise that counted went
  to a quorum, so another replica reports it. So a new log needs all its replicas up once.)
  Otherwise (an EMPTY replica among voting ones, or a corrupt disk), once a quorum of voting
  replicas other than itself answered, it adopts the highest ballot they promised and catches up
  until it has learned every position below the highest end they reported, then votes again
  (durably VOTING).

Stepping down
  A coordinator that has not heard a quorum for a lease period steps down and fails its pending
  appends (they may or may not be chosen: clients retry idempotently); so does one fenced by a
  higher ballot.

Snapshots
  The state machine above may :meth:`Replica.compact` the log below a position with a snapshot of
  its state; a replica that needs truncated positions installs the snapshot instead.

Writes (the core's effects on its disk)
  The driver loads the disk (:meth:`~._storage.LogStorage.load`) and hands the
  :class:`~._storage.Durable` state to the constructor, so that loading, like every write, runs
  where the driver wants (a worker thread, the simulator's disk). The core updates its memory at
  once and queues each write (:class:`~._storage.SetMeta`, :class:`~._storage.PutEntries`,
  :class:`~._storage.InstallSnapshot`, numbered by ``seq`` from 1) for
  :meth:`Replica.writes_to_perform`. The driver performs them in that order, one at a time (or
  several at once, still in order: :func:`~._storage.perform_writes`), and reports each durable
  one with :meth:`Replica.write_done`. Every message is held until the writes it depends on are
  done: by default every write queued before it (a promise, an acceptance, a status), and for a
  coordinator's accept only the writes before its own copy of the entries (it proposes under a
  durable promise; its own acceptance is counted only once durable, below).
  :meth:`Replica.messages_to_send` returns only the messages released so. A coordinator counts
  its own promise and its own acceptance only after :meth:`Replica.write_done` reported them, so
  an append is acknowledged, and a position marked chosen, only on a quorum of durable
  acceptances: events (:meth:`Replica.events`) never depend on a write still under way and are
  released at once; so are the commit index and ``leading``, which the driver may read.
  A driver that crashes loses the queued writes with the held messages: nothing that depended on
  them left.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vxnet.replog._storage import (
    Entry,
    InstallSnapshot,
    PutEntries,
    ReplicaStatus,
    SetMeta,
    Snapshot,
)

if TYPE_CHECKING:
    import random
    from collections.abc import Callable, Sequence

    from vxnet.replog._storage import Durable, Write

__all__ = [
    "Accept",
    "Accepted",
    "AppendDone",
    "AppendFailed",
    "Applied",
    "Fetch",
    "Heartbeat",
    "Learned",
    "LogTiming",
    "Message",
    "Prepare",
    "Promise",
    "RecoverRequest",
    "RecoverResponse",
    "Reject",
    "Replica",
    "Role",
    "SnapshotInstalled",
    "ballot_round",
    "make_ballot",
    "message_problem",
]

MAX_REPLICAS = 256
MAX_BATCH = 1024  # appends per accept round
MAX_FETCH = 512  # entries per catch-up answer
MAX_BALLOT = 2**48  # a ballot above is refused: 2**40 rounds, far beyond any count of elections
MAX_POSITION = 2**48  # a position (or commit index, log end) above is refused
MAX_AHEAD = 8 * MAX_BATCH  # how far past its log end a replica takes accepts and promised ends
# (a new coordinator fills every position up to the highest promised end: bounded, so is that)


def make_ballot(round_: int, replica: int) -> int:
    return round_ * MAX_REPLICAS + replica


def message_problem(msg: Message) -> str | None:
    """Why ``msg`` is out of range (a ballot above ``MAX_BALLOT``, a position, commit index or
    log end above ``MAX_POSITION``), or ``None``. The wire refuses such a frame; the core drops
    such a message, so no value from a peer reaches an assertion or the disk's bounds."""
    ballots: list[int] = []
    positions: list[int] = []
    if isinstance(msg, Prepare):
        ballots, positions = [msg.ballot], [msg.from_pos]
    elif isinstance(msg, Promise):
        ballots = [msg.ballot, *(e.ballot for e in msg.accepted)]
        positions = [msg.end, *(e.position for e in msg.accepted)]
    elif isinstance(msg, Accept):
        ballots, positions = [msg.ballot], [msg.commit, *(p for p, _ in msg.entries)]
    elif isinstance(msg, Accepted):
        ballots, positions = [msg.ballot], list(msg.positions)
    elif isinstance(msg, Heartbeat):
        ballots, positions = [msg.ballot], [msg.commit, msg.end]
    elif isinstance(msg, Reject):
        ballots = [msg.ballot, msg.promised]
    elif isinstance(msg, Fetch):
        positions = [msg.from_pos, msg.to_pos]
    elif isinstance(msg, Learned):
        positions = [msg.commit, *(p for p, _ in msg.entries)]
        if msg.snapshot is not None:
            positions.append(msg.snapshot.position)
    elif isinstance(msg, RecoverResponse):
        ballots, positions = [msg.promised], [msg.end, msg.commit]
    if any(not 0 <= b <= MAX_BALLOT for b in ballots):
        return f"a ballot is not in 0..{MAX_BALLOT}"
    if any(not 0 <= p <= MAX_POSITION for p in positions):
        return f"a position is not in 0..{MAX_POSITION}"
    return None


def ballot_round(ballot: int) -> int:
    return ballot // MAX_REPLICAS


def ballot_owner(ballot: int) -> int:
    return ballot % MAX_REPLICAS


# --- messages -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Prepare:
    ballot: int
    from_pos: int


@dataclass(frozen=True, slots=True)
class Promise:
    ballot: int
    accepted: tuple[Entry, ...]  # entries at or above the prepare's from_pos
    end: int  # one past the highest position this replica holds


@dataclass(frozen=True, slots=True)
class Accept:
    ballot: int
    entries: tuple[tuple[int, bytes], ...]  # (position, value)
    commit: int  # the coordinator's commit index


@dataclass(frozen=True, slots=True)
class Accepted:
    ballot: int
    positions: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Heartbeat:
    ballot: int
    commit: int
    end: int


@dataclass(frozen=True, slots=True)
class Reject:
    """A refused prepare or accept; ``promised`` is the refuser's promise (fencing news)."""

    ballot: int
    promised: int


@dataclass(frozen=True, slots=True)
class Fetch:
    from_pos: int
    to_pos: int


@dataclass(frozen=True, slots=True)
class Learned:
    entries: tuple[tuple[int, bytes], ...]  # chosen (position, value), ascending
    snapshot: Snapshot | None = None
    commit: int = 0


@dataclass(frozen=True, slots=True)
class RecoverRequest:
    pass


@dataclass(frozen=True, slots=True)
class RecoverResponse:
    status: ReplicaStatus
    promised: int
    end: int
    commit: int


Message = (
    Prepare
    | Promise
    | Accept
    | Accepted
    | Heartbeat
    | Reject
    | Fetch
    | Learned
    | RecoverRequest
    | RecoverResponse
)


# --- events for the layer above ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Applied:
    """Position ``position`` is chosen; apply ``value`` (``b""`` is a no-op). In log order."""

    position: int
    value: bytes


@dataclass(frozen=True, slots=True)
class SnapshotInstalled:
    """Replace the state machine's state with ``snapshot`` (covers positions below it)."""

    snapshot: Snapshot


@dataclass(frozen=True, slots=True)
class AppendDone:
    request: int
    position: int


@dataclass(frozen=True, slots=True)
class AppendFailed:
    """The append may or may not be chosen (retry idempotently); ``leader`` is a hint."""

    request: int
    reason: str
    leader: int | None


Event = Applied | SnapshotInstalled | AppendDone | AppendFailed


class Role(enum.Enum):
    FOLLOWER = "follower"
    CANDIDATE = "candidate"
    COORDINATOR = "coordinator"


@dataclass(frozen=True, slots=True)
class LogTiming:
    """Timeouts of the replicated log (seconds)."""

    election: float = 0.3  # T: elect after [T, 2T) without a coordinator
    lease: float = 1.0  # followers refuse other candidates this long after hearing the coordinator
    retry: float = 0.1  # resend unanswered accepts, prepares, fetches after [T, 2T)
    heartbeat: float = 0.25
    commit_notify: float = 0.01  # tell followers of a new commit index this soon at the latest

    @classmethod
    def local(cls) -> LogTiming:
        return cls()


@dataclass(slots=True)
class _Pending:
    request: int
    value: bytes


@dataclass(slots=True)
class _Round:
    """An accept round in flight: positions and who accepted them."""

    ballot: int
    entries: dict[int, bytes]
    acks: dict[int, set[int]]
    requests: dict[int, int]  # position -> client request
    resend_at: float
    own_seq: int  # the write of the coordinator's own copy: its acceptance counts once done
    own_counted: bool = False


@dataclass(slots=True)
class _Election:
    ballot: int
    from_pos: int
    own: Promise | None = None  # the candidate's own promise, counted once durable
    own_seq: int = 0  # the write of the candidate's promise
    promises: dict[int, Promise] = field(default_factory=dict)
    resend_at: float = 0.0


class Replica:
    """One replica of the log; see the module docstring for the rules.

    Args:
        replica_id: This replica's number, ``0 .. n-1``.
        n: How many replicas there are (``2 * quorum - 1``).
        durable: What the replica's disk holds (:meth:`~._storage.LogStorage.load`, performed
            by the driver: the core does no I/O, and the driver decides where loading runs).
        rng: The only randomness (election and retry jitter).
        now: The current time.
        timing: Timeouts.
    """

    def __init__(
        self,
        replica_id: int,
        n: int,
        durable: Durable,
        *,
        rng: random.Random,
        now: float,
        timing: LogTiming | None = None,
        check_snapshot: Callable[[bytes], str | None] | None = None,
    ) -> None:
        if not 0 <= replica_id < n <= MAX_REPLICAS or n % 2 == 0:
            raise ValueError(f"replica {replica_id} of {n}: need an odd n up to {MAX_REPLICAS}")
        self.id = replica_id
        self.n = n
        self.quorum = n // 2 + 1
        self.rng = rng
        self.timing = timing or LogTiming()
        # The state machine's verdict on a peer's snapshot (None: it can start from it), asked
        # before the snapshot is stored: a replica never keeps what its master cannot load.
        self.check_snapshot = check_snapshot
        self._writes: list[Write] = []  # queued for the driver, in order
        self._issued = 0  # seq of the last write queued
        self._durable = 0  # every write up to this seq is done (durable)
        self._held: list[tuple[int, int, Message]] = []  # (after write seq, replica, message)
        self.status = durable.status
        self.promised = durable.promised
        self.snapshot = durable.snapshot
        self.entries: dict[int, Entry] = dict(durable.entries)
        self._top = max(self.entries, default=-1) + 1
        base = self.snapshot.position if self.snapshot else 0
        self.commit = base  # every position below is chosen and known here
        self.applied = base  # every position below was handed to the state machine
        self._advance_commit()
        self.role = Role.FOLLOWER
        self.leader: int | None = None
        self.max_seen = self.promised
        self.lease_until = -math.inf
        self.refused = 0  # messages dropped: out of range, unasked-for, or a snapshot refused
        self._events: list[Event] = []
        self._pending: list[_Pending] = []
        self._round: _Round | None = None
        self._election: _Election | None = None
        self._next_pos = self._end()
        self._peer_acked: dict[int, float] = {}
        self._election_at = now + self._jitter(self.timing.election)
        self._heartbeat_at = math.inf
        self._fetch_at = math.inf
        self._fetching_to = 0
        self._fetch_tries = 0  # fetches since the last answer
        self._asked: dict[int, int] = {}  # peers asked to fetch since caught up: up to where
        self._recover: dict[int, RecoverResponse] | None = None
        self._recover_goal: int | None = None
        self._recover_at = math.inf
        self._elected_at = math.inf
        self._ready_pos = math.inf  # a new coordinator has applied every position below this
        self._unmarked: dict[int, Entry] = {}  # chosen marks held in memory, not yet written
        if durable.corrupt and self.status is ReplicaStatus.VOTING:
            self.status = ReplicaStatus.RECOVERING
            self._set_meta(self.status, self.promised)
        if self.status is not ReplicaStatus.VOTING:
            self._begin_recovery(now)
        if self.snapshot is not None:
            self._events.append(SnapshotInstalled(self.snapshot))
        self._apply_ready()

    # --- outputs -------------------------------------------------------------------------------

    def messages_to_send(self) -> list[tuple[int, Message]]:
        """(replica, message) pairs to send now: those whose writes are done; emptied by the call.

        Messages still waiting for a write stay held until :meth:`write_done` reports it.
        """
        done = self._durable
        held = self._held
        if all(after <= done for after, _, _ in held):
            self._held = []
            return [(dst, msg) for _, dst, msg in held]
        self._held = [h for h in held if h[0] > done]
        return [(dst, msg) for after, dst, msg in held if after <= done]

    def writes_to_perform(self) -> list[Write]:
        """The writes queued since the last call, in the order they must be performed; emptied.

        Perform them in order (after every write handed out earlier) and report each done with
        :meth:`write_done`; a write that fails must stop the replica (it cannot persist).
        """
        out, self._writes = self._writes, []
        return out

    def write_done(self, seq: int, now: float) -> None:
        """Every write up to ``seq`` is durable: release what waited for them."""
        if seq > self._issued:
            raise ValueError(f"write {seq} was never asked for (last is {self._issued})")
        if seq <= self._durable:
            return
        self._durable = seq
        election = self._election
        if election is not None and election.own is not None and election.own_seq <= seq:
            election.promises[self.id] = election.own
            election.own = None
            self._maybe_elected(now)
        rnd = self._round
        if rnd is not None and not rnd.own_counted and rnd.own_seq <= seq:
            rnd.own_counted = True
            for acks in rnd.acks.values():
                acks.add(self.id)
            self._check_round(now)

    def writes_queued(self) -> bool:
        """Whether :meth:`writes_to_perform` has writes to hand out."""
        return bool(self._writes)

    def writes_pending(self) -> int:
        """How many writes were asked for and are not reported done yet."""
        return self._issued - self._durable

    def events(self) -> list[Event]:
        """What happened for the layer above (applied entries, append results); emptied."""
        out, self._events = self._events, []
        return out

    def next_deadline(self) -> float:
        """The latest time :meth:`tick` must be called at (only timers that can act count)."""
        times = [self._heartbeat_at, self._fetch_at, self._recover_at]
        if self.status is ReplicaStatus.VOTING and self.role is not Role.COORDINATOR:
            times.append(max(self._election_at, self.lease_until))
        if self._round is not None:
            times.append(self._round.resend_at)
        if self._election is not None:
            times.append(self._election.resend_at)
        return min(times)

    # --- client requests --------------------------------------------------------------------------

    def append(self, request: int, value: bytes, now: float) -> None:
        """Append ``value``; an :class:`AppendDone` or :class:`AppendFailed` event answers."""
        if self.role is not Role.COORDINATOR:
            self._events.append(AppendFailed(request, "not the coordinator", self.leader))
            return
        self._pending.append(_Pending(request, value))
        if self._round is None:
            self._start_round(now)

    def compact(self, position: int, data: bytes) -> None:
        """Truncate the log below ``position``; ``data`` is the state after applying it all."""
        if position > self.applied:
            raise ValueError(f"cannot compact to {position}: only {self.applied} applied")
        if self.snapshot is not None and position <= self.snapshot.position:
            return
        snapshot = Snapshot(position, data)
        self._issued += 1
        self._writes.append(InstallSnapshot(self._issued, snapshot))
        self.snapshot = snapshot
        for pos in [p for p in self.entries if p < position]:
            del self.entries[pos]
            self._unmarked.pop(pos, None)

    # --- time ------------------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        if self._recover is not None and now >= self._recover_at:
            self._recover_at = now + self._jitter(self.timing.retry * 2)
            self._broadcast(RecoverRequest())
            self._evaluate_recovery(now)
        if (
            self.status is ReplicaStatus.VOTING
            and self.role is not Role.COORDINATOR
            and now >= self._election_at
            and now >= self.lease_until
        ):
            self._start_election(now)
        if self._election is not None and now >= self._election.resend_at:
            self._election.resend_at = now + self._jitter(self.timing.retry)
            prepare = Prepare(self._election.ballot, self._election.from_pos)
            for peer in self._peers():
                if peer not in self._election.promises:
                    self._send(peer, prepare)
        if self._round is not None and now >= self._round.resend_at:
            self._resend_round(now)
        if self.role is Role.COORDINATOR and now >= self._elected_at + self.timing.lease:
            heard = sum(1 for t in self._peer_acked.values() if t >= now - self.timing.lease)
            if heard + 1 < self.quorum:
                self._step_down("lost contact with a quorum")
                self._election_at = now + self._jitter(self.timing.election)
        if self.role is Role.COORDINATOR and now >= self._heartbeat_at:
            self._heartbeat_at = now + self.timing.heartbeat
            self._broadcast(Heartbeat(self.promised, self.commit, self._next_pos))
        if now >= self._fetch_at:
            self._fetch_at = math.inf
            self._request_catch_up(now)

    # --- messages --------------------------------------------------------------------------------

    def receive(self, src: int, msg: Message, now: float) -> None:
        """A message from replica ``src``; one out of range (:func:`message_problem`, or naming
        positions more than ``MAX_AHEAD`` beyond this replica's log) is dropped and counted in
        :attr:`refused`."""
        if not 0 <= src < self.n or src == self.id:
            return
        if message_problem(msg) is not None or self._too_far(msg):
            self.refused += 1
            return
        if isinstance(msg, Prepare):
            self._on_prepare(src, msg, now)
        elif isinstance(msg, Promise):
            self._on_promise(src, msg, now)
        elif isinstance(msg, Accept):
            self._on_accept(src, msg, now)
        elif isinstance(msg, Accepted):
            self._on_accepted(src, msg, now)
        elif isinstance(msg, Heartbeat):
            self._on_heartbeat(src, msg, now)
        elif isinstance(msg, Reject):
            self._on_reject(msg, now)
        elif isinstance(msg, Fetch):
            self._on_fetch(src, msg)
        elif isinstance(msg, Learned):
            self._on_learned(src, msg, now)
        elif isinstance(msg, RecoverRequest):
            self._send(src, RecoverResponse(self.status, self.promised, self._end(), self.commit))
        elif isinstance(msg, RecoverResponse):
            self._on_recover_response(src, msg, now)

    def _too_far(self, msg: Message) -> bool:
        """Whether ``msg`` would make this replica hold, or a new coordinator fill, positions
        far beyond its commit index (a refill of every position up to the highest promised end
        is materialized). Entries are held at most ``MAX_AHEAD`` past the commit index, so a
        coordinator's own end, and so the refill, stays within ``2 * MAX_AHEAD`` of it."""
        if isinstance(msg, Accept | Learned):
            return any(pos >= self.commit + MAX_AHEAD for pos, _ in msg.entries)
        if isinstance(msg, Promise):
            limit = max(self._end(), self.commit) + MAX_AHEAD
            return msg.end > limit or any(e.position > limit for e in msg.accepted)
        return False

    # --- acceptor --------------------------------------------------------------------------------

    def _on_prepare(self, src: int, msg: Prepare, now: float) -> None:
        self.max_seen = max(self.max_seen, msg.ballot)
        if self.status is not ReplicaStatus.VOTING:
            return
        if msg.ballot < self.promised or (
            msg.ballot > self.promised
            and now < self.lease_until
            and self.leader is not None
            and self.leader != src
        ):
            self._send(src, Reject(msg.ballot, self.promised))
            return
        if msg.ballot > self.promised:
            self._promise(msg.ballot)
        accepted = tuple(e for p, e in sorted(self.entries.items()) if p >= msg.from_pos)
        self._send(src, Promise(msg.ballot, accepted, self._end()))

    def _promise(self, ballot: int) -> None:
        self._set_meta(self.status, ballot)  # durable before anyone hears of it
        self.promised = ballot
        if self.role is not Role.FOLLOWER and ballot_owner(ballot) != self.id:
            self._step_down("a higher ballot was promised")

    def _on_accept(self, src: int, msg: Accept, now: float) -> None:
        self.max_seen = max(self.max_seen, msg.ballot)
        if self.status is not ReplicaStatus.VOTING:
            return
        if msg.ballot < self.promised:
            self._send(src, Reject(msg.ballot, self.promised))
            return
        if msg.ballot > self.promised:
            self._promise(msg.ballot)
        self._follow(src, now)
        fresh = [
            Entry(pos, msg.ballot, value, chosen=False)
            for pos, value in msg.entries
            if not self._known_chosen(pos)
            and (self.snapshot is None or pos >= self.snapshot.position)
        ]
        self._store(fresh)  # durable before we say so
        self._send(src, Accepted(msg.ballot, tuple(p for p, _ in msg.entries)))
        self._learn_commit(msg.ballot, msg.commit, now)

    def _on_heartbeat(self, src: int, msg: Heartbeat, now: float) -> None:
        self.max_seen = max(self.max_seen, msg.ballot)
        if msg.ballot < self.promised or self.status is not ReplicaStatus.VOTING:
            if self.status is ReplicaStatus.VOTING:
                self._send(src, Reject(msg.ballot, self.promised))
            else:
                self.leader = src  # a hint for clients while this replica recovers
                self._note_behind(msg.commit, now)
            return
        if msg.ballot > self.promised:
            self._promise(msg.ballot)
        self._follow(src, now)
        self._learn_commit(msg.ballot, msg.commit, now)
        self._send(src, Accepted(msg.ballot, ()))

    def _follow(self, leader: int, now: float) -> None:
        self.leader = leader
        self.lease_until = now + self.timing.lease
        self._election_at = now + self.timing.lease + self._jitter(self.timing.election)
        if self.role is not Role.FOLLOWER and leader != self.id:
            self._step_down("another coordinator leads")

    def _learn_commit(self, ballot: int, commit: int, now: float) -> None:
        """Entries below the coordinator's commit that we accepted under its ballot are chosen."""
        marked = []
        pos = self.commit
        while pos < commit:
            e = self.entries.get(pos)
            if e is None or e.ballot != ballot:
                break
            if not e.chosen:
                marked.append(Entry(e.position, e.ballot, e.value, True))
            pos += 1
        self._mark(marked)
        self._advance_commit()
        self._note_behind(commit, now)

    # --- proposer --------------------------------------------------------------------------------

    def _start_election(self, now: float) -> None:
        round_ = ballot_round(max(self.max_seen, self.promised)) + 1
        ballot = make_ballot(round_, self.id)
        self._promise(ballot)
        self.max_seen = ballot
        self.role = Role.CANDIDATE
        self.leader = None
        own = Promise(
            ballot,
            tuple(e for p, e in sorted(self.entries.items()) if p >= self.commit),
            self._end(),
        )
        self._election = _Election(  # its own promise counts once durable (write_done)
            ballot, self.commit, own, self._issued, {}, now + self._jitter(self.timing.retry)
        )
        self._election_at = now + self._jitter(self.timing.election) * 2
        self._broadcast(Prepare(ballot, self.commit))
        self._maybe_elected(now)

    def _on_promise(self, src: int, msg: Promise, now: float) -> None:
        election = self._election
        if election is None or msg.ballot != election.ballot:
            return
        election.promises[src] = msg
        self._maybe_elected(now)

    def _maybe_elected(self, now: float) -> None:
        election = self._election
        if election is None or len(election.promises) < self.quorum:
            return
        self._election = None
        self.role = Role.COORDINATOR
        self.leader = self.id
        end = max(p.end for p in election.promises.values())
        best: dict[int, Entry] = {}
        for promise in election.promises.values():
            for e in promise.accepted:
                if e.position >= election.from_pos and (
                    e.position not in best or e.ballot > best[e.position].ballot
                ):
                    best[e.position] = e
        refill = {
            pos: (best[pos].value if pos in best else b"")
            for pos in range(election.from_pos, end)
            if not self._known_chosen(pos)
        }
        self._next_pos = max(end, self._end())
        self._ready_pos = self._next_pos
        self._heartbeat_at = now
        self._peer_acked = {}
        self._elected_at = now
        if refill:
            self._send_round(refill, {}, now)
        elif self._pending:
            self._start_round(now)

    def _start_round(self, now: float) -> None:
        batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
        if not batch:
            return
        entries: dict[int, bytes] = {}
        requests: dict[int, int] = {}
        for item in batch:
            entries[self._next_pos] = item.value
            requests[self._next_pos] = item.request
            self._next_pos += 1
        self._send_round(entries, requests, now)

    def _send_round(self, entries: dict[int, bytes], requests: dict[int, int], now: float) -> None:
        ballot = self.promised
        promised_seq = self._issued  # the accept needs the promise durable, not our copy
        self._store([Entry(pos, ballot, value) for pos, value in entries.items()])
        self._round = _Round(
            ballot,
            dict(entries),
            {p: set() for p in entries},  # our own acceptance counts once durable
            requests,
            now + self._jitter(self.timing.retry),
            self._issued,
        )
        accept = Accept(ballot, tuple(sorted(entries.items())), self.commit)
        for peer in self._peers():
            self._send(peer, accept, after=promised_seq)
        self._heartbeat_at = now + self.timing.heartbeat
        self._check_round(now)

    def _resend_round(self, now: float) -> None:
        rnd = self._round
        assert rnd is not None
        rnd.resend_at = now + self._jitter(self.timing.retry)
        waiting = {p: v for p, v in rnd.entries.items() if len(rnd.acks[p]) < self.quorum}
        accept = Accept(rnd.ballot, tuple(sorted(waiting.items())), self.commit)
        for peer in self._peers():
            if any(peer not in rnd.acks[p] for p in waiting):
                self._send(peer, accept)

    def _on_accepted(self, src: int, msg: Accepted, now: float) -> None:
        if self.role is not Role.COORDINATOR or msg.ballot != self.promised:
            return
        self._peer_acked[src] = now
        rnd = self._round
        if rnd is None or rnd.ballot != msg.ballot:
            return
        for pos in msg.positions:
            if pos in rnd.acks:
                rnd.acks[pos].add(src)
        self._check_round(now)

    def _check_round(self, now: float) -> None:
        rnd = self._round
        if rnd is None or any(len(acks) < self.quorum for acks in rnd.acks.values()):
            return
        self._round = None
        self._mark([Entry(p, rnd.ballot, v, True) for p, v in sorted(rnd.entries.items())])
        self._advance_commit()
        for pos, request in sorted(rnd.requests.items()):
            self._events.append(AppendDone(request, pos))
        self._apply_ready()
        # Tell the followers soon, so they can apply too; the next accept, if it comes first,
        # carries the commit index instead (no extra messages under load).
        self._heartbeat_at = min(self._heartbeat_at, now + self.timing.commit_notify)
        if self._pending:
            self._start_round(now)

    def _on_reject(self, msg: Reject, now: float) -> None:
        self.max_seen = max(self.max_seen, msg.promised)
        if msg.promised > self.promised and self.role is not Role.FOLLOWER:
            self._step_down("fenced by a higher ballot")
            self._election_at = now + self._jitter(self.timing.election)

    def _step_down(self, reason: str) -> None:
        self.role = Role.FOLLOWER
        self._election = None
        self._heartbeat_at = math.inf
        if self._round is not None:
            for request in self._round.requests.values():
                self._events.append(AppendFailed(request, reason, None))
            self._round = None
        for item in self._pending:
            self._events.append(AppendFailed(item.request, reason, None))
        self._pending = []

    # --- learning --------------------------------------------------------------------------------

    def _known_chosen(self, pos: int) -> bool:
        if self.snapshot is not None and pos < self.snapshot.position:
            return True
        e = self.entries.get(pos)
        return e is not None and e.chosen

    def _advance_commit(self) -> None:
        while self._known_chosen(self.commit):
            self.commit += 1

    def _end(self) -> int:
        return max(self._top, self.snapshot.position if self.snapshot else 0, self.commit)

    def _store(self, entries: Sequence[Entry], *, sync: bool = True) -> None:
        """Queue the write of entries (synced if ``sync``) and hold them in memory now.

        Chosen marks not yet written (:meth:`_mark`) go along, before ``entries``.
        """
        if not entries:
            return
        if self._unmarked:
            fresh = {e.position for e in entries}
            entries = [
                *(e for p, e in sorted(self._unmarked.items()) if p not in fresh),
                *entries,
            ]
            self._unmarked = {}
        self._issued += 1
        self._writes.append(PutEntries(self._issued, tuple(entries), sync))
        for e in entries:
            self.entries[e.position] = e
            self._top = max(self._top, e.position + 1)

    def flush(self) -> None:
        """Queue the write of the chosen marks held in memory (before a clean stop)."""
        if self._unmarked:
            marks, self._unmarked = list(self._unmarked.values()), {}
            self._issued += 1
            self._writes.append(
                PutEntries(self._issued, tuple(sorted(marks, key=lambda e: e.position)))
            )

    def _mark(self, chosen: Sequence[Entry]) -> None:
        """Hold entries as chosen now; write the marks with the next write (they can be learned
        again, so a crash that loses them costs a catch-up, never a value)."""
        for e in chosen:
            self.entries[e.position] = e
            self._unmarked[e.position] = e

    def _note_behind(self, commit: int, now: float) -> None:
        if commit > self.commit:
            self._fetching_to = max(self._fetching_to, commit)
            if self._fetch_at == math.inf:
                self._fetch_at = now
        self._apply_ready()

    def _request_catch_up(self, now: float) -> None:
        if self.commit >= self._fetching_to:
            return
        # The coordinator first; after an unanswered fetch any peer (the coordinator this
        # replica heard of may be the one that died).
        peers = self._peers()
        if self._fetch_tries == 0 and self.leader in peers:
            peers = [self.leader]
        peer = self.rng.choice(peers)
        self._fetch_tries += 1
        self._asked[peer] = max(self._asked.get(peer, 0), self._fetching_to)
        self._send(peer, Fetch(self.commit, self._fetching_to))
        self._fetch_at = now + self._jitter(self.timing.retry)

    def _on_fetch(self, src: int, msg: Fetch) -> None:
        snapshot = None
        start = msg.from_pos
        if self.snapshot is not None and start < self.snapshot.position:
            snapshot = self.snapshot
            start = self.snapshot.position
        chosen = []
        for pos in range(start, min(msg.to_pos, self.commit, start + MAX_FETCH)):
            chosen.append((pos, self.entries[pos].value))
        if chosen or snapshot is not None:
            self._send(src, Learned(tuple(chosen), snapshot, self.commit))

    def _on_learned(self, src: int, msg: Learned, now: float) -> None:
        asked = self._asked.get(src)
        if asked is None or any(pos >= asked for pos, _ in msg.entries):
            # Only an answer to this replica's own fetch, within what it asked for, is taken:
            # unasked chosen entries or snapshots are what a forger sends.
            self.refused += 1
            return
        if (
            msg.snapshot is not None
            and msg.snapshot.position > self.commit
            and self.check_snapshot is not None
            and self.check_snapshot(msg.snapshot.data) is not None
        ):
            self.refused += 1  # the entries may be below the snapshot: all or nothing
            return
        if msg.snapshot is not None and msg.snapshot.position > self.commit:
            self._issued += 1
            self._writes.append(InstallSnapshot(self._issued, msg.snapshot))
            self.snapshot = msg.snapshot
            for pos in [p for p in self.entries if p < msg.snapshot.position]:
                del self.entries[pos]
                self._unmarked.pop(pos, None)
            self.commit = max(self.commit, msg.snapshot.position)
            self.applied = max(self.applied, msg.snapshot.position)
            self._events.append(SnapshotInstalled(msg.snapshot))
        self._fetch_tries = 0
        fresh = []
        for pos, value in msg.entries:
            if self._known_chosen(pos):
                continue
            old = self.entries.get(pos)
            fresh.append(Entry(pos, old.ballot if old else 0, value, True))
        self._store(fresh, sync=False)  # chosen elsewhere; synced before this replica votes
        self._advance_commit()
        self._fetching_to = max(self._fetching_to, msg.commit)
        self._apply_ready()
        self._maybe_recovered(now)
        if self.commit < self._fetching_to:
            self._fetch_at = now
        else:
            self._asked = {}

    def _apply_ready(self) -> None:
        while self.applied < self.commit:
            e = self.entries.get(self.applied)
            if e is None:
                break
            self._events.append(Applied(self.applied, e.value))
            self.applied += 1

    # --- recovery --------------------------------------------------------------------------------

    def _begin_recovery(self, now: float) -> None:
        self._recover = {}
        self._recover_goal = None
        self._recover_at = now

    def _on_recover_response(self, src: int, msg: RecoverResponse, now: float) -> None:
        if self._recover is None:
            return
        self._recover[src] = msg
        self._evaluate_recovery(now)

    def _evaluate_recovery(self, now: float) -> None:
        if self._recover is None:
            return
        statuses = [r.status for r in self._recover.values()]
        if self.status is ReplicaStatus.EMPTY:
            # A new log: every replica answered and none has ever voted. A quorum would not do:
            # two wiped disks would then start a new log beside a replica holding the old one.
            fresh = 1 + sum(_never_voted(r) for r in self._recover.values())
            if fresh == self.n:
                self._set_status(ReplicaStatus.STARTING)  # and on, with the same answers
        if self.status is ReplicaStatus.STARTING:
            started = 1 + sum(s in (ReplicaStatus.STARTING, ReplicaStatus.VOTING) for s in statuses)
            if started >= self.quorum:
                self._start_voting(now)
                self._recover = None
                self._recover_at = math.inf
            return
        voting = {k: r for k, r in self._recover.items() if r.status is ReplicaStatus.VOTING}
        if self._recover_goal is None and len(voting) >= self.quorum:
            if self.status is ReplicaStatus.EMPTY:
                self._set_status(ReplicaStatus.RECOVERING)  # a wiped disk in a live cluster
            promised = max(r.promised for r in voting.values())
            self.max_seen = max(self.max_seen, promised)
            if promised > self.promised:
                self._set_meta(self.status, promised)
                self.promised = promised
            self._recover_goal = max(r.end for r in voting.values())
            self._fetching_to = max(self._fetching_to, max(r.commit for r in voting.values()))
            self._fetch_at = now
        self._maybe_recovered(now)

    def _start_voting(self, now: float) -> None:
        """Vote from now on; give a coordinator heard of meanwhile a lease to reach us first."""
        self._set_status(ReplicaStatus.VOTING)
        wait = self.timing.lease if self.leader is not None else 0.0
        self._election_at = now + wait + self._jitter(self.timing.election)

    def _set_status(self, status: ReplicaStatus) -> None:
        self._set_meta(status, self.promised)
        self.status = status

    def _set_meta(self, status: ReplicaStatus, promised: int) -> None:
        self._issued += 1
        self._writes.append(SetMeta(self._issued, status, promised))

    def _maybe_recovered(self, now: float) -> None:
        if self._recover_goal is None or self.commit < self._recover_goal:
            if self._recover_goal is not None:
                self._fetching_to = max(self._fetching_to, self._recover_goal)
            return
        self._start_voting(now)
        self._recover = None
        self._recover_goal = None
        self._recover_at = math.inf

    # --- helpers ---------------------------------------------------------------------------------

    def _peers(self) -> list[int]:
        return [p for p in range(self.n) if p != self.id]

    def _send(self, dst: int, msg: Message, *, after: int | None = None) -> None:
        """Send ``msg`` once the writes up to ``after`` are done (default: every one so far)."""
        self._held.append((self._issued if after is None else after, dst, msg))

    def _broadcast(self, msg: Message) -> None:
        for peer in self._peers():
            self._send(peer, msg)

    def _jitter(self, t: float) -> float:
        return t * (1 + self.rng.random())

    @property
    def leading(self) -> bool:
        """Coordinator, and every position chosen before its election is applied here.

        Only then does the state above the log include everything any earlier coordinator
        acknowledged, so reads from it (and idempotent answers without a write) are safe.
        """
        return self.role is Role.COORDINATOR and self.applied >= self._ready_pos

    def chosen_entries(self) -> list[tuple[int, bytes]]:
        """Every chosen (position, value) this replica holds, for checkers."""
        return [(p, e.value) for p, e in sorted(self.entries.items()) if e.chosen]

    def pending(self) -> Sequence[int]:
        """Client requests waiting for a batch."""
        return [p.request for p in self._pending]


def _never_voted(r: RecoverResponse) -> bool:
    """Whether a replica's answer shows it never took part: empty, starting, or voting without
    having promised or accepted anything yet (the other replicas of a new log, a moment ahead)."""
    if r.status in (ReplicaStatus.EMPTY, ReplicaStatus.STARTING):
        return True
    return r.status is ReplicaStatus.VOTING and r.promised == 0 and r.end == 0
