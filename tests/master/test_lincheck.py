"""The linearizability checker: hand-written histories, an oracle, simulated clients, speed."""

from __future__ import annotations

import itertools
import random
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vxnet.testing.lincheck import (
    UNKNOWN,
    CheckTooLarge,
    Counter,
    Log,
    Model,
    Operation,
    Register,
    check,
    partition_by_key,
)

if TYPE_CHECKING:
    from collections.abc import Hashable, Sequence

Op = Operation


def assert_valid_linearization(history: Sequence[Operation], model: Model[Any], order: Any) -> None:
    """An independent check of a returned order: real time respected, every output legal."""
    assert order is not None
    assert len(set(order)) == len(order)
    completed = {i for i, op in enumerate(history) if op.ret is not None}
    assert completed <= set(order)
    position = {op: n for n, op in enumerate(order)}
    for a, b in itertools.permutations(order, 2):
        ret_a = history[a].ret
        if ret_a is not None and ret_a < history[b].call:
            assert position[a] < position[b], f"#{a} returned before #{b} was called"
    state = model.init()
    for i in order:
        op = history[i]
        legal, state = model.step(state, op.input, op.output if op.ret is not None else UNKNOWN)
        assert legal, f"#{i} {op.input} -> {op.output} illegal in {state!r}"


def assert_ok(history: Sequence[Operation], model: Model[Any]) -> tuple[int, ...]:
    result = check(history, model)
    assert result.ok, result.explanation
    assert_valid_linearization(history, model, result.order)
    assert result.order is not None
    return result.order


def assert_not_ok(history: Sequence[Operation], model: Model[Any]) -> str:
    result = check(history, model)
    assert not result.ok
    assert result.order is None
    assert "not linearizable" in result.explanation
    return result.explanation


# Hand-written histories --------------------------------------------------------------------------


def test_empty_history_is_linearizable() -> None:
    assert check([], Register()).order == ()


def test_register_stale_read_after_completed_write_is_illegal() -> None:
    history = [
        Op(0, 0, 1, ("write", 1), None),
        Op(1, 2, 3, ("read",), None),
    ]
    explanation = assert_not_ok(history, Register())
    assert "#1 client 1 ('read',)" in explanation
    assert "rejects None in state 1" in explanation


def test_register_concurrent_write_and_read_may_see_either() -> None:
    for seen in (None, 1):
        history = [
            Op(0, 0, 10, ("write", 1), None),
            Op(1, 2, 3, ("read",), seen),
        ]
        assert_ok(history, Register())


def test_register_reads_cannot_flip_back() -> None:
    # Both reads overlap the write, but once one read saw 1 a later read can't see 0.
    history = [
        Op(0, 0, 10, ("write", 1), None),
        Op(1, 1, 2, ("read",), 1),
        Op(2, 3, 4, ("read",), 0),
    ]
    assert_not_ok(history, Register(initial=0))
    # Overlapping reads may disagree in either order.
    overlapping = [history[0], history[1], Op(2, 1.5, 4, ("read",), 0)]
    assert_ok(overlapping, Register(initial=0))


def test_register_timed_out_write_may_or_may_not_appear() -> None:
    timed_out = Op(0, 0, None, ("write", 1), "ignored")
    assert_ok([timed_out, Op(1, 5, 6, ("read",), 1)], Register(initial=0))
    order = assert_ok([timed_out, Op(1, 5, 6, ("read",), 0)], Register(initial=0))
    assert order == (1,)  # the write is simply absent
    # It may take effect long after its call, even after later operations of its own client.
    late = [timed_out, Op(0, 7, 8, ("read",), 0), Op(1, 9, 10, ("read",), 1)]
    assert_ok(late, Register(initial=0))


def test_register_timed_out_write_cannot_be_seen_to_flip_back() -> None:
    history = [
        Op(0, 0, None, ("write", 1), None),
        Op(1, 5, 6, ("read",), 1),
        Op(1, 7, 8, ("read",), 0),
    ]
    assert_not_ok(history, Register(initial=0))


