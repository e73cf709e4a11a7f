"""A linearizability checker for client histories: Wing & Gong's search with Lowe's memoisation.

The masters replicate allocations through a Multi-Paxos log; the tests record what clients saw
(who called what, when, and what came back) and ask whether some sequential order of those
operations explains every answer while respecting real time. This module answers that question
for small sequential models (:class:`Register`, :class:`Counter`, :class:`Log`). It is pure: no
I/O, no clocks, no randomness.

Histories:
  * An :class:`Operation` is ``(client, call, ret, input, output)``. ``ret is None`` means the
    client never heard back (timeout, crash): the operation may have taken effect at any moment
    after ``call``, or never. Its ``output`` is ignored; the model is stepped with
    :data:`UNKNOWN` and must accept any output.
  * Operation A *precedes* B when ``A.ret < B.call`` (strictly: equal times count as
    concurrent). A linearization must put A before B; concurrent operations may go either way.
    Operations with unknown outcome precede nothing.

The search (Wing & Gong 1993, with Lowe's 2017 memoisation as in Knossos and Porcupine):
  1. Every operation gives a *call* event, and a completed one also a *return* event. The events
     are sorted by time (calls before returns at equal times) into a doubly linked list.
  2. A search node is a linearized prefix. Its candidates are the operations whose call event
     comes before the first remaining return event: those are exactly the ones every earlier-
     returning operation is already placed for. Candidates are tried completed ones first,
     then those with unknown outcome.
  3. Placing a candidate steps the model; if the output is legal, the operation is *lifted*
     (its call and return events unlinked, dancing-links style), the node pushed on a stack and
     the search continues from the new node. A node whose candidates all fail is popped and its
     events relinked; failing at the root means the history is not linearizable.
  4. Success when no return event is left: every completed operation is placed. Operations with
     unknown outcome have no return event: they are placed only where that helps, or omitted.
  5. Memoisation: what can follow a node depends only on the set of placed operations and the
     model state, so a failed (set, state) pair is never explored again. This bounds the search
     by the number of distinct pairs, which is small for histories real systems produce (the
     concurrency window, not the length, drives it). Beyond ``max_states`` nodes
     :class:`CheckTooLarge` is raised instead of running on.
  6. Operations with unknown outcome get three sound refinements. Placing one that leaves the
     state unchanged (a timed-out read, a failed compare-and-set) is never tried: omitting it
     explains the same. Once called, those with equal inputs are interchangeable, so the set
     records how many of each input were placed, not which. And a failed node also rules out
     every node with the same state and completed operations and *more* unknown-outcome ones
     placed, since those have a subset of its ways forward (trying completed candidates first
     makes the smaller sets fail first).
  7. Iterative deepening on how many unknown-outcome operations may be placed (0, 1, 3, 7, ...):
     a correct history usually needs few, and a search free to chain many of them explores
     every order of every subset. A search the budget never cut is final.

Cost: the concurrency window drives it, not the length. The hard case is many never-answered
operations that change the state (writes, appends) pending at once: each stays a candidate
until the end, and a model whose state depends on their order (:class:`Log`) must try their
orders until a read refutes them. A handful per key is cheap; dozens may raise
:class:`CheckTooLarge`, mostly when the history is *not* linearizable (the search must rule
everything out). Split by key and keep timed-out writes few.

P-compositionality (Herlihy & Wing): a history over independent objects is linearizable iff
each object's sub-history is. :func:`partition_by_key` splits a history by key (the master's
state machine is keyed by agent) so each part is checked alone, which is exponentially cheaper.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol, TypeVar

__all__ = [
    "UNKNOWN",
    "CheckTooLarge",
    "Counter",
    "Log",
    "Model",
    "Operation",
    "Register",
    "Result",
    "check",
    "partition_by_key",
]

S = TypeVar("S", bound=Hashable)
K = TypeVar("K", bound=Hashable)

# How many operations of the linearizable prefix an explanation lists (the last ones).
_EXPLAIN_PREFIX_OPS: Final = 20


class _Unknown(enum.Enum):
    UNKNOWN = "UNKNOWN"

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Final = _Unknown.UNKNOWN
"""The output a model is stepped with for an operation whose client never heard back."""


@dataclass(frozen=True, slots=True)
class Operation:
    """One client operation as the client saw it.

    Attributes:
        client: Who issued it (only used in explanations).
        call: Invocation time.
        ret: Response time, or ``None`` if the client never heard back: then the operation may
            or may not have taken effect, at any time after ``call``.
        input: What was asked, e.g. ``("write", 3)``, ``("read",)``, ``("cas", 1, 2)``.
        output: What came back; ignored when ``ret`` is ``None``.
    """

    client: int
    call: float
    ret: float | None
    input: Hashable
    output: Hashable


class Model(Protocol[S]):
    """A sequential specification: an initial state and a transition function."""

    def init(self) -> S:
        """Returns the initial state."""
        ...

    def step(self, state: S, input: Hashable, output: Hashable) -> tuple[bool, S]:
        """Applies ``input`` to ``state``.

        Returns:
            Whether ``output`` is a legal answer to ``input`` in ``state`` (always true for
            :data:`UNKNOWN`), and the next state. States must be hashable.

        Raises:
            ValueError: ``input`` is not an operation of this model.
        """
        ...


def _bad_input(model: object, input: Hashable) -> ValueError:
    return ValueError(f"{type(model).__name__}: unknown operation {input!r}")


@dataclass(frozen=True, slots=True)
class Register:
    """One read/write register with compare-and-set.

    Inputs and outputs: ``("write", v) -> None``, ``("read",) -> v``,
    ``("cas", expected, new) -> bool`` (true iff the value was ``expected`` and is now ``new``).
    """

    initial: Hashable = None

    def init(self) -> Hashable:
        """Returns the initial value."""
        return self.initial

    def step(self, state: Hashable, input: Hashable, output: Hashable) -> tuple[bool, Hashable]:
        """Applies one register operation; see the class docstring."""
        match input:
            case ("write", value):
                return output is None or output is UNKNOWN, value
            case ("read",):
                return output is UNKNOWN or output == state, state
            case ("cas", expected, new):
                swapped = state == expected
                legal = output is UNKNOWN or output is swapped
                return legal, new if swapped else state
        raise _bad_input(self, input)


@dataclass(frozen=True, slots=True)
class Counter:
    """A counter: ``("add", n) -> None`` and ``("read",) -> value``."""

    initial: int = 0

    def init(self) -> int:
        """Returns the initial value."""
        return self.initial

    def step(self, state: int, input: Hashable, output: Hashable) -> tuple[bool, int]:
        """Applies one counter operation; see the class docstring."""
        match input:
            case ("add", int(delta)):
                return output is None or output is UNKNOWN, state + delta
            case ("read",):
                return output is UNKNOWN or output == state, state
        raise _bad_input(self, input)


@dataclass(frozen=True, slots=True)
class Log:
    """An append-only log, the state machine the Paxos log exposes.

    ``("append", v) -> position`` (0-based, the log's length before the append) and
    ``("read",) -> tuple`` of every value appended so far, in order.
    """

    def init(self) -> tuple[Hashable, ...]:
        """Returns the empty log."""
        return ()

    def step(
        self, state: tuple[Hashable, ...], input: Hashable, output: Hashable
    ) -> tuple[bool, tuple[Hashable, ...]]:
        """Applies one log operation; see the class docstring."""
        match input:
            case ("append", value):
                return output is UNKNOWN or output == len(state), (*state, value)
            case ("read",):
                return output is UNKNOWN or output == state, state
        raise _bad_input(self, input)


@dataclass(frozen=True, slots=True)
class Result:
    """The verdict on one history.

    Attributes:
        ok: Whether the history is linearizable.
        order: When ok, indexes into the history of one valid linearization; operations with
            unknown outcome that were left out are absent. ``None`` when not ok.
        explanation: When not ok, the longest linearizable prefix found and the operation that
            could not be placed; when ok, a one-line summary.
    """

    ok: bool
    order: tuple[int, ...] | None
    explanation: str


class CheckTooLarge(Exception):
    """The search visited more than ``max_states`` (linearized set, state) pairs.

    The history is too big or too concurrent to check as a whole: split it by key
    (:func:`partition_by_key`), shorten it or raise the limit.
    """

    def __init__(self, max_states: int, operations: int) -> None:
        super().__init__(
            f"linearizability check of {operations} operations gave up after "
            f"{max_states} states (max_states); split the history by key or shorten it"
        )
        self.max_states = max_states
        self.operations = operations


def _describe(index: int, op: Operation) -> str:
    ret = "never returned" if op.ret is None else f"returned {op.output!r} at {op.ret:g}"
    return f"#{index} client {op.client} {op.input!r} called at {op.call:g}, {ret}"


def check(history: Sequence[Operation], model: Model[S], *, max_states: int = 2_000_000) -> Result:
    """Checks whether ``history`` is linearizable with respect to ``model``.

    Args:
        history: The operations, in any order; indexes in the result refer to this sequence.
        model: The sequential specification.
        max_states: Bound on the search nodes (linearized set, state) the search may visit.

    Returns:
        The verdict, with a linearization or an explanation.

    Raises:
        CheckTooLarge: The search needed more than ``max_states`` nodes.
        ValueError: An operation returns before it is called, or has an input the model does
            not know (a fault of the history, not of the system under test).
    """
    for index, operation in enumerate(history):
        if operation.ret is not None and operation.ret < operation.call:
            raise ValueError(
                f"operation {_describe(index, operation)}: returns before it is called"
            )

    # Events: 2*i is the call of operation i, 2*i+1 its return (completed operations only).
    # The list is threaded through `nxt`/`prv`; slot `head` is the sentinel, -1 the end.
    keyed: list[tuple[float, int, int]] = []
    for index, operation in enumerate(history):
        keyed.append((operation.call, 0, 2 * index))
        if operation.ret is not None:
            keyed.append((operation.ret, 1, 2 * index + 1))
    keyed.sort()
    head = 2 * len(history)
    nxt = [-1] * (head + 1)
    prv = [-1] * (head + 1)
    previous = head
    for _, _, event in keyed:
        nxt[previous] = event
        prv[event] = previous
        previous = event

    completed = [operation.ret is not None for operation in history]
    inputs = [operation.input for operation in history]
    outputs = [operation.output if operation.ret is not None else UNKNOWN for operation in history]
    step = model.step
    # Unknown-outcome operations with equal inputs are interchangeable once both are called, so
    # the search records only how many of each input it placed: placing the k-th of a group
    # sets the bit of the group's k-th member in `extra_bits`, whichever member it really was.
    by_input: dict[Hashable, list[int]] = {}
    for index, operation in sorted(enumerate(history), key=lambda item: item[1].call):
        if operation.ret is None:
            by_input.setdefault(operation.input, []).append(index)
    groups = list(by_input.values())
    group_of = [-1] * len(history)
    for number, members in enumerate(groups):
        for index in members:
            group_of[index] = number
    placed = [0] * len(groups)

    def candidates() -> tuple[list[int], int]:
        """The operations that may go next (completed ones first) and the first return event."""
        done: list[int] = []
        unknown: list[int] = []
        entry = nxt[head]
        while entry != -1 and not entry & 1:
            (done if completed[entry >> 1] else unknown).append(entry >> 1)
            entry = nxt[entry]
        done.extend(unknown)
        return done, entry

    visited = 0
    best: tuple[list[int], S, int] | None = None  # (prefix, state after it, blocking operation)

    def search(budget: int) -> tuple[list[int] | None, bool]:
        """One depth-first search placing at most `budget` unknown-outcome operations.

        Returns:
            The linearization found (or None), and whether the budget cut any branch.
        """
        nonlocal visited, best
        # The node: completed operations placed (`done_bits`), unknown-outcome ones placed
        # (`extra_bits`, `extra`), the state, and the candidates still to try from here.
        remaining = sum(completed)
        state = model.init()
        done_bits = extra_bits = extra = 0
        todo, blocker = candidates()
        tried = 0
        stack: list[tuple[int, S, list[int], int, int]] = []  # (op, state before, siblings)
        failed: dict[tuple[int, S], list[int]] = {}
        cut = False

        while remaining:
            if tried < len(todo):
                op = todo[tried]
                tried += 1
                if not completed[op] and extra >= budget:
                    cut = True
                    continue
                legal, after = step(state, inputs[op], outputs[op])
                if not legal:
                    continue
                if completed[op]:
                    next_done, next_extra = done_bits | 1 << op, extra_bits
                elif after == state:
                    continue  # omitting it explains the same
                else:
                    group = group_of[op]
                    next_done = done_bits
                    next_extra = extra_bits | 1 << groups[group][placed[group]]
                if any(e & ~next_extra == 0 for e in failed.get((next_done, after), ())):
                    continue  # a node with this state and no more placed had no way out
                visited += 1
                if visited > max_states:
                    raise CheckTooLarge(max_states, len(history))
                stack.append((op, state, todo, tried, blocker))
                state, done_bits, extra_bits = after, next_done, next_extra
                if completed[op]:
                    remaining -= 1
                else:
                    placed[group_of[op]] += 1
                    extra += 1
                # Lift: unlink the call, then the return (unlifting relinks in reverse).
                call = 2 * op
                nxt[prv[call]] = nxt[call]
                if nxt[call] != -1:
                    prv[nxt[call]] = prv[call]
                if completed[op]:
                    ret = call + 1
                    nxt[prv[ret]] = nxt[ret]
                    if nxt[ret] != -1:
                        prv[nxt[ret]] = prv[ret]
                todo, blocker = candidates()
                tried = 0
                continue

            # Every candidate failed: so does this node, and any with the same state, the same
            # completed operations and at least the same unknown-outcome ones placed.
            failed.setdefault((done_bits, state), []).append(extra_bits)
            if best is None or len(stack) > len(best[0]):
                best = ([entry[0] for entry in stack], state, blocker >> 1)
            if not stack:
                return None, cut
            op, state, todo, tried, blocker = stack.pop()
            if completed[op]:
                done_bits ^= 1 << op
                remaining += 1
            else:
                group = group_of[op]
                placed[group] -= 1
                extra -= 1
                extra_bits ^= 1 << groups[group][placed[group]]
            call = 2 * op
            if completed[op]:
                ret = call + 1
                nxt[prv[ret]] = ret
                if nxt[ret] != -1:
                    prv[nxt[ret]] = ret
            nxt[prv[call]] = call
            if nxt[call] != -1:
                prv[nxt[call]] = call

        return [entry[0] for entry in stack], cut

    # Iterative deepening on the number of unknown-outcome operations placed: a linearizable
    # history usually needs few, and long runs of them are where the search blows up.
    budget = 0
    while True:
        order, cut = search(budget)
        if order is not None:
            break
        if not cut:
            return _failure(history, model, best)
        budget = 2 * budget + 1

    placed_unknown = sum(not completed[op] for op in order)
    omitted = len(history) - sum(completed) - placed_unknown
    return Result(
        ok=True,
        order=tuple(order),
        explanation=(
            f"linearizable: {len(order)} operations in order, {omitted} with unknown outcome "
            f"omitted, {visited} search nodes"
        ),
    )


def _failure(
    history: Sequence[Operation], model: Model[S], best: tuple[list[int], S, int] | None
) -> Result:
    """Builds the negative verdict from the deepest point the search reached."""
    if best is None:  # unreachable: a non-empty history always meets a return event
        return Result(ok=False, order=None, explanation="not linearizable")
    prefix, state, blocked = best
    lines = [f"not linearizable: the longest linearizable prefix has {len(prefix)} operations"]
    if len(prefix) > _EXPLAIN_PREFIX_OPS:
        lines.append(f"  ... {len(prefix) - _EXPLAIN_PREFIX_OPS} earlier operations")
    lines.extend(f"  {_describe(op, history[op])}" for op in prefix[-_EXPLAIN_PREFIX_OPS:])
    op = history[blocked]
    legal, _ = model.step(state, op.input, op.output)
    why = (
        f"the model rejects {op.output!r} in state {state!r}"
        if not legal
        else f"{op.output!r} is legal in state {state!r}, but nothing after it can be placed"
    )
    lines.append(
        f"then {_describe(blocked, op)} cannot be placed before it returned, "
        f"nor can any operation concurrent with it ({why})"
    )
    return Result(ok=False, order=None, explanation="\n".join(lines))


def partition_by_key(
    history: Sequence[Operation], key_of: Callable[[Operation], K]
) -> dict[K, list[Operation]]:
    """Splits a history over independent objects into one sub-history per object.

    By P-compositionality the whole is linearizable iff every part is, so check each part
    alone. Operations keep their relative order; indexes in a part's :class:`Result` refer to
    that part. Strip the key from the inputs first (``dataclasses.replace``) if the model
    does not expect it.

    Args:
        history: Operations on many keys.
        key_of: The key an operation touches.

    Returns:
        The sub-histories, by key, in order of first appearance.
    """
    parts: dict[K, list[Operation]] = {}
    for op in history:
        parts.setdefault(key_of(op), []).append(op)
    return parts
