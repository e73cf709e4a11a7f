"""Reconciling kernel objects: each rule by example, then properties on small pools."""

from __future__ import annotations

from dataclasses import replace
from itertools import pairwise
from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vxnet.overlay._diff import apply_ops, diff
from vxnet.overlay._model import (
    Fdb,
    KernelState,
    Neighbour,
    Op,
    RemoteAgent,
    Route,
    desired_state,
)

if TYPE_CHECKING:
    from collections.abc import Hashable, Sequence
    from random import Random

    from vxnet.overlay._model import KernelObject

DEV = "vtep1024"
MAC_A = "70:b3:d5:80:00:01"
MAC_B = "70:b3:d5:80:00:02"

A = RemoteAgent(
    ip="10.0.0.1",
    vtep_ip="44.128.0.1",
    vtep_mac=MAC_A,
    vtep_ip6="fd01:a::1",
    subnets=("9.0.1.0/24", "fd01:b::1:0:0:0/80"),
)
B = RemoteAgent(
    ip="10.0.0.2",
    vtep_ip="44.128.0.2",
    vtep_mac=MAC_B,
    subnets=("9.0.2.0/24",),
)
EMPTY = KernelState()


def state(*objs: KernelObject) -> KernelState:
    return KernelState(
        frozenset(o for o in objs if isinstance(o, Route)),
        frozenset(o for o in objs if isinstance(o, Neighbour)),
        frozenset(o for o in objs if isinstance(o, Fdb)),
    )


def objects(s: KernelState) -> list[KernelObject]:
    return [*s.routes, *s.neighbours, *s.fdb]


def kind_of(obj: KernelObject) -> str:
    return type(obj).__name__


# --- desired_state --------------------------------------------------------------------------------


def test_desired_state_of_dual_stack_and_ipv4_remotes() -> None:
    assert desired_state([A, B], DEV) == state(
        Route("9.0.1.0/24", "44.128.0.1", DEV),
        Route("fd01:b::1:0:0:0/80", "fd01:a::1", DEV),
        Route("9.0.2.0/24", "44.128.0.2", DEV),
        Neighbour("44.128.0.1", MAC_A, DEV),
        Neighbour("fd01:a::1", MAC_A, DEV),
        Neighbour("44.128.0.2", MAC_B, DEV),
        Fdb(MAC_A, "10.0.0.1", DEV),
        Fdb(MAC_B, "10.0.0.2", DEV),
    )


def test_desired_state_without_vtep_ip6_has_no_ipv6_routes() -> None:
    remote = RemoteAgent(
        "10.0.0.3", "44.128.0.3", MAC_A, None, ("9.0.3.0/24", "fd01:b::3:0:0:0/80")
    )
    assert desired_state([remote], DEV) == state(
        Route("9.0.3.0/24", "44.128.0.3", DEV),
        Neighbour("44.128.0.3", MAC_A, DEV),
        Fdb(MAC_A, "10.0.0.3", DEV),
    )


def test_desired_state_lowercases_the_mac() -> None:
    remote = RemoteAgent("10.0.0.1", "44.128.0.1", "70:B3:D5:80:0A:FF")
    assert desired_state([remote], DEV) == state(
        Neighbour("44.128.0.1", "70:b3:d5:80:0a:ff", DEV),
        Fdb("70:b3:d5:80:0a:ff", "10.0.0.1", DEV),
    )


def test_desired_state_of_no_remotes_is_empty() -> None:
    assert desired_state([], DEV) == EMPTY


# --- diff by example ------------------------------------------------------------------------------


def test_from_empty_only_replaces_fdb_then_neighbours_then_routes() -> None:
    desired = desired_state([A, B], DEV)
    ops = diff(desired, EMPTY)
    assert ops == [
        Op("replace", Fdb(MAC_A, "10.0.0.1", DEV)),
        Op("replace", Fdb(MAC_B, "10.0.0.2", DEV)),
        Op("replace", Neighbour("44.128.0.1", MAC_A, DEV)),
        Op("replace", Neighbour("44.128.0.2", MAC_B, DEV)),
        Op("replace", Neighbour("fd01:a::1", MAC_A, DEV)),
        Op("replace", Route("9.0.1.0/24", "44.128.0.1", DEV)),
        Op("replace", Route("9.0.2.0/24", "44.128.0.2", DEV)),
        Op("replace", Route("fd01:b::1:0:0:0/80", "fd01:a::1", DEV)),
    ]
    assert apply_ops(EMPTY, ops) == desired