def test_register_timed_out_write_cannot_take_effect_before_its_call() -> None:
    history = [
        Op(1, 0, 1, ("read",), 1),
        Op(0, 2, None, ("write", 1), None),
    ]
    assert_not_ok(history, Register(initial=0))


def test_register_equal_times_are_concurrent() -> None:
    history = [
        Op(0, 0, 5, ("write", 1), None),
        Op(1, 5, 6, ("read",), 0),
    ]
    assert_ok(history, Register(initial=0))


def test_register_compare_and_set() -> None:
    model = Register(initial=0)
    assert_ok(
        [
            Op(0, 0, 1, ("cas", 0, 1), True),
            Op(1, 2, 3, ("cas", 0, 2), False),
            Op(2, 4, 5, ("read",), 1),
        ],
        model,
    )
    # Two concurrent cas from the same expected value cannot both win.
    assert_not_ok(
        [Op(0, 0, 3, ("cas", 0, 1), True), Op(1, 1, 2, ("cas", 0, 2), True)],
        model,
    )
    # A timed-out cas may have won.
    assert_ok(
        [Op(0, 0, None, ("cas", 0, 1), None), Op(1, 5, 6, ("read",), 1)],
        model,
    )


def test_register_the_classic_wing_gong_example() -> None:
    # Knossos' canonical bad history: a read sees a value written after the write that
    # the same reader already observed was superseded.
    history = [
        Op(0, 0, 10, ("write", 1), None),
        Op(1, 1, 2, ("write", 2), None),
        Op(2, 3, 4, ("read",), 1),
        Op(2, 5, 6, ("read",), 2),
    ]
    assert_not_ok(history, Register(initial=0))


def test_counter() -> None:
    model = Counter()
    assert_ok(
        [
            Op(0, 0, 10, ("add", 1), None),
            Op(1, 0, 10, ("add", 2), None),
            Op(2, 1, 2, ("read",), 2),
            Op(2, 3, 4, ("read",), 3),
        ],
        model,
    )
    # 1 is not reachable once both adds completed.
    assert_not_ok(
        [
            Op(0, 0, 1, ("add", 1), None),
            Op(1, 0, 1, ("add", 2), None),
            Op(2, 2, 3, ("read",), 1),
        ],
        model,
    )
    # A timed-out add may count once, not twice.
    pending = Op(0, 0, None, ("add", 5), None)
    assert_ok([pending, Op(1, 1, 2, ("read",), 5)], model)
    assert_ok([pending, Op(1, 1, 2, ("read",), 0)], model)
    assert_not_ok([pending, Op(1, 1, 2, ("read",), 10)], model)


def test_log_appends_get_consecutive_positions() -> None:
    history = [
        Op(0, 0, 10, ("append", "a"), 1),
        Op(1, 0, 10, ("append", "b"), 0),
        Op(2, 11, 12, ("read",), ("b", "a")),
    ]
    assert assert_ok(history, Log()) == (1, 0, 2)


def test_log_duplicated_position_is_illegal() -> None:
    history = [
        Op(0, 0, 10, ("append", "a"), 0),
        Op(1, 0, 10, ("append", "b"), 0),
    ]
    explanation = assert_not_ok(history, Log())
    assert "longest linearizable prefix has 1 operations" in explanation


def test_log_lost_append_is_illegal() -> None:
    history = [
        Op(0, 0, 1, ("append", "a"), 0),
        Op(1, 2, 3, ("append", "b"), 1),
        Op(2, 4, 5, ("read",), ("b",)),
    ]
    assert_not_ok(history, Log())


