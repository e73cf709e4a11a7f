"""Serf's queries as a member answers them (sans-IO): acks, and the internal key queries that
``serf keys -list|-install|-use|-remove`` sends, run against this node's keyring.

Rules (Serf ``handleQuery`` and ``internal_query.go``):

* A query is handled once: by Lamport time and ID, within the last ``QUERY_BUFFER`` query times;
  an older one is dropped. It is rebroadcast unless its ``NoBroadcast`` flag is set.
* Filters: a node filter names the members that must handle it; a tag filter (a Go regular
  expression against a tag) is not evaluated, so such a query is passed on but not handled here
  (Python's regular expressions are not linear-time, and none of vxnet's tools send one).
* With the ``Ack`` flag, the member answers an ack. Internal queries (``_serf_`` names) also
  get a response: the key queries a ``nodeKeyResponse`` (``Result``, ``Message``, ``Keys``,
  ``PrimaryKey``), within Serf's 1,024-byte response limit. Other queries get the ack only.
* Replies go to the querier's address from the query. :class:`~._membership.Membership` sends one
  only to the address of a member it knows, so a query cannot aim the cluster's replies at a
  stranger.

A key query without a keyring is answered with Serf's refusal ("encryption not enabled"): with
no key, anyone on the network could send one, and with a key only its holders can.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgpack

from vxnet.gossip._serf_codec import encode_serf
from vxnet.gossip._serf_messages import (
    QUERY_FLAG_ACK,
    QUERY_FLAG_NO_BROADCAST,
    SerfMessageType,
    SerfQuery,
    SerfQueryResponse,
)

if TYPE_CHECKING:
    from vxnet.gossip._keyring import Keyring
    from vxnet.gossip._lamport import LamportClock

__all__ = [
    "INTERNAL_PREFIX",
    "KeyAnswer",
    "OpenQuery",
    "QueryReply",
    "QueryResponder",
    "decode_key_response",
    "key_request",
    "key_response",
]

INTERNAL_PREFIX = "_serf_"
KEY_QUERIES = ("install-key", "use-key", "remove-key", "list-keys")
QUERY_BUFFER = 512  # Serf's QueryBuffer: query times remembered for de-duplication
IDS_PER_TIME = 64  # query IDs remembered per time; beyond, a query at that time is dropped
RESPONSE_SIZE_LIMIT = 1024  # Serf's QueryResponseSizeLimit
FILTER_NODE = 0
FILTER_TAG = 1
NO_KEYRING = "No keyring to modify (encryption not enabled)"
NO_KEYS = "Keyring is empty (encryption not enabled)"
MAX_RESPONSES = 4096  # answers kept per query of ours (one per member)
MAX_LISTED_KEYS = 64  # keys taken from one member's list-keys answer


@dataclass(frozen=True, slots=True)
class QueryReply:
    """A Serf message (an ack or a response) for the querier at ``addr``:``port``."""

    addr: bytes
    port: int
    source_node: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class KeyAnswer:
    """One member's answer to a key query (Serf's ``nodeKeyResponse``)."""

    result: bool
    message: str
    keys: tuple[str, ...]
    primary: str


@dataclass(slots=True)
class OpenQuery:
    """A query this node sent: the answers gathered so far, by member name."""

    name: str
    answers: dict[str, bytes]


def key_request(key: bytes) -> bytes:
    """The payload of a key query (``messageKeyRequest``) for ``key``."""
    data: bytes = msgpack.packb({b"Key": key}, use_bin_type=False)
    return bytes([SerfMessageType.KEY_REQUEST]) + data


def key_response(
    result: bool, message: str = "", keys: tuple[str, ...] = (), primary: str = ""
) -> bytes:
    """A ``messageKeyResponse`` (Serf's ``nodeKeyResponse``)."""
    body = {
        b"Result": result,
        b"Message": message,
        b"Keys": list(keys) or None,
        b"PrimaryKey": primary,
    }
    data: bytes = msgpack.packb(body, use_bin_type=False)
    return bytes([SerfMessageType.KEY_RESPONSE]) + data


def decode_key_response(payload: bytes) -> KeyAnswer:
    """A member's answer to a key query.

    Raises:
        ValueError: ``payload`` is not a ``messageKeyResponse``; the text says why.
    """
    if not payload or payload[0] != SerfMessageType.KEY_RESPONSE:
        raise ValueError("not a key response")
    try:
        body: Any = msgpack.unpackb(payload[1:], raw=False, max_array_len=1024, max_map_len=16)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ValueError(f"not msgpack: {exc}") from None
    if not isinstance(body, Mapping):
        raise ValueError("not a map")
    result, message = body.get("Result"), body.get("Message") or ""
    keys, primary = body.get("Keys") or [], body.get("PrimaryKey") or ""
    if not isinstance(result, bool) or not isinstance(message, str):
        raise ValueError("Result must be a boolean and Message a string")
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ValueError("Keys must be a list of strings")
    if not isinstance(primary, str):
        raise ValueError("PrimaryKey must be a string")
    return KeyAnswer(result, message[:512], tuple(keys[:MAX_LISTED_KEYS]), primary)


class QueryResponder:
    """De-duplicates queries and answers them for node ``node``.

    Args:
        node: This node's name.
        clock: The query clock (:class:`~._serf_state.SerfState` owns and witnesses it).
        keyring: The keyring the key queries change (the membership core's own object, so a
            change takes effect on the next packet), or ``None`` without encryption.
    """

    __slots__ = (
        "_clock",
        "_open",
        "_replies",
        "_seen",
        "handled",
        "key_changes",
        "keyring",
        "node",
    )

    def __init__(self, node: str, clock: LamportClock, keyring: Keyring | None) -> None:
        self.node = node
        self.keyring = keyring
        self._clock = clock
        self._seen: dict[int, set[int]] = {}
        self._replies: list[QueryReply] = []
        self._open: dict[tuple[int, int], OpenQuery] = {}
        self.handled = 0  # queries handled (not dropped as seen, old or filtered out)
        self.key_changes = 0  # key queries that changed the keyring

    def take_replies(self) -> list[QueryReply]:
        out, self._replies = self._replies, []
        return out

    # --- queries of our own -------------------------------------------------------------------

    def start(
        self, name: str, payload: bytes, *, query_id: int, addr: bytes, port: int, timeout: float
    ) -> tuple[SerfQuery, bytes]:
        """Open a query of ours (Serf's ``Query``): the query and its message to broadcast.
        This node answers it too, as a Serf member answers its own; answers gather in
        :meth:`answers` until :meth:`close`."""
        query = SerfQuery(
            ltime=self._clock.time(),
            id=query_id,
            addr=addr,
            port=port,
            source_node=self.node,
            filters=(),
            flags=0,
            relay_factor=0,
            timeout_ns=int(timeout * 1e9),
            name=name,
            payload=payload,
        )
        self._clock.increment()
        self._open[(query.ltime, query.id)] = OpenQuery(name, {})
        self.handle(query)
        return query, encode_serf(query)

    def answers(self, query: SerfQuery) -> dict[str, bytes]:
        """The answers to an open query of ours so far, by member."""
        open_query = self._open.get((query.ltime, query.id))
        return {} if open_query is None else open_query.answers

    def close(self, query: SerfQuery) -> dict[str, bytes]:
        """Stop gathering answers to ``query``; the answers, by member."""
        open_query = self._open.pop((query.ltime, query.id), None)
        return {} if open_query is None else open_query.answers

    def collect(self, response: SerfQueryResponse) -> None:
        """A response to a query (acks are not gathered); one for no open query of ours is
        dropped, and a member's first answer is the one kept."""
        open_query = self._open.get((response.ltime, response.id))
        if open_query is None or response.flags & QUERY_FLAG_ACK:
            return
        if len(open_query.answers) < MAX_RESPONSES:
            open_query.answers.setdefault(response.from_node, response.payload)

    # --- queries from the network ----------------------------------------------------------------

    def handle(self, query: SerfQuery) -> bool:
        """Handle ``query`` (its time already witnessed); whether to rebroadcast it."""
        now = self._clock.time()
        if now > QUERY_BUFFER and query.ltime < now - QUERY_BUFFER:
            return False
        ids = self._seen.setdefault(query.ltime, set())
        if query.id in ids or len(ids) >= IDS_PER_TIME:
            return False
        ids.add(query.id)
        if len(self._seen) > QUERY_BUFFER:
            for ltime in [t for t in self._seen if t < now - QUERY_BUFFER] or [min(self._seen)]:
                del self._seen[ltime]
        rebroadcast = not query.flags & QUERY_FLAG_NO_BROADCAST
        if not self._selected(query.filters):
            return rebroadcast
        self.handled += 1
        if query.flags & QUERY_FLAG_ACK:
            self._reply(query, QUERY_FLAG_ACK, b"")
        name = query.name.removeprefix(INTERNAL_PREFIX)
        if query.name.startswith(INTERNAL_PREFIX) and name in KEY_QUERIES:
            self._reply(query, 0, self._key_query(name, query.payload))
        return rebroadcast

    def _selected(self, filters: tuple[bytes, ...]) -> bool:
        for raw in filters:
            if not raw or raw[0] != FILTER_NODE:
                return False  # a tag filter, or one of a kind unknown: not for us to judge
            try:
                names = msgpack.unpackb(raw[1:], raw=False, max_array_len=4096)
            except (ValueError, TypeError, msgpack.UnpackException):
                return False
            if not isinstance(names, list) or self.node not in names:
                return False
        return True

    def _reply(self, query: SerfQuery, flags: int, payload: bytes) -> None:
        response = SerfQueryResponse(query.ltime, query.id, self.node, flags, payload)
        if query.source_node == self.node:
            self.collect(response)  # our own query: no need to send it to ourselves
            return
        message = encode_serf(response)
        if len(message) <= RESPONSE_SIZE_LIMIT:
            self._replies.append(QueryReply(query.addr, query.port, query.source_node, message))

    def _key_query(self, name: str, payload: bytes) -> bytes:
        keyring = self.keyring
        if name == "list-keys":
            if keyring is None:
                return key_response(False, NO_KEYS)
            return self._key_list(keyring)
        key = _requested_key(payload)
        if key is None:
            return key_response(False, "Failed to decode key request")
        if keyring is None:
            return key_response(False, NO_KEYRING)
        before = keyring.keys
        try:
            if name == "install-key":
                keyring.add_key(key)
            elif name == "use-key":
                keyring.use_key(key)
            else:
                keyring.remove_key(key)
        except ValueError as exc:
            return key_response(False, str(exc))
        if keyring.keys != before:
            self.key_changes += 1
        return key_response(True)

    def _key_list(self, keyring: Keyring) -> bytes:
        keys = tuple(base64.b64encode(k).decode("ascii") for k in keyring.keys)
        primary = base64.b64encode(keyring.primary_key).decode("ascii")
        message = ""
        for shown in range(len(keys), -1, -1):  # Serf truncates a list that does not fit
            out = key_response(True, message, keys[:shown], primary)
            if len(out) + 64 <= RESPONSE_SIZE_LIMIT:  # 64: the query response around it
                return out
            message = f"truncated key list response, showing first {shown - 1} of {len(keys)} keys"
        return key_response(False, "the key list does not fit a response")


def _requested_key(payload: bytes) -> bytes | None:
    if not payload or payload[0] != SerfMessageType.KEY_REQUEST:
        return None
    try:
        body: Any = msgpack.unpackb(payload[1:], raw=True, max_map_len=16)
    except (ValueError, TypeError, msgpack.UnpackException):
        return None
    if not isinstance(body, Mapping):
        return None
    key = body.get(b"Key")
    return key if isinstance(key, bytes) else None
