"""A Multi-Paxos replicated log, as a library: it stores and orders bytes, and knows no more.

The masters keep their allocations in it (:mod:`vxnet.master` applies the chosen entries to its
allocator), but nothing here knows of allocation. The parts:

* :mod:`._core`: the sans-IO replica (acceptor, learner and proposer), fed messages, client
  appends and the time; it returns the storage writes to make and the messages that may only leave
  after them.
* :mod:`._storage`: what a replica keeps durable, and the :class:`LogStorage` seam;
  :mod:`._sqlite`: the SQLite file behind it in production.
* :mod:`._wire`: the framing and msgpack encoding of peer messages and client requests.
* :mod:`._server`: :class:`ReplicatedLog`, the trio driver: peer connections, the client port,
  and the storage writes, made in a worker thread so no fsync runs on the event loop.
* :mod:`._client`: :class:`LogClient`, which finds the coordinator and rides out failovers.
"""

from vxnet.replog._client import LogClient, LogUnavailable, open_log_client, request_once
from vxnet.replog._core import LogTiming, Replica, Role
from vxnet.replog._server import (
    LOG_FILE,
    MAX_VALUE,
    AppendUncertain,
    NotLeader,
    ReplicatedLog,
    format_address,
    log_addresses,
    raise_plain,
    run_log_replica,
)
from vxnet.replog._sqlite import SqliteLogStorage
from vxnet.replog._storage import (
    Durable,
    Entry,
    InstallSnapshot,
    LogStorage,
    PutEntries,
    ReplicaStatus,
    SetMeta,
    Snapshot,
    StorageFailure,
    Write,
    perform_writes,
)

__all__ = [
    "LOG_FILE",
    "MAX_VALUE",
    "AppendUncertain",
    "Durable",
    "Entry",
    "InstallSnapshot",
    "LogClient",
    "LogStorage",
    "LogTiming",
    "LogUnavailable",
    "NotLeader",
    "PutEntries",
    "Replica",
    "ReplicaStatus",
    "ReplicatedLog",
    "Role",
    "SetMeta",
    "Snapshot",
    "SqliteLogStorage",
    "StorageFailure",
    "Write",
    "format_address",
    "log_addresses",
    "open_log_client",
    "perform_writes",
    "raise_plain",
    "request_once",
    "run_log_replica",
]