def test_equal_states_need_no_ops() -> None:
    desired = desired_state([A, B], DEV)
    assert diff(desired, desired) == []
    assert diff(EMPTY, EMPTY) == []


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (Route("9.0.1.0/24", "44.128.0.1", DEV), Route("9.0.1.0/24", "44.128.0.9", DEV)),
        (Route("9.0.1.0/24", "44.128.0.1", DEV), Route("9.0.1.0/24", "44.128.0.1", "vtep1025")),
        (Neighbour("44.128.0.1", MAC_A, DEV), Neighbour("44.128.0.1", MAC_B, DEV)),
        (Fdb(MAC_A, "10.0.0.1", DEV), Fdb(MAC_A, "10.0.0.9", DEV)),
    ],
    ids=["gateway", "route-dev", "mac", "fdb-dst"],
)
def test_a_changed_value_is_one_replace_never_a_delete(
    old: KernelObject, new: KernelObject
) -> None:
    actual = desired_state([A, B], DEV)
    assert old in actual.routes | actual.neighbours | actual.fdb
    assert old.key == new.key
    desired = state(*(o for o in objects(actual) if o != old), new)
    assert diff(desired, actual) == [Op("replace", new)]
    assert apply_ops(actual, [Op("replace", new)]) == desired


def test_a_remote_moved_to_another_underlay_address_is_one_fdb_replace() -> None:
    moved = replace(A, ip="10.0.0.9")
    actual = desired_state([A, B], DEV)
    assert diff(desired_state([moved, B], DEV), actual) == [
        Op("replace", Fdb(MAC_A, "10.0.0.9", DEV)),
    ]


def test_a_removed_remote_is_deleted_routes_then_neighbours_then_fdb() -> None:
    actual = desired_state([A, B], DEV)
    assert diff(desired_state([B], DEV), actual) == [
        Op("delete", Route("9.0.1.0/24", "44.128.0.1", DEV)),
        Op("delete", Route("fd01:b::1:0:0:0/80", "fd01:a::1", DEV)),
        Op("delete", Neighbour("44.128.0.1", MAC_A, DEV)),
        Op("delete", Neighbour("fd01:a::1", MAC_A, DEV)),
        Op("delete", Fdb(MAC_A, "10.0.0.1", DEV)),
    ]


def test_a_new_vtep_mac_replaces_neighbours_and_moves_the_fdb_entry() -> None:
    renewed = replace(B, vtep_mac="70:b3:d5:80:00:0b")
    ops = diff(desired_state([A, renewed], DEV), desired_state([A, B], DEV))
    assert ops == [
        Op("replace", Fdb("70:b3:d5:80:00:0b", "10.0.0.2", DEV)),
        Op("replace", Neighbour("44.128.0.2", "70:b3:d5:80:00:0b", DEV)),
        Op("delete", Fdb(MAC_B, "10.0.0.2", DEV)),
    ]


def test_duplicate_fdb_entries_beside_the_desired_one_are_deleted() -> None:
    right = Fdb(MAC_A, "10.0.0.2", DEV)
    actual = state(Fdb(MAC_A, "10.0.0.1", DEV), right, Fdb(MAC_A, "10.0.0.3", DEV))
    ops = diff(state(right), actual)
    assert ops == [
        Op("delete", Fdb(MAC_A, "10.0.0.1", DEV)),
        Op("delete", Fdb(MAC_A, "10.0.0.3", DEV)),
    ]
    assert apply_ops(actual, ops) == state(right)


def test_duplicate_fdb_entries_without_the_desired_one_leave_one_for_the_replace() -> None:
    wanted = Fdb(MAC_A, "10.0.0.9", DEV)
    actual = state(
        Fdb(MAC_A, "10.0.0.3", DEV), Fdb(MAC_A, "10.0.0.1", DEV), Fdb(MAC_A, "10.0.0.2", DEV)
    )
    ops = diff(state(wanted), actual)
    # The least (10.0.0.1) is left for the replace to overwrite; the others go first.
    assert ops == [
        Op("delete", Fdb(MAC_A, "10.0.0.2", DEV)),
        Op("delete", Fdb(MAC_A, "10.0.0.3", DEV)),
        Op("replace", wanted),
    ]
    assert apply_ops(actual, ops) == state(wanted)


def test_duplicate_neighbours_at_an_undesired_key_are_all_deleted() -> None:
    actual = state(Neighbour("44.128.0.1", MAC_A, DEV), Neighbour("44.128.0.1", MAC_B, DEV))
    assert diff(EMPTY, actual) == [
        Op("delete", Neighbour("44.128.0.1", MAC_A, DEV)),
        Op("delete", Neighbour("44.128.0.1", MAC_B, DEV)),
    ]