def test_log_timed_out_append_may_appear_once_but_not_vanish() -> None:
    lost = Op(0, 0, None, ("append", "a"), None)
    assert_ok([lost, Op(1, 1, 2, ("append", "b"), 0), Op(2, 3, 4, ("read",), ("b",))], Log())
    assert_ok([lost, Op(1, 1, 2, ("append", "b"), 1), Op(2, 3, 4, ("read",), ("a", "b"))], Log())
    assert_not_ok(
        [
            lost,
            Op(1, 1, 2, ("read",), ("a",)),
            Op(2, 3, 4, ("read",), ()),
        ],
        Log(),
    )


def test_explanation_names_prefix_and_blocked_operation() -> None:
    history = [
        Op(0, 0, 1, ("write", 1), None),
        Op(0, 2, 3, ("write", 2), None),
        Op(1, 4, 5, ("read",), 1),
    ]
    explanation = assert_not_ok(history, Register(initial=0))
    assert explanation.splitlines() == [
        "not linearizable: the longest linearizable prefix has 2 operations",
        "  #0 client 0 ('write', 1) called at 0, returned None at 1",
        "  #1 client 0 ('write', 2) called at 2, returned None at 3",
        "then #2 client 1 ('read',) called at 4, returned 1 at 5 cannot be placed before it "
        "returned, nor can any operation concurrent with it "
        "(the model rejects 1 in state 2)",
    ]


def test_bad_histories_are_the_callers_fault() -> None:
    with pytest.raises(ValueError, match="returns before it is called"):
        check([Op(0, 2, 1, ("read",), None)], Register())
    with pytest.raises(ValueError, match="Register: unknown operation"):
        check([Op(0, 0, 1, ("delete",), None)], Register())


def test_check_too_large_is_raised_not_run_forever() -> None:
    # Many concurrent writes, then a read of a value none of them wrote: every subset of the
    # writes is a distinct state before the search can give up.
    history = [Op(c, 0, 10, ("write", c), None) for c in range(16)]
    history.append(Op(99, 11, 12, ("read",), -1))
    with pytest.raises(CheckTooLarge, match="gave up after 1000 states") as info:
        check(history, Register(), max_states=1000)
    assert info.value.max_states == 1000
    assert not check(history[:8] + history[-1:], Register()).ok


def test_partition_by_key() -> None:
    history = [
        Op(0, 0, 1, ("write", "a", 1), None),
        Op(1, 0, 1, ("write", "b", 2), None),
        Op(2, 2, 3, ("read", "a"), 1),
        Op(2, 4, 5, ("read", "b"), 1),
    ]
    parts = partition_by_key(history, lambda op: op.input[1])  # type: ignore[index]
    assert list(parts) == ["a", "b"]
    assert parts["a"] == [history[0], history[2]]

    def unkeyed(op: Operation) -> Operation:
        name, _, *rest = cast("tuple[Any, ...]", op.input)
        return replace(op, input=(name, *rest))

    verdicts = {
        key: check([unkeyed(op) for op in part], Register()).ok for key, part in parts.items()
    }
    assert verdicts == {"a": True, "b": False}


# An oracle: brute force over every order of small random histories ----------------------------


def brute_force(history: Sequence[Operation], model: Model[Any]) -> bool:
    pending = [i for i, op in enumerate(history) if op.ret is None]
    completed = [i for i, op in enumerate(history) if op.ret is not None]
    for n in range(len(pending) + 1):
        for chosen in itertools.combinations(pending, n):
            for order in itertools.permutations(completed + list(chosen)):
                if _legal(history, model, order):
                    return True
    return False


def _legal(history: Sequence[Operation], model: Model[Any], order: Sequence[int]) -> bool:
    for x, a in enumerate(order):
        for b in order[x + 1 :]:
            ret_b = history[b].ret
            if ret_b is not None and ret_b < history[a].call:
                return False
    state = model.init()
    for i in order:
        op = history[i]
        legal, state = model.step(state, op.input, op.output if op.ret is not None else UNKNOWN)
        if not legal:
            return False
    return True


