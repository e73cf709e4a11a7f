"""Caps on the connections a server holds: per client address and in total.

A server that accepts every connection can be made to hold all its file descriptors by one
client that opens many and sends nothing; then it cannot accept its peers or even open its disk
(the masters stopped registering for about 50 s so). :class:`ConnectionCaps` counts what is open;
a server admits a connection only while both caps allow it, and otherwise answers at once (503
for HTTP) and closes it, so it keeps accepting and keeps descriptors for everyone else.
"""

from __future__ import annotations

import resource

__all__ = ["PER_CLIENT", "ConnectionCaps", "default_total"]

PER_CLIENT = 128  # an honest client holds a few; the benchmarks' load generators 64 each


def default_total(reserve: int = 256) -> int:
    """The total cap for this process: its descriptor limit less ``reserve`` (for disks, peers
    and outgoing connections), at most 4,096 and at least 16."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 65536
    return max(16, min(4096, soft - reserve))


class ConnectionCaps:
    """Open connections by client address; :meth:`admit` each one and :meth:`release` it."""

    def __init__(self, per_client: int = PER_CLIENT, total: int | None = None) -> None:
        if per_client < 1:
            raise ValueError("per_client must be at least 1")
        self.per_client = per_client
        self.total = default_total() if total is None else total
        self.open: dict[str, int] = {}
        self.count = 0
        self.refused = 0

    def admit(self, client: str) -> str | None:
        """Count a new connection from ``client``; ``None`` when admitted, else why not (the
        connection is then not counted)."""
        held = self.open.get(client, 0)
        if held >= self.per_client:
            self.refused += 1
            return f"{client} holds {held} connections already (at most {self.per_client})"
        if self.count >= self.total:
            self.refused += 1
            return f"{self.count} connections are open (at most {self.total})"
        self.open[client] = held + 1
        self.count += 1
        return None

    def release(self, client: str) -> None:
        """A connection :meth:`admit` counted has closed."""
        held = self.open.get(client, 0)
        if held <= 1:
            self.open.pop(client, None)
        else:
            self.open[client] = held - 1
        self.count = max(0, self.count - 1)
