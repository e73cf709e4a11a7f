"""HTTP for every vxnet API: one server and one client, both h11 on trio.

The masters' and agents' APIs are Starlette (ASGI) applications served by :func:`serve_asgi`
(one task per connection; bounded head, body and request time) or :func:`serve_asgi_unix` (the
same on a unix socket); :func:`serve_api` binds one to ``host:port`` and reports its URL.
:class:`HttpClient` is the one client (TCP or a unix socket, keep-alive pool, bounded, streamed
bodies, typed :class:`HttpError`\\s): the agents' client of the masters and the Docker client are
built on it, and :func:`fetch_json` (the ``vxnet`` command's synchronous call) too.
"""

from vxnet.http._client import (
    ApiError,
    HttpClient,
    HttpConnectError,
    HttpError,
    HttpProtocolError,
    HttpResponse,
    HttpStream,
    HttpTimeout,
    HttpTooLarge,
    fetch_json,
)
from vxnet.http._server import MAX_BODY, serve_api, serve_asgi, serve_asgi_unix

__all__ = [
    "MAX_BODY",
    "ApiError",
    "HttpClient",
    "HttpConnectError",
    "HttpError",
    "HttpProtocolError",
    "HttpResponse",
    "HttpStream",
    "HttpTimeout",
    "HttpTooLarge",
    "fetch_json",
    "serve_api",
    "serve_asgi",
    "serve_asgi_unix",
]