def test_surplus_deletes_come_before_every_replace() -> None:
    desired = state(Fdb(MAC_B, "10.0.0.2", DEV), Route("9.0.1.0/24", "44.128.0.1", DEV))
    actual = state(
        Route("9.0.1.0/24", "44.128.0.1", DEV),
        Route("9.0.1.0/24", "44.128.0.7", DEV),
        Route("9.0.9.0/24", "44.128.0.9", DEV),
    )
    assert diff(desired, actual) == [
        Op("delete", Route("9.0.1.0/24", "44.128.0.7", DEV)),
        Op("replace", Fdb(MAC_B, "10.0.0.2", DEV)),
        Op("delete", Route("9.0.9.0/24", "44.128.0.9", DEV)),
    ]


def test_a_desired_state_with_two_objects_at_one_key_is_refused() -> None:
    conflicting = state(
        Route("9.0.1.0/24", "44.128.0.1", DEV), Route("9.0.1.0/24", "44.128.0.2", DEV)
    )
    with pytest.raises(ValueError, match="two objects with one key"):
        diff(conflicting, EMPTY)


def test_apply_ops_deleting_an_absent_object_changes_nothing() -> None:
    actual = desired_state([B], DEV)
    assert apply_ops(actual, [Op("delete", Fdb(MAC_A, "10.0.0.1", DEV))]) == actual


def test_apply_ops_refuses_an_unknown_action() -> None:
    with pytest.raises(ValueError, match="unknown op action 'add'"):
        apply_ops(EMPTY, [Op("add", Fdb(MAC_A, "10.0.0.1", DEV))])


# --- properties -----------------------------------------------------------------------------------

# Small pools, so that keys collide often and the same key holds several values.
DEVS = ("vtep1024", "vtep1025")
DSTS = ("9.0.1.0/24", "9.0.2.0/24", "9.0.3.0/24", "fd01:b::1:0:0:0/80", "fd01:b::2:0:0:0/80")
GATEWAYS = ("44.128.0.1", "44.128.0.2", "fd01:a::1", "fd01:a::2")
VTEP_IPS = ("44.128.0.1", "44.128.0.2", "44.128.0.3", "fd01:a::1")
MACS = (MAC_A, MAC_B, "70:b3:d5:80:00:03")
UNDERLAY = ("10.0.0.1", "10.0.0.2", "10.0.0.3")

routes = st.builds(Route, st.sampled_from(DSTS), st.sampled_from(GATEWAYS), st.sampled_from(DEVS))
neighbours = st.builds(
    Neighbour, st.sampled_from(VTEP_IPS), st.sampled_from(MACS), st.sampled_from(DEVS)
)
fdbs = st.builds(Fdb, st.sampled_from(MACS), st.sampled_from(UNDERLAY), st.sampled_from(DEVS))


@st.composite
def state_pairs(draw: st.DrawFn) -> tuple[KernelState, KernelState]:
    """A desired state (one object per key) and an actual one that shares some of it."""
    desired = KernelState(
        frozenset(draw(st.lists(routes, max_size=5, unique_by=lambda o: o.key))),
        frozenset(draw(st.lists(neighbours, max_size=5, unique_by=lambda o: o.key))),
        frozenset(draw(st.lists(fdbs, max_size=5, unique_by=lambda o: o.key))),
    )
    kept = [draw(st.booleans()) for _ in range(desired.size())]
    shared = [o for o, keep in zip(sorted_objects(desired), kept, strict=True) if keep]
    extra = draw(st.lists(st.one_of(routes, neighbours, fdbs), max_size=8))
    return desired, state(*shared, *extra)


def sorted_objects(s: KernelState) -> list[KernelObject]:
    return [*sorted(s.routes), *sorted(s.neighbours), *sorted(s.fdb)]


def tag(obj: KernelObject) -> tuple[str, Hashable]:
    """A key that tells the kinds apart (a route's key never equals another kind's, but be sure)."""
    return (kind_of(obj), obj.key)


def by_key(s: KernelState) -> dict[tuple[str, Hashable], set[KernelObject]]:
    held: dict[tuple[str, Hashable], set[KernelObject]] = {}
    for obj in objects(s):
        held.setdefault(tag(obj), set()).add(obj)
    return held


@given(state_pairs())
def test_the_ops_reach_the_desired_state_and_then_there_is_nothing_to_do(
    pair: tuple[KernelState, KernelState],
) -> None:
    desired, actual = pair
    reached = apply_ops(actual, diff(desired, actual))
    assert reached == desired
    assert diff(desired, reached) == []