@st.composite
def small_histories(draw: st.DrawFn) -> tuple[Model[Any], list[Operation]]:
    kind = draw(st.sampled_from(["register", "counter", "log"]))
    n = draw(st.integers(1, 6))
    history = []
    for i in range(n):
        call = draw(st.integers(0, 8))
        ret = draw(st.one_of(st.none(), st.integers(call, call + 4)))
        if kind == "register":
            inp: tuple[Any, ...] = draw(
                st.sampled_from([("write", 1), ("write", 2), ("read",), ("cas", 1, 2)])
            )
            out: Hashable = {
                "write": None,
                "read": draw(st.sampled_from([0, 1, 2])),
                "cas": draw(st.booleans()),
            }[inp[0]]
        elif kind == "counter":
            inp = draw(st.sampled_from([("add", 1), ("add", 2), ("read",)]))
            out = None if inp[0] == "add" else draw(st.integers(0, 4))
        else:
            inp = draw(st.sampled_from([("append", i), ("read",)]))
            if inp[0] == "append":
                out = draw(st.integers(0, 3))
            else:
                out = tuple(draw(st.lists(st.integers(0, n - 1), max_size=3, unique=True)))
        history.append(Op(i % 3, call, ret, inp, out))
    return model_for(kind), history


@settings(max_examples=400)
@given(small_histories())
def test_agrees_with_brute_force(case: tuple[Model[Any], list[Operation]]) -> None:
    model, history = case
    result = check(history, model)
    assert result.ok == brute_force(history, model), result.explanation
    if result.ok:
        assert_valid_linearization(history, model, result.order)


# Simulated clients: real sequential objects under random concurrent schedules -----------------


def model_for(kind: str) -> Model[Any]:
    if kind == "register":
        return Register(initial=0)
    return Counter() if kind == "counter" else Log()


def simulate(
    kind: str, rng: random.Random, clients: int, ops: int, timeouts: float
) -> list[Operation]:
    """Clients call, the object acts atomically in between, clients hear back (or time out).

    Each client runs one operation at a time. A timed-out operation (at most four) takes effect
    at a random moment after its call (possibly after the client's next calls), or never.
    Outputs come from plain Python objects, not from the models under test.
    """
    plans: list[tuple[float, int, float, float | None, Any]] = []  # (atomic, client, call, ...)
    now = [0.0] * clients
    timed_out = 0
    for n in range(ops):
        client = rng.randrange(clients)
        call = now[client] + 0.1 + rng.uniform(0, 3)  # a client runs one at a time
        inp: Any
        if kind == "register":
            inp = rng.choice([("write", rng.randrange(5)), ("read",), ("cas", rng.randrange(5), 9)])
        elif kind == "counter":
            inp = rng.choice([("add", rng.randrange(1, 4)), ("read",)])
        else:
            inp = rng.choice([("append", (client, n)), ("read",)])
        if rng.random() < timeouts and timed_out < 4:  # a few: see the checker's cost notes
            timed_out += 1
            now[client] = call + 10  # the client gives up and goes on
            lands = call + rng.uniform(0, 30) if rng.random() < 0.5 else float("inf")
            plans.append((lands, client, call, None, inp))
        else:
            atomic = call + rng.uniform(0, 5)
            now[client] = atomic + rng.uniform(0, 5)
            plans.append((atomic, client, call, now[client], inp))
    plans.sort(key=lambda plan: plan[0])
    register: Hashable = 0
    counter = 0
    log: list[Hashable] = []
    history = []
    for atomic, client, call, ret, inp in plans:
        out: Hashable = None
        if atomic == float("inf"):  # never took effect
            history.append(Op(client, call, ret, inp, None))
            continue
        match inp:
            case ("write", value):
                register = value
            case ("cas", expected, new):
                out = register == expected
                register = new if out else register
            case ("add", delta):
                counter += delta
            case ("append", value):
                log.append(value)
                out = len(log) - 1
            case ("read",):
                out = {"register": register, "counter": counter, "log": tuple(log)}[kind]
        history.append(Op(client, call, ret, inp, out))
    return history


