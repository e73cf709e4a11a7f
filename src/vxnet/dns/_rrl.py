"""Response rate limiting for UDP answers (after BIND's and Knot's RRL), sans-IO.

Each client prefix (IPv4 /24, IPv6 /56, as BIND and Knot group them) has a token bucket that
fills at ``rate`` answers per second and holds one second's worth. An answer that finds a token
is sent; one that finds none is *limited*: every ``slip``-th limited answer is sent truncated
(TC set, the question and the OPT RR only), so that a real client behind the prefix retries over
TCP and gets its answer there, and the others are dropped. A spoofed flood of queries thus
cannot turn the server into an amplifier aimed at a victim, while a client below the rate never
notices. ``slip`` 0 drops every limited answer, 1 truncates each.

Bounded: at most ``max_clients`` buckets; when full, the ones that have refilled (idle clients)
are forgotten, and if none has, all are (a flood of spoofed prefixes then costs one reset).
The clock is given: :attr:`now` is set by the server once per batch of packets.
"""

from __future__ import annotations

__all__ = ["DROP", "SEND", "SLIP", "RateLimiter", "client_prefix", "truncated"]

SEND, SLIP, DROP = 0, 1, 2
MAX_CLIENTS = 65536
_OPT_TAIL = b"\x00\x00\x29"  # an OPT RR's root owner and type, as our replies end with one


def client_prefix(address: bytes) -> bytes:
    """The bucket key of a client: its /24 (a 4-byte IPv4 ``address``) or its /56 (IPv6); the
    lengths differ, so the two never share a key."""
    return address[:3] if len(address) == 4 else address[:7]


def truncated(reply: bytes) -> bytes:
    """The slip form of ``reply`` (ours, so its question is written whole at offset 12 and its
    OPT RR, if any, is last): TC set, the question, and the OPT RR."""
    end = 12
    while end < len(reply) and reply[end]:
        end += 1 + reply[end]
    end += 5  # the root label, QTYPE, QCLASS
    arcount = reply[11] | reply[10] << 8
    opt = reply[-11:] if arcount and reply[-11:-8] == _OPT_TAIL else b""
    counts = b"\x00\x01\x00\x00\x00\x00" + (b"\x00\x01" if opt else b"\x00\x00")
    return reply[:2] + bytes((reply[2] | 0x02, reply[3])) + counts + reply[12:end] + opt


class RateLimiter:
    """Token buckets per client prefix (see the module docstring).

    Args:
        rate: Answers per second to one prefix before limiting; at least 1.
        slip: Every how many limited answers one goes out truncated (0: none).
        max_clients: Buckets kept at most.
    """

    __slots__ = ("_buckets", "limited", "max_clients", "now", "rate", "slip", "slipped")

    def __init__(self, rate: int, slip: int = 2, max_clients: int = MAX_CLIENTS) -> None:
        if rate < 1 or slip < 0 or max_clients < 1:
            raise ValueError("rate and max_clients must be at least 1, slip at least 0")
        self.rate = float(rate)
        self.slip = slip
        self.max_clients = max_clients
        self.now = 0.0
        self.limited = 0  # answers not sent whole
        self.slipped = 0  # of those, sent truncated
        self._buckets: dict[bytes, list[float]] = {}  # prefix -> [tokens, at, limited]

    def verdict(self, prefix: bytes) -> int:
        """Whether to :data:`SEND`, :data:`SLIP` (send :func:`truncated`) or :data:`DROP` the
        answer to a client of ``prefix``, taking its token."""
        bucket = self._buckets.get(prefix)
        now = self.now
        if bucket is None:
            if len(self._buckets) >= self.max_clients:
                self._forget()
            self._buckets[prefix] = [self.rate - 1.0, now, 0.0]
            return SEND
        tokens = bucket[0] + (now - bucket[1]) * self.rate
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = (tokens if tokens < self.rate else self.rate) - 1.0
            return SEND
        bucket[0] = tokens
        bucket[2] += 1.0
        self.limited += 1
        if self.slip and bucket[2] % self.slip == 0:
            self.slipped += 1
            return SLIP
        return DROP

    def limit(self, prefix: bytes, reply: bytes) -> bytes | None:
        """``reply`` as it may go to a client of ``prefix``: whole, :func:`truncated` (slip) or
        not at all (None)."""
        judged = self.verdict(prefix)
        if judged == SEND:
            return reply
        return truncated(reply) if judged == SLIP else None

    def _forget(self) -> None:
        now, rate = self.now, self.rate
        full = [k for k, b in self._buckets.items() if b[0] + (now - b[1]) * rate >= rate]
        if full:
            for key in full:
                del self._buckets[key]
        else:
            self._buckets.clear()

    def __len__(self) -> int:
        return len(self._buckets)
