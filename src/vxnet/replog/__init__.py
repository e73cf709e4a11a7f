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

from vxnet.replog import _client, _core, _server, _sqlite, _storage
from vxnet.replog._client import *  # noqa: F403 - each module's __all__ is its public part
from vxnet.replog._core import *  # noqa: F403
from vxnet.replog._server import *  # noqa: F403
from vxnet.replog._sqlite import *  # noqa: F403
from vxnet.replog._storage import *  # noqa: F403

__all__ = [
    *_client.__all__,
    *_core.__all__,
    *_server.__all__,
    *_sqlite.__all__,
    *_storage.__all__,
]
