"""Reconciling the kernel objects towards remote agents: desired against actual state (sans-IO).

:func:`diff` says which :class:`~._model.Op` take the actual objects to the desired ones, and
:func:`apply_ops` is the model of what the kernel does with them. Both are pure and
deterministic: the same states give the same ops, in the same order.

Rules:

Matching
  Objects are matched by their ``key`` (a route by ``(family, dst)``, a neighbour by
  ``(dev, ip)``, an FDB entry by ``(dev, mac)``) and compared by value. The desired state holds at
  most one object per key (:func:`diff` refuses one that holds more: two remotes claiming the same
  subnet, VTEP address or VTEP MAC are a conflict to settle before the kernel is touched).

One object at a key
  A desired object whose key is absent, or present with another value (another gateway, MAC or
  underlay address), is *replaced*: one ``replace``, never a delete followed by an add, so the key
  is never empty in between. A desired object that is already there is left alone: no op at all,
  which is what lets an agent restart without dropping traffic. An actual object at a key that is
  not desired is deleted.

Several objects at a key
  The kernel may hold several objects at one key: a vxlan FDB entry may have several remote
  destinations for one MAC, and routes of another metric share a destination. If one of them is
  the desired object it is kept and the others are deleted (by value). If none is, all but one
  (the least) are deleted first and then the desired object replaces the one left. The deletes go
  first because the kernel's replace of an FDB entry (``NLM_F_REPLACE``) overwrites only its first
  destination: replacing first could overwrite the very destination deleted next and leave a stale
  one behind. After the deletes exactly one object is left, so the replace is exact in the kernel
  and in the model alike.

Order (the kernel never routes into a hole)
  1. The deletes of surplus objects at desired keys (FDB, then neighbours, then routes); each
     leaves another object at its key.
  2. The replaces: FDB entries first (where a VTEP MAC lives on the underlay), then neighbours
     (VTEP IP to VTEP MAC), then routes (subnet via VTEP IP), so a route only ever points at a
     neighbour, and a neighbour at a MAC, that is already there.
  3. The deletes at keys no longer desired, in the reverse order: routes, then neighbours, then
     FDB entries, so nothing still in use loses what it points at.

  Within each step and kind, ops are sorted by key, then by value.

The model
  :func:`apply_ops` applies ``replace`` as "remove every object at the key, then add the object"
  and ``delete`` as "remove exactly this object"; deleting an object that is not there changes
  nothing (the kernel answers ``ENOENT``, and the object is gone either way). Hence
  ``apply_ops(actual, diff(desired, actual)) == desired``, and the diff of the result is empty.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from vxnet.overlay._model import Fdb, KernelState, Neighbour, Op, Route

if TYPE_CHECKING:
    from collections.abc import Hashable, Iterable, Sequence

__all__ = ["apply_ops", "compare", "diff"]

_Obj = TypeVar("_Obj", Route, Neighbour, Fdb)


def diff(desired: KernelState, actual: KernelState) -> list[Op]:
    """The ops that take ``actual`` to ``desired``, in the order they are to be carried out.

    Args:
        desired: What the agent wants; at most one object per key.
        actual: What the kernel holds (only objects vxnet owns); may hold several objects per key.

    Returns:
        The ops (see the module's rules); empty when ``actual`` is already ``desired``.

    Raises:
        ValueError: ``desired`` holds two objects with the same key.
    """
    fdb = _diff_kind(desired.fdb, actual.fdb)
    neighbours = _diff_kind(desired.neighbours, actual.neighbours)
    routes = _diff_kind(desired.routes, actual.routes)
    ops: list[Op] = []
    for surplus in (fdb[0], neighbours[0], routes[0]):
        ops.extend(Op("delete", obj) for obj in surplus)
    for replaces in (fdb[1], neighbours[1], routes[1]):
        ops.extend(Op("replace", obj) for obj in replaces)
    for deletes in (routes[2], neighbours[2], fdb[2]):
        ops.extend(Op("delete", obj) for obj in deletes)
    return ops


def compare(desired: KernelState, actual: KernelState) -> list[dict[str, str]]:
    """Every desired or actual object with how it stands, for people (``vxnet overlay status``).

    Each entry has ``kind`` (route, neighbour, fdb), ``object`` (as ``ip`` would print it) and
    ``state``: ``ok`` (programmed as desired), ``missing`` (desired, not programmed),
    ``different`` (programmed at the key with another value; the desired value is shown) or
    ``extra`` (programmed, not desired: removed at the next reconcile). Sorted by kind and key.
    """
    entries: list[tuple[int, tuple[object, ...], dict[str, str]]] = []
    kinds: tuple[tuple[str, frozenset[Any], frozenset[Any]], ...] = (
        ("route", desired.routes, actual.routes),
        ("neighbour", desired.neighbours, actual.neighbours),
        ("fdb", desired.fdb, actual.fdb),
    )
    for rank, (kind, want, have) in enumerate(kinds):
        held_keys = {o.key for o in have}
        for obj in want:
            state = "ok" if obj in have else "different" if obj.key in held_keys else "missing"
            entries.append(
                (rank, (obj.key, 0), {"kind": kind, "object": _show(obj), "state": state})
            )
        wanted_keys = {o.key for o in want}
        for obj in have:
            if obj not in want and obj.key not in wanted_keys:
                entries.append(
                    (rank, (obj.key, 1), {"kind": kind, "object": _show(obj), "state": "extra"})
                )
    entries.sort(key=lambda e: (e[0], str(e[1])))
    return [e[2] for e in entries]


def _show(obj: Route | Neighbour | Fdb) -> str:
    if isinstance(obj, Route):
        return f"{obj.dst} via {obj.gateway} dev {obj.dev} onlink"
    if isinstance(obj, Neighbour):
        return f"{obj.ip} lladdr {obj.mac} dev {obj.dev} permanent"
    return f"{obj.mac} dst {obj.dst} dev {obj.dev} self permanent"


def apply_ops(state: KernelState, ops: Sequence[Op]) -> KernelState:
    """The state the kernel is left in after carrying out ``ops`` on ``state``, in order.

    Args:
        state: The objects before.
        ops: ``replace`` removes every object at the object's key (of its kind) and adds the
            object; ``delete`` removes exactly the object, if it is there.

    Returns:
        The objects after.

    Raises:
        ValueError: An op's action is neither ``"replace"`` nor ``"delete"``.
    """
    routes = set(state.routes)
    neighbours = set(state.neighbours)
    fdb = set(state.fdb)
    for op in ops:
        if op.action not in ("replace", "delete"):
            raise ValueError(f"unknown op action {op.action!r}")
        obj = op.obj
        if isinstance(obj, Route):
            _apply(routes, op.action, obj)
        elif isinstance(obj, Neighbour):
            _apply(neighbours, op.action, obj)
        else:
            _apply(fdb, op.action, obj)
    return KernelState(frozenset(routes), frozenset(neighbours), frozenset(fdb))


def _apply(objs: set[_Obj], action: str, obj: _Obj) -> None:
    if action == "replace":
        key = obj.key
        objs.difference_update([o for o in objs if o.key == key])
        objs.add(obj)
    else:
        objs.discard(obj)


def _diff_kind(
    desired: Iterable[_Obj], actual: Iterable[_Obj]
) -> tuple[list[_Obj], list[_Obj], list[_Obj]]:
    """One kind's surplus deletes, replaces and deletes at undesired keys, each sorted."""
    wanted: dict[Hashable, _Obj] = {}
    for obj in desired:
        other = wanted.setdefault(obj.key, obj)
        if other != obj:
            first, second = sorted((other, obj))
            raise ValueError(f"desired state has two objects with one key: {first} and {second}")
    held: dict[Hashable, list[_Obj]] = {}
    for obj in actual:
        held.setdefault(obj.key, []).append(obj)
    surplus: list[_Obj] = []
    replaces: list[_Obj] = []
    deletes: list[_Obj] = []
    for key, objs in held.items():
        want = wanted.get(key)
        if want is None:
            deletes.extend(objs)
        elif want in objs:
            surplus.extend(o for o in objs if o != want)
        else:
            surplus.extend(sorted(objs)[1:])  # the least is left for the replace to overwrite
    replaces.extend(obj for key, obj in wanted.items() if obj not in held.get(key, ()))
    return _sorted(surplus), _sorted(replaces), _sorted(deletes)


def _sorted(objs: list[_Obj]) -> list[_Obj]:
    return sorted(objs, key=lambda o: (o.key, o))