simulations = st.tuples(
    st.sampled_from(["register", "counter", "log"]),
    st.randoms(use_true_random=False),
    st.integers(1, 8),
    st.integers(0, 60),
    st.sampled_from([0.0, 0.05, 0.1]),
)


@settings(max_examples=200)
@given(simulations)
def test_simulated_histories_are_linearizable(
    sim: tuple[str, random.Random, int, int, float],
) -> None:
    kind, rng, clients, ops, timeouts = sim
    history = simulate(kind, rng, clients, ops, timeouts)
    assert_ok(history, model_for(kind))


def corrupt(kind: str, rng: random.Random, history: list[Operation]) -> list[Operation] | None:
    """Changes one output so that no linearization can exist, or returns None if it can't."""
    done = [i for i, op in enumerate(history) if op.ret is not None]
    reads = [i for i in done if history[i].input == ("read",)]
    appends = [i for i in done if history[i].input[0] == "append"]  # type: ignore[index]
    choices: list[tuple[int, Hashable]] = []
    if kind == "register":
        choices += [(i, 42) for i in reads]  # never written
    elif kind == "counter":
        total = sum(op.input[1] for op in history if op.input[0] == "add")  # type: ignore[index]
        choices += [(i, total + 1) for i in reads] + [(i, -1) for i in reads]
    else:
        choices += [(i, (*history[i].output, "never")) for i in reads]  # type: ignore[misc]
        choices += [(i, len(history)) for i in appends]  # more than all appends together
        if len(appends) >= 2:  # a duplicated position
            a, b = rng.sample(appends, 2)
            choices.append((b, history[a].output))
        for r in reads:  # a lost append: completed before the read began, yet missing
            before = [
                history[i].input[1]  # type: ignore[index]
                for i in appends
                if history[i].ret < history[r].call  # type: ignore[operator]
            ]
            if before:
                lost = rng.choice(before)
                choices.append((r, tuple(v for v in history[r].output if v != lost)))  # type: ignore[attr-defined]
    if not choices:
        return None
    index, output = rng.choice(choices)
    corrupted = list(history)
    corrupted[index] = replace(history[index], output=output)
    return corrupted


@settings(max_examples=200)
@given(simulations)
def test_provably_illegal_corruptions_are_caught(
    sim: tuple[str, random.Random, int, int, float],
) -> None:
    kind, rng, clients, ops, timeouts = sim
    history = simulate(kind, rng, clients, ops, timeouts)
    corrupted = corrupt(kind, rng, history)
    if corrupted is not None:
        assert_not_ok(corrupted, model_for(kind))


def test_most_plausible_corruptions_are_caught() -> None:
    # A read changed to some other value that *was* written may go unnoticed when the
    # concurrency window allows it; with moderate concurrency most are still caught.
    rng = random.Random(1)
    caught = tried = 0
    for _ in range(300):
        history = simulate("register", rng, 4, 40, 0.0)
        reads = [i for i, op in enumerate(history) if op.input == ("read",)]
        if not reads:
            continue
        i = rng.choice(reads)
        wrong = rng.choice([v for v in range(5) if v != history[i].output])
        corrupted = list(history)
        corrupted[i] = replace(history[i], output=wrong)
        tried += 1
        caught += not check(corrupted, Register(initial=0)).ok
    assert caught / tried > 0.6, (caught, tried)


# Speed -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("timeouts", [0.0, 0.05])
def test_500_operations_from_8_clients_check_quickly(timeouts: float) -> None:
    history = simulate("register", random.Random(7), 8, 500, timeouts)
    start = time.perf_counter()
    result = check(history, Register(initial=0))
    elapsed = time.perf_counter() - start
    assert result.ok, result.explanation
    assert elapsed < 2.0


def test_500_operation_log_history_checks_quickly() -> None:
    history = simulate("log", random.Random(7), 8, 500, 0.05)
    start = time.perf_counter()
    assert check(history, Log()).ok
    assert time.perf_counter() - start < 2.0
