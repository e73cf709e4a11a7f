"""HTTP for every vxnet API: one server and one client, both h11 on trio.

The masters' and agents' APIs are Starlette (ASGI) applications served by :func:`serve_asgi`
(one task per connection; bounded head, body and request time) or :func:`serve_asgi_unix` (the
same on a unix socket); :func:`serve_api` binds one to ``host:port`` and reports its URL.
:class:`HttpClient` is the one client (TCP or a unix socket, keep-alive pool, bounded, streamed
bodies, typed :class:`HttpError`\\s): the agents' client of the masters and the Docker client are
built on it, and :func:`fetch_json` (the ``vxnet`` command's synchronous call) too.
"""

from vxnet.http import _client, _server
from vxnet.http._client import *  # noqa: F403 - each module's __all__ is its public part
from vxnet.http._server import *  # noqa: F403

__all__ = [*_client.__all__, *_server.__all__]
