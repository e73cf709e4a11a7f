"""The agent API's ``/v1/keys`` refuses what it must before any key query leaves the node:
clients that are not on a loopback address (the answer holds the cluster's keys, and a change
reaches every member), and malformed requests (400 with the reason)."""

from __future__ import annotations

import httpx

from vxnet.agent._api import build_app
from vxnet.config import GossipSettings
from vxnet.gossip import GossipService

KEY = "igSv+A8ysiOR2YSvRRWo3n2Sn2sdqzaTtXc7YZw72f8="


def client(host: str) -> httpx.AsyncClient:
    node = GossipService(GossipSettings(name="vx-a", keys=(KEY,)), role="agent")
    transport = httpx.ASGITransport(app=build_app(node), client=(host, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://agent")


async def test_keys_are_served_to_loopback_clients_only() -> None:
    async with client("198.18.0.5") as http:
        for r in (
            await http.get("/v1/keys"),
            await http.post("/v1/keys", json={"op": "install", "key": KEY}),
        ):
            assert r.status_code == 403
            assert "loopback clients only, not 198.18.0.5" in r.json()["error"]


async def test_malformed_key_requests_get_400_with_the_reason() -> None:
    cases = [
        (b"{", "not JSON"),
        (b'{"op": "install"}', "the body must be"),
        (b'{"op": "install", "key": "k", "extra": 1}', "the body must be"),
        (b'{"op": "list", "key": "k"}', "op must be install, use or remove"),
        (b'{"op": "install", "key": 5}', "op must be install, use or remove"),
        (b'{"op": "install", "key": "bm90IGEga2V5"}', "16, 24 or 32 bytes"),
        (b'{"op": "use", "key": "%%%"}', "not valid base64"),
    ]
    async with client("127.0.0.1") as http:
        for body, why in cases:
            r = await http.post("/v1/keys", content=body)
            assert r.status_code == 400, body
            assert why in r.json()["error"], (body, r.json())