@given(state_pairs())
def test_the_ops_come_in_the_documented_order(pair: tuple[KernelState, KernelState]) -> None:
    desired, actual = pair
    wanted = {tag(o) for o in objects(desired)}

    def rank(op: Op) -> tuple[int, int]:
        kind = kind_of(op.obj)
        if op.action == "delete" and tag(op.obj) in wanted:
            return (0, ("Fdb", "Neighbour", "Route").index(kind))  # surplus at a desired key
        if op.action == "replace":
            return (1, ("Fdb", "Neighbour", "Route").index(kind))
        return (2, ("Route", "Neighbour", "Fdb").index(kind))

    ops = diff(desired, actual)
    ranks = [rank(op) for op in ops]
    assert ranks == sorted(ranks)
    for (r1, op1), (r2, op2) in pairwise(zip(ranks, ops, strict=True)):
        if r1 == r2:  # within a step and kind: by key, then value
            assert (op1.obj.key, op1.obj) < (op2.obj.key, op2.obj)
    replaced = {tag(op.obj): i for i, op in enumerate(ops) if op.action == "replace"}
    assert len(replaced) == sum(op.action == "replace" for op in ops)  # one replace per key
    for i, op in enumerate(ops):
        if op.action == "delete" and tag(op.obj) in replaced:
            assert i < replaced[tag(op.obj)]


@given(state_pairs())
def test_every_op_changes_something_and_no_desired_key_is_ever_empty(
    pair: tuple[KernelState, KernelState],
) -> None:
    desired, actual = pair
    both = set(objects(desired)) & set(objects(actual))
    kept_keys = {tag(o) for o in objects(desired)} & {tag(o) for o in objects(actual)}
    current = actual
    for op in diff(desired, actual):
        assert op.obj not in both
        if op.action == "delete":
            assert op.obj in objects(current)
        else:
            assert op.action == "replace"
            assert op.obj in objects(desired)
            assert not {o for o in objects(current) if tag(o) == tag(op.obj)} & both
            assert op.obj not in objects(current)
        current = apply_ops(current, [op])
        assert kept_keys <= set(by_key(current))  # the kernel never routes into a hole


@given(state_pairs())
def test_the_number_of_ops_is_minimal(pair: tuple[KernelState, KernelState]) -> None:
    """A delete removes one object, a replace overwrites one (the kernel's FDB replace does)."""
    desired, actual = pair
    wanted = {tag(o): o for o in objects(desired)}
    held = by_key(actual)
    expected = 0
    for key in wanted.keys() | held.keys():
        want, objs = wanted.get(key), held.get(key, set())
        expected += len(objs - {want}) if want is None or objs else 1
    assert len(diff(desired, actual)) == expected


@given(state_pairs(), st.randoms(use_true_random=False))
def test_diff_is_deterministic(pair: tuple[KernelState, KernelState], rnd: Random) -> None:
    desired, actual = pair
    shuffled = sorted_objects(actual)
    rnd.shuffle(shuffled)  # another insertion order, so (maybe) another iteration order
    assert diff(desired, state(*shuffled)) == diff(desired, actual)


@st.composite
def remote_agents(draw: st.DrawFn) -> list[RemoteAgent]:
    """Remotes with unique agent IPs, VTEP addresses and MACs (in any case)."""
    n = draw(st.integers(0, 5))
    hosts = st.lists(st.integers(1, 254), min_size=n, max_size=n, unique=True)
    ips, vteps = draw(hosts), draw(hosts)
    macs = draw(
        st.lists(
            st.binary(min_size=6, max_size=6).map(lambda b: b.hex(":")),
            min_size=n,
            max_size=n,
            unique=True,
        )
    )
    remotes = []
    for i in range(n):
        mac = macs[i].upper() if draw(st.booleans()) else macs[i]
        ip6 = draw(st.sampled_from([None, f"fd01:a::{vteps[i]:x}"]))
        subnets = draw(
            st.lists(
                st.sampled_from([f"9.{i}.1.0/24", f"9.{i}.2.0/24", f"fd01:b::{i + 1:x}:0:0:0/80"]),
                unique=True,
            )
        )
        remotes.append(
            RemoteAgent(f"10.0.0.{ips[i]}", f"44.128.0.{vteps[i]}", mac, ip6, tuple(subnets))
        )
    return remotes


@given(remote_agents(), st.integers(0, 5))
def test_desired_state_of_remotes_is_reached_from_empty_and_from_more_remotes(
    remotes: Sequence[RemoteAgent], left: int
) -> None:
    desired = desired_state(remotes, DEV)
    ops = diff(desired, EMPTY)
    assert all(op.action == "replace" for op in ops)
    assert len(ops) == desired.size()
    assert apply_ops(EMPTY, ops) == desired
    assert diff(desired, desired) == []
    fewer = desired_state(remotes[:left], DEV)
    ops = diff(fewer, desired)
    assert all(op.action == "delete" for op in ops)
    assert apply_ops(desired, ops) == fewer
