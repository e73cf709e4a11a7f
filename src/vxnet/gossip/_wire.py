"""The memberlist 0.2 wire format (what Serf 0.9 speaks), as pure functions and a sans-IO decoder.

Rules (memberlist ``net.go``, ``util.go``, ``security.go``):

* A message is one type byte (:class:`MessageType`) then a msgpack map whose keys are the Go field
  names, written as go-msgpack does: keys sorted by name, strings and byte slices both as old-spec
  *raw* (no ``bin``, no ``str8``), a nil byte slice as ``nil``, integers in their shortest form.
  Ping and indirect ping leave ``SourceAddr``, ``SourcePort`` and ``SourceNode`` out when empty.
  We decode either raw or bin/str, treat ``nil`` as the zero value, skip unknown keys and ignore
  bytes after the map, as go-msgpack does. A user message is ``8`` then its payload, unframed.
* Packets (UDP), from the outside in: encryption with the primary key (no additional data), then an
  optional CRC wrapper ``12 | crc32-IEEE(rest), big-endian | rest`` (memberlist sends it to peers
  whose protocol max is 5 or more), then an optional ``9 | {Algo: 0, Buf: lzw}`` compression
  wrapper (used only when smaller), then either one message or a compound
  ``7 | count (u8) | length (u16 BE) * count | bodies``. Compounds and compression may nest.
  A compound whose bodies are cut short still yields its complete parts (memberlist logs and
  handles those).
* Streams (TCP) carry one message per direction: ping (``0``), ack (``2``) and error (``13``) as
  above; user ``8 | {UserMsgLen} | payload``; push-pull ``6 | {Join, Nodes, UserStateLen} |
  pushNodeState * Nodes | user state bytes``. Serf compresses the whole of it (``9 | {Algo,
  Buf}``), and with a keyring encrypts that as ``10 | length (u32 BE) | payload``, the 5-byte
  header being the additional authenticated data. An unencrypted, uncompressed stream has no outer
  length, so it is decoded as it arrives.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Generator, Sequence
from typing import Any, Final, TypeVar

import msgpack

from ._errors import WireError
from ._keyring import Keyring, encrypted_length
from ._lzw import lzw_compress, lzw_decompress
from ._messages import (
    Ack,
    Alive,
    Dead,
    ErrorResponse,
    IndirectPing,
    Message,
    MessageType,
    Nack,
    NodeStatus,
    Ping,
    PushNodeState,
    PushPull,
    Suspect,
    User,
)

__all__ = [
    "MAX_COMPOUND_PARTS",
    "MAX_PACKET_SIZE",
    "MAX_STREAM_SIZE",
    "PartialPacketError",
    "StreamDecoder",
    "StreamMessage",
    "WireError",
    "compress_payload",
    "decode_message",
    "decode_packet",
    "encode_message",
    "encode_packet",
    "encode_stream",
    "make_compound",
    "split_compound",
]

StreamMessage = PushPull | Ping | Ack | User | ErrorResponse

MAX_PACKET_SIZE: Final = 65536
MAX_STREAM_SIZE: Final = 20 * 1024 * 1024  # memberlist's maxPushStateBytes
MAX_COMPOUND_PARTS: Final = 255
MAX_NESTING: Final = 8  # compound/compress wrappers inside one packet (memberlist uses at most 2)
_LZW_ALGO: Final = 0
_Accusation = TypeVar("_Accusation", Suspect, Dead)
_MAX_MAP_LEN: Final = 64  # our maps have at most 8 keys; bounds what a hostile header allocates
_MAX_ARRAY_LEN: Final = 256  # only Vsn may arrive as an array (6 entries)

# ----------------------------------------------------------------------------------- encoding


def _raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _nil_if_empty(data: bytes) -> bytes | None:
    return bytes(data) if data else None  # Go writes a nil slice as msgpack nil


def _check_uint(value: int, bits: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << bits:
        raise ValueError(f"{name} must be an integer in [0, 2**{bits}), not {value!r}")
    return value


def _pack_map(fields: dict[str, Any]) -> bytes:
    packed: bytes = msgpack.packb(dict(sorted(fields.items())), use_bin_type=False)
    return packed


def _ping_fields(msg: Ping | IndirectPing) -> dict[str, Any]:
    fields: dict[str, Any] = {"SeqNo": _check_uint(msg.seq_no, 32, "SeqNo"), "Node": _raw(msg.node)}
    if msg.source_addr:
        fields["SourceAddr"] = bytes(msg.source_addr)
    if msg.source_port:
        fields["SourcePort"] = _check_uint(msg.source_port, 16, "SourcePort")
    if msg.source_node:
        fields["SourceNode"] = _raw(msg.source_node)
    return fields


def _message_fields(msg: Message) -> tuple[MessageType, dict[str, Any]]:
    match msg:
        case Ping():
            return MessageType.PING, _ping_fields(msg)
        case IndirectPing():
            fields = _ping_fields(msg)
            fields["Target"] = _nil_if_empty(msg.target)
            fields["Port"] = _check_uint(msg.port, 16, "Port")
            fields["Nack"] = bool(msg.nack)
            return MessageType.INDIRECT_PING, fields
        case Ack():
            seq = _check_uint(msg.seq_no, 32, "SeqNo")
            return MessageType.ACK, {"SeqNo": seq, "Payload": _nil_if_empty(msg.payload)}
        case Nack():
            return MessageType.NACK, {"SeqNo": _check_uint(msg.seq_no, 32, "SeqNo")}
        case ErrorResponse():
            return MessageType.ERROR, {"Error": _raw(msg.error)}
        case Suspect() | Dead():
            kind = MessageType.SUSPECT if isinstance(msg, Suspect) else MessageType.DEAD
            return kind, {
                "Incarnation": _check_uint(msg.incarnation, 32, "Incarnation"),
                "Node": _raw(msg.node),
                "From": _raw(msg.from_node),
            }
        case Alive():
            return MessageType.ALIVE, {
                "Incarnation": _check_uint(msg.incarnation, 32, "Incarnation"),
                "Node": _raw(msg.node),
                "Addr": _nil_if_empty(msg.addr),
                "Port": _check_uint(msg.port, 16, "Port"),
                "Meta": _nil_if_empty(msg.meta),
                "Vsn": _nil_if_empty(msg.vsn),
            }
    raise TypeError(f"not a memberlist packet message: {msg!r}")


def encode_message(msg: Message) -> bytes:
    """Encode one message as its type byte and msgpack body (a user message: its payload).

    Raises:
        ValueError: If a numeric field does not fit its Go type.
    """
    if isinstance(msg, User):
        return bytes((MessageType.USER,)) + bytes(msg.payload)
    kind, fields = _message_fields(msg)
    return bytes((kind,)) + _pack_map(fields)


def make_compound(parts: Sequence[bytes]) -> bytes:
    """Pack encoded messages into one compound message.

    Raises:
        ValueError: If there are more than 255 parts or a part is longer than 65535 bytes.
    """
    if len(parts) > MAX_COMPOUND_PARTS:
        raise ValueError(f"a compound message holds at most 255 parts, not {len(parts)}")
    head = bytearray((MessageType.COMPOUND, len(parts)))
    for i, part in enumerate(parts):
        if len(part) > 0xFFFF:
            raise ValueError(f"compound part {i} is {len(part)} bytes, more than 65535")
        head += struct.pack(">H", len(part))
    return bytes(head) + b"".join(parts)


def compress_payload(data: bytes) -> bytes:
    """Wrap ``data`` in a compress message (type 9, ``{Algo: 0, Buf: lzw(data)}``)."""
    return bytes((MessageType.COMPRESS,)) + _pack_map(
        {"Algo": _LZW_ALGO, "Buf": lzw_compress(data)}
    )


def encode_packet(
    parts: Sequence[bytes], *, keyring: Keyring | None, crc: bool, compress: bool = False
) -> bytes:
    """Build one UDP payload from already-encoded messages, as memberlist's rawSendMsgPacket does.

    Args:
        parts: Encoded messages (:func:`encode_message`); one is sent bare, several as a compound.
        keyring: Encrypt with its primary key when given.
        crc: Add the CRC wrapper (memberlist does for peers whose protocol max is 5 or more).
        compress: Compress, when that makes the packet smaller.

    Raises:
        ValueError: If ``parts`` is empty or does not fit a compound message.
    """
    if not parts:
        raise ValueError("a packet needs at least one message")
    msg = bytes(parts[0]) if len(parts) == 1 else make_compound(parts)
    if compress:
        packed = compress_payload(msg)
        if len(packed) < len(msg):
            msg = packed
    if crc:
        msg = bytes((MessageType.HAS_CRC,)) + struct.pack(">I", zlib.crc32(msg)) + msg
    if keyring is not None:
        msg = keyring.encrypt(msg)
    return msg


def _stream_body(msg: StreamMessage) -> bytes:
    match msg:
        case PushPull():
            out = bytearray((MessageType.PUSH_PULL,))
            out += _pack_map(
                {"Nodes": len(msg.nodes), "UserStateLen": len(msg.user_state), "Join": msg.join}
            )
            for node in msg.nodes:
                out += _pack_map(
                    {
                        "Name": _raw(node.name),
                        "Addr": _nil_if_empty(node.addr),
                        "Port": _check_uint(node.port, 16, "Port"),
                        "Meta": _nil_if_empty(node.meta),
                        "Incarnation": _check_uint(node.incarnation, 32, "Incarnation"),
                        "State": int(node.state),
                        "Vsn": _nil_if_empty(node.vsn),
                    }
                )
            out += msg.user_state
            return bytes(out)
        case User():
            header = _pack_map({"UserMsgLen": len(msg.payload)})
            return bytes((MessageType.USER,)) + header + bytes(msg.payload)
        case Ping() | Ack() | ErrorResponse():
            return encode_message(msg)
    raise TypeError(f"not a memberlist stream message: {msg!r}")


def encode_stream(msg: StreamMessage, *, keyring: Keyring | None, compress: bool) -> bytes:
    """Encode everything one side writes on a stream, as memberlist's rawSendMsgStream does.

    Args:
        msg: A push-pull, user message, ping, ack or error response.
        keyring: Encrypt with its primary key (``10 | length | payload``) when given.
        compress: Compress the whole message (Serf always does; memberlist then does not check
            whether it got smaller).
    """
    body = _stream_body(msg)
    if compress:
        body = compress_payload(body)
    if keyring is None:
        return body
    header = bytes((MessageType.ENCRYPT,)) + struct.pack(">I", encrypted_length(len(body)))
    return header + keyring.encrypt(body, aad=header)


# ----------------------------------------------------------------------------------- decoding


def _unpacker(max_buffer_size: int = 0) -> Any:
    return msgpack.Unpacker(
        raw=True,
        max_buffer_size=max_buffer_size,
        max_map_len=_MAX_MAP_LEN,
        max_array_len=_MAX_ARRAY_LEN,
    )


def _type_name(value: object) -> str:
    return "nil" if value is None else type(value).__name__


class _Fields:
    """A decoded msgpack map, read field by field as go-msgpack fills a Go struct."""

    __slots__ = ("_map", "what")

    def __init__(self, obj: object, what: str) -> None:
        if not isinstance(obj, dict):
            raise WireError(f"{what}: expected a msgpack map, got {_type_name(obj)}")
        self._map: dict[object, object] = obj
        self.what = what

    def _get(self, name: str) -> object:
        return self._map.get(name.encode())

    def get_uint(self, name: str, bits: int) -> int:
        value = self._get(name)
        if value is None:
            return 0
        if isinstance(value, bool) or not isinstance(value, int):
            raise WireError(f"{self.what}: {name} is a {_type_name(value)}, not an integer")
        if not 0 <= value < 1 << bits:
            raise WireError(f"{self.what}: {name} {value} does not fit {bits} unsigned bits")
        return value

    def get_int(self, name: str, limit: int) -> int:
        value = self.get_uint(name, 64)
        if value > limit:
            raise WireError(f"{self.what}: {name} {value} is over the limit of {limit}")
        return value

    def get_bytes(self, name: str) -> bytes:
        value = self._get(name)
        if value is None:
            return b""
        if isinstance(value, bytes):
            return value
        if isinstance(value, list) and all(
            isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= 255 for x in value
        ):
            return bytes(value)  # a []uint8 written as an array of numbers
        raise WireError(f"{self.what}: {name} is a {_type_name(value)}, not a byte string")

    def get_str(self, name: str) -> str:
        value = self._get(name)
        if value is None:
            return ""
        if not isinstance(value, bytes):
            raise WireError(f"{self.what}: {name} is a {_type_name(value)}, not a string")
        return value.decode("utf-8", "surrogateescape")

    def get_bool(self, name: str) -> bool:
        value = self._get(name)
        if value is None:
            return False
        if not isinstance(value, bool):
            raise WireError(f"{self.what}: {name} is a {_type_name(value)}, not a boolean")
        return value


def _unpack_one(body: bytes, what: str) -> object:
    """Decode the first msgpack object of ``body``, ignoring what follows (as go-msgpack does)."""
    unpacker = _unpacker()
    unpacker.feed(body)
    try:
        return unpacker.unpack()
    except msgpack.OutOfData:
        raise WireError(f"{what}: msgpack body truncated ({len(body)} bytes)") from None
    except (ValueError, TypeError, msgpack.UnpackException) as e:
        raise WireError(f"{what}: malformed msgpack body: {e}") from e


def _ping_from(f: _Fields) -> Ping:
    return Ping(
        seq_no=f.get_uint("SeqNo", 32),
        node=f.get_str("Node"),
        source_addr=f.get_bytes("SourceAddr"),
        source_port=f.get_uint("SourcePort", 16),
        source_node=f.get_str("SourceNode"),
    )


def _indirect_ping_from(f: _Fields) -> IndirectPing:
    return IndirectPing(
        seq_no=f.get_uint("SeqNo", 32),
        target=f.get_bytes("Target"),
        port=f.get_uint("Port", 16),
        node=f.get_str("Node"),
        nack=f.get_bool("Nack"),
        source_addr=f.get_bytes("SourceAddr"),
        source_port=f.get_uint("SourcePort", 16),
        source_node=f.get_str("SourceNode"),
    )


def _ack_from(f: _Fields) -> Ack:
    return Ack(seq_no=f.get_uint("SeqNo", 32), payload=f.get_bytes("Payload"))


def _nack_from(f: _Fields) -> Nack:
    return Nack(seq_no=f.get_uint("SeqNo", 32))


def _error_from(f: _Fields) -> ErrorResponse:
    return ErrorResponse(error=f.get_str("Error"))


def _accusation_from(kind: type[_Accusation]) -> Callable[[_Fields], _Accusation]:
    """The decoder of a Suspect or a Dead message (the same fields)."""

    def decode(f: _Fields) -> _Accusation:
        return kind(
            incarnation=f.get_uint("Incarnation", 32),
            node=f.get_str("Node"),
            from_node=f.get_str("From"),
        )

    return decode


def _alive_from(f: _Fields) -> Alive:
    return Alive(
        incarnation=f.get_uint("Incarnation", 32),
        node=f.get_str("Node"),
        addr=f.get_bytes("Addr"),
        port=f.get_uint("Port", 16),
        meta=f.get_bytes("Meta"),
        vsn=f.get_bytes("Vsn"),
    )


def _node_state_from(f: _Fields) -> PushNodeState:
    state = f.get_uint("State", 64)
    if state > max(NodeStatus):
        raise WireError(f"{f.what}: unknown node State {state}")
    return PushNodeState(
        name=f.get_str("Name"),
        addr=f.get_bytes("Addr"),
        port=f.get_uint("Port", 16),
        meta=f.get_bytes("Meta"),
        incarnation=f.get_uint("Incarnation", 32),
        state=NodeStatus(state),
        vsn=f.get_bytes("Vsn"),
    )


_MSGPACK_DECODERS: dict[int, tuple[str, Callable[[_Fields], Message]]] = {
    MessageType.PING: ("ping", _ping_from),
    MessageType.INDIRECT_PING: ("indirect ping", _indirect_ping_from),
    MessageType.ACK: ("ack", _ack_from),
    MessageType.NACK: ("nack", _nack_from),
    MessageType.ERROR: ("error response", _error_from),
    MessageType.SUSPECT: ("suspect", _accusation_from(Suspect)),
    MessageType.ALIVE: ("alive", _alive_from),
    MessageType.DEAD: ("dead", _accusation_from(Dead)),
}
_WRAPPERS = {
    MessageType.COMPOUND: "compound",
    MessageType.COMPRESS: "compress",
    MessageType.ENCRYPT: "encrypt",
    MessageType.HAS_CRC: "CRC",
}


def decode_message(data: bytes) -> Message:
    """Decode one message (type byte and body), as found in a packet or a compound part.

    Raises:
        WireError: If the message is empty, of an unknown type, a wrapper or push-pull (those have
            their own decoders), or its body is malformed.
    """
    if not data:
        raise WireError("empty message: no type byte")
    kind = data[0]
    if kind == MessageType.USER:
        return User(payload=bytes(data[1:]))
    entry = _MSGPACK_DECODERS.get(kind)
    if entry is None:
        if kind in _WRAPPERS:
            raise WireError(f"{_WRAPPERS[MessageType(kind)]} wrapper where a message was expected")
        if kind == MessageType.PUSH_PULL:
            raise WireError("push-pull message in a packet (it is only valid on a stream)")
        raise WireError(f"unknown message type {kind}")
    what, build = entry
    return build(_Fields(_unpack_one(data[1:], what), what))


def split_compound(body: bytes) -> tuple[list[bytes], WireError | None]:
    """Split the body of a compound message (after its type byte) into its parts.

    Returns:
        The complete parts, and an error describing the parts cut short (None if there were none),
        since memberlist handles the complete ones of a truncated compound.

    Raises:
        WireError: If the count or the length table is cut short.
    """
    if not body:
        raise WireError("compound message: missing the part count byte")
    count = body[0]
    table_end = 1 + 2 * count
    if len(body) < table_end:
        raise WireError(
            f"compound message: {count} parts declared, header truncated at byte {len(body) + 1}"
        )
    lengths = struct.unpack_from(f">{count}H", body, 1)
    parts: list[bytes] = []
    pos = table_end
    for i, length in enumerate(lengths):
        if pos + length > len(body):
            return parts, WireError(
                f"compound message: {count} parts declared, part {i + 1} needs {length} bytes "
                f"but only {len(body) - pos} remain; {count - i} parts truncated"
            )
        parts.append(bytes(body[pos : pos + length]))
        pos += length
    return parts, None


class PartialPacketError(WireError):
    """Some messages of a packet decoded and others did not.

    memberlist handles the good parts of such a packet (a truncated compound, a bad part) and logs
    the rest; a driver may do the same with :attr:`messages`.
    """

    def __init__(self, messages: list[Message], errors: list[WireError]) -> None:
        detail = "; ".join(str(e) for e in errors)
        super().__init__(
            f"{len(errors)} problem(s) in packet, {len(messages)} messages kept: {detail}"
        )
        self.messages = messages
        self.errors = errors


def _decode_command(
    data: bytes, depth: int, max_size: int, out: list[Message], errors: list[WireError]
) -> None:
    if depth > MAX_NESTING:
        raise WireError(f"packet nests wrappers more than {MAX_NESTING} deep")
    if not data:
        raise WireError("empty message: no type byte")
    kind = data[0]
    if kind == MessageType.COMPOUND:
        parts, truncated = split_compound(data[1:])
        for part in parts:
            try:
                _decode_command(part, depth + 1, max_size, out, errors)
            except WireError as e:
                errors.append(e)
        if truncated is not None:
            errors.append(truncated)
    elif kind == MessageType.COMPRESS:
        _decode_command(_decompress(data[1:], max_size), depth + 1, max_size, out, errors)
    else:
        out.append(decode_message(data))


def _decompress(body: bytes, max_output: int) -> bytes:
    f = _Fields(_unpack_one(body, "compress"), "compress")
    algo = f.get_uint("Algo", 8)
    if algo != _LZW_ALGO:
        raise WireError(f"compress: unknown algorithm {algo}")
    return lzw_decompress(f.get_bytes("Buf"), max_output=max_output)


def decode_packet(
    data: bytes, *, keyring: Keyring | None, max_size: int = MAX_PACKET_SIZE
) -> list[Message]:
    """Decode everything a memberlist or Serf peer may put in one UDP payload.

    Args:
        data: The datagram.
        keyring: When given, the packet must be encrypted with one of its keys.
        max_size: The largest datagram, and the largest decompressed payload, accepted.

    Raises:
        PartialPacketError: If some messages decoded and others did not (they are attached).
        WireError: If nothing in the packet could be decoded.
    """
    if len(data) > max_size:
        raise WireError(f"packet of {len(data)} bytes is over the limit of {max_size}")
    buf = bytes(data)
    if keyring is not None:
        try:
            buf = keyring.decrypt(data)
        except WireError as e:
            raise WireError(f"cannot decrypt packet of {len(data)} bytes: {e}") from e
    if buf and buf[0] == MessageType.HAS_CRC:
        if len(buf) < 5:
            raise WireError(f"CRC wrapper truncated: {len(buf)} bytes")
        (expected,) = struct.unpack_from(">I", buf, 1)
        actual = zlib.crc32(buf[5:])
        if actual != expected:
            raise WireError(f"CRC mismatch: packet says {expected:08x}, content has {actual:08x}")
        buf = buf[5:]
    messages: list[Message] = []
    errors: list[WireError] = []
    _decode_command(buf, 0, max_size, messages, errors)
    if errors:
        if not messages and len(errors) == 1:
            raise errors[0]
        raise PartialPacketError(messages, errors)
    return messages


# ----------------------------------------------------------------------------------- streams

_Step = Generator[None, None, Any]


class _Reader:
    """Bytes and msgpack objects read from a growing buffer; a generator yields to wait for more."""

    __slots__ = ("_unpacker", "fed", "limit")

    def __init__(self, limit: int) -> None:
        self._unpacker = _unpacker(max_buffer_size=limit + 16)
        self.fed = 0
        self.limit = limit

    def feed(self, data: bytes) -> None:
        try:
            self._unpacker.feed(data)
        except msgpack.BufferFull:
            raise WireError(f"stream: more than {self.limit} bytes buffered") from None
        self.fed += len(data)

    @property
    def position(self) -> int:
        pos: int = self._unpacker.tell()
        return pos

    def object(self, what: str) -> _Step:
        while True:
            try:
                return self._unpacker.unpack()
            except msgpack.OutOfData:
                yield
            except (ValueError, TypeError, msgpack.UnpackException) as e:
                raise WireError(f"{what}: malformed msgpack: {e}") from e

    def raw(self, n: int) -> _Step:
        chunks = bytearray()
        while len(chunks) < n:
            got = self._unpacker.read_bytes(n - len(chunks))
            if got:
                chunks += got
            else:
                yield
        return bytes(chunks)


class StreamDecoder:
    """Decodes what a memberlist peer writes on a stream, as the bytes arrive (sans-IO).

    Args:
        keyring: When given, the stream must be encrypted with one of its keys; when None, an
            encrypted stream is refused.
        max_size: The most bytes one message may take (encrypted length, decompressed size or raw
            stream), 20 MiB as memberlist's ``maxPushStateBytes``.
        max_nodes: The most node states one push-pull may declare.

    Messages come out in order with :meth:`next_message`; after a decoding error the decoder
    keeps raising it.
    """

    def __init__(
        self,
        *,
        keyring: Keyring | None = None,
        max_size: int = MAX_STREAM_SIZE,
        max_nodes: int = 100_000,
    ) -> None:
        self._keyring = keyring
        self._max_size = max_size
        self._max_nodes = max_nodes
        self._reader = _Reader(max_size)
        self._step: _Step | None = None
        self._start = 0
        self._where = "between messages"
        self._error: WireError | None = None

    def feed(self, data: bytes) -> None:
        """Add bytes received from the peer.

        Raises:
            WireError: If more than ``max_size`` bytes are waiting to be decoded.
        """
        if self._error is not None:
            raise self._error
        try:
            self._reader.feed(data)
        except WireError as e:
            self._error = e
            raise

    def next_message(self) -> StreamMessage | None:
        """Return the next complete message, or None until more bytes arrive.

        Raises:
            WireError: If the bytes received are not a valid memberlist stream.
        """
        if self._error is not None:
            raise self._error
        reader = self._reader
        if self._step is None:
            if reader.fed == reader.position:
                return None
            self._start = reader.position
            self._step = self._message(reader, outer=True)
        try:
            next(self._step)
        except StopIteration as done:
            self._step = None
            self._where = "between messages"
            msg: StreamMessage = done.value
            return msg
        except WireError as e:
            self._error = e
            raise
        if reader.position - self._start > self._max_size:
            self._error = WireError(f"stream message is over the limit of {self._max_size} bytes")
            raise self._error
        return None

    def eof(self) -> None:
        """Tell the decoder the peer closed its side.

        Raises:
            WireError: If a message was cut off.
        """
        if self._error is not None:
            raise self._error
        if self._step is not None or self._reader.fed != self._reader.position:
            self._error = WireError(f"stream closed in the middle of a message ({self._where})")
            raise self._error

    def _inner(self, data: bytes, *, allow_compress: bool, what: str) -> StreamMessage:
        """Decode one message from a complete buffer (decrypted or decompressed)."""
        reader = _Reader(max(len(data), 1))
        reader.feed(data)
        step = self._message(reader, outer=False, allow_compress=allow_compress)
        try:
            next(step)
        except StopIteration as done:
            msg: StreamMessage = done.value
            return msg
        raise WireError(f"{what} ends in the middle of a message ({self._where})")

    def _message(
        self, r: _Reader, *, outer: bool, allow_compress: bool = True
    ) -> Generator[None, None, StreamMessage]:
        self._where = "reading the message type"
        kind = (yield from r.raw(1))[0]
        if outer and kind == MessageType.ENCRYPT:
            if self._keyring is None:
                raise WireError("stream is encrypted but no keyring is configured")
            self._where = "reading the encrypted length"
            header = bytes((kind,)) + (yield from r.raw(4))
            (length,) = struct.unpack_from(">I", header, 1)
            if length > self._max_size:
                raise WireError(
                    f"encrypted stream of {length} bytes is over the limit of {self._max_size}"
                )
            self._where = f"reading {length} encrypted bytes"
            payload = yield from r.raw(length)
            plain = self._keyring.decrypt(payload, aad=header)
            return self._inner(plain, allow_compress=True, what="decrypted stream")
        if outer and self._keyring is not None:
            raise WireError("a keyring is configured but the stream is not encrypted")
        if kind == MessageType.COMPRESS and allow_compress:
            self._where = "reading a compress message"
            f = _Fields((yield from r.object("compress")), "compress")
            algo = f.get_uint("Algo", 8)
            if algo != _LZW_ALGO:
                raise WireError(f"compress: unknown algorithm {algo}")
            data = lzw_decompress(f.get_bytes("Buf"), max_output=self._max_size)
            return self._inner(data, allow_compress=False, what="decompressed stream")
        if kind == MessageType.PUSH_PULL:
            return (yield from self._push_pull(r))
        if kind == MessageType.USER:
            self._where = "reading a user message header"
            f = _Fields((yield from r.object("user message header")), "user message header")
            length = f.get_int("UserMsgLen", self._max_size)
            self._where = f"reading a {length}-byte user message"
            return User(payload=(yield from r.raw(length)))
        decoder: Callable[[_Fields], Message]
        if kind == MessageType.PING:
            what, decoder = "ping", _ping_from
        elif kind == MessageType.ACK:
            what, decoder = "ack", _ack_from
        elif kind == MessageType.ERROR:
            what, decoder = "error response", _error_from
        else:
            raise WireError(f"message type {kind} is not valid on a stream")
        self._where = f"reading a {what}"
        msg = decoder(_Fields((yield from r.object(what)), what))
        assert isinstance(msg, Ping | Ack | ErrorResponse)
        return msg

    def _push_pull(self, r: _Reader) -> Generator[None, None, PushPull]:
        self._where = "reading a push-pull header"
        f = _Fields((yield from r.object("push-pull header")), "push-pull header")
        count = f.get_int("Nodes", self._max_nodes)
        user_len = f.get_int("UserStateLen", self._max_size)
        join = f.get_bool("Join")
        nodes = []
        for i in range(count):
            self._where = f"reading push-pull node state {i + 1} of {count}"
            what = f"push-pull node state {i + 1}"
            nodes.append(_node_state_from(_Fields((yield from r.object(what)), what)))
        self._where = f"reading {user_len} bytes of push-pull user state"
        user_state = yield from r.raw(user_len)
        return PushPull(nodes=tuple(nodes), user_state=user_state, join=join)
