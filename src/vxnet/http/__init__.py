"""HTTP for every vxnet API: one server and one client.

The masters' and agents' APIs are Starlette (ASGI) applications served by :func:`serve_asgi`
(h11 on trio, one task per connection); :func:`serve_api` binds one to ``host:port`` and reports
its URL. :func:`fetch_json` is the client of the ``vxnet`` command.
"""

from vxnet.http._client import ApiError, fetch_json
from vxnet.http._server import MAX_BODY, serve_api, serve_asgi

__all__ = ["MAX_BODY", "ApiError", "fetch_json", "serve_api", "serve_asgi"]
