"""The masters' API over HTTPS: three real ``vxnet master`` processes with TLS on, and strangers.

Registering and deleting need an agent's or an operator's certificate from the cluster's CA (and
the bearer token), reading needs any cluster certificate unless ``open_reads`` is set. A client
without a certificate, with another CA's, an expired one, or a master's asking to register gets
nothing written. An agent accepts only a master's certificate naming the address it dialled.
"""

from __future__ import annotations

import functools
import json
import ssl
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest
import trio

from certs import expired_certificate, tls_of
from vxnet.http import HttpClient, HttpError, serve_asgi
from vxnet.master import MasterUnreachable, open_master_client
from vxnet.pki import CA_CERT, init_ca, issue
from vxnet.testing.procs import MasterProcesses

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from vxnet.pki import Tls

NETWORK = """
[network]
vtep_subnet = "44.128.0.0/20"

[[network.overlays]]
name = "dcos"
subnet = "9.0.0.0/8"
prefix = 24
"""
TOKEN = "tls-test-token"  # noqa: S105 - a test fixture, not a secret
REGISTER = "/overlay-master/register"


class OpenReads(MasterProcesses):
    """Masters whose ``[tls]`` lets clients without a certificate read."""

    def tls_text(self, i: int) -> str:
        return super().tls_text(i) + "open_reads = true\n"


@pytest.fixture(scope="module")
def masters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MasterProcesses]:
    root = tmp_path_factory.mktemp("api-tls")
    with MasterProcesses(root, 3, NETWORK, extra=f'token = "{TOKEN}"', tls=True) as m:
        issue(m.pki, "agent", "agent1", ips=["198.18.0.11"])
        m.start_all()
        yield m


async def agents(m: MasterProcesses) -> list[str]:
    """The agents the leader holds (read with the operator's certificate)."""
    async with open_master_client([m.url(i) for i in range(m.n)], tls=m.client_tls) as api:
        state = await api.state()
    return sorted(a["ip"] for a in state["agents"])


async def post_register(
    m: MasterProcesses, leader: int, ip: str, tls: Tls | None, *, secure: bool = True
) -> int:
    """POST a registration to the leader with ``tls``'s certificate (none: ``None``); its status.

    Raises:
        HttpError: No HTTP answer (the handshake failed, or the server closed the connection).
    """
    context = tls.client if tls is not None else None
    if context is None and secure:  # TLS, but no certificate of its own to present
        context = ssl.create_default_context(cafile=str(m.pki / CA_CERT))
        context.minimum_version = ssl.TLSVersion.TLSv1_3
    url = m.url(leader) if secure else m.url(leader).replace("https://", "http://")
    body = json.dumps({"ip": ip}).encode()
    headers = [("Authorization", f"Bearer {TOKEN}"), ("Content-Type", "application/json")]
    async with HttpClient(tls=context, timeout=5.0, keep_alive=False) as http:
        response = await http.request("POST", url + REGISTER, body=body, headers=headers)
    return response.status


async def test_agents_and_operators_register_over_https(masters: MasterProcesses) -> None:
    m = masters
    await m.formed()
    urls = [m.url(i) for i in range(m.n)]
    assert all(url.startswith("https://") for url in urls)
    agent = tls_of(m.pki, "agent1")
    async with open_master_client(urls, token=TOKEN, tls=agent) as api:
        info = await api.register("198.18.0.11")
    assert info["ip"] == "198.18.0.11"
    assert info["overlays"][0]["subnet"].startswith("9.")
    async with open_master_client(urls, token=TOKEN, tls=m.client_tls) as api:
        assert (await api.register("198.18.0.12"))["ip"] == "198.18.0.12"
    # Every master sends the client on to the leader's https:// address, and it follows.
    for url in urls:
        async with open_master_client([url], tls=m.client_tls, patience=10.0) as api:
            assert (await api.state())["agents"]
    assert {"198.18.0.11", "198.18.0.12"} <= set(await agents(m))


async def test_strangers_get_nothing_written(masters: MasterProcesses, tmp_path: Path) -> None:
    m = masters
    await m.formed()
    leader = await m.leader()
    before = await agents(m)
    other = tmp_path / "other"
    init_ca(other)
    issue(other, "agent", "mallory", ips=["198.18.0.66"])
    issue(m.pki, "master", "posing", ips=["198.18.0.67"])
    strangers: dict[str, tuple[Tls | None, bool]] = {
        "plain HTTP": (None, False),
        "TLS without a certificate": (None, True),
        "another CA's agent": (tls_of(other, "mallory"), True),
        "an expired agent certificate": (expired_certificate(m.pki, "agent"), True),
    }
    for who, (tls, secure) in strangers.items():
        status: int | str
        try:
            status = await post_register(m, leader, "198.18.0.66", tls, secure=secure)
        except HttpError as exc:  # no answer at all: the handshake was refused
            status = str(exc)
        assert isinstance(status, str), f"{who}: answered {status}"
        if tls is not None:  # and the client says why, though TLS 1.3 tells it late
            assert "TLS" in status, (who, status)
        if who == "an expired agent certificate":  # judged by the server, after the client
            assert "refuse" in status, status  # its alert, or a hint when it just closed
    # A cluster certificate of the wrong role is answered, and refused.
    assert await post_register(m, leader, "198.18.0.67", tls_of(m.pki, "posing")) == 403
    assert await agents(m) == before

    # Reads need a certificate too (no open_reads here).
    context = ssl.create_default_context(cafile=str(m.pki / CA_CERT))
    async with HttpClient(tls=context, timeout=5.0, keep_alive=False) as http:
        with pytest.raises(HttpError):
            await http.request("GET", m.url(leader) + "/overlay-master/state")


async def test_the_client_refuses_a_server_that_is_no_master(tmp_path: Path) -> None:
    """An agent's certificate naming the address dialled is still not a master's."""
    pki = tmp_path / "pki"
    init_ca(pki)
    issue(pki, "agent", "impostor", ips=["127.0.0.1"])
    issue(pki, "agent", "agent1")
    impostor = tls_of(pki, "impostor")
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async with trio.open_nursery() as nursery:
        serve = functools.partial(serve_asgi, tls=impostor.server)
        host, port = await nursery.start(serve, app, "127.0.0.1", 0)
        async with open_master_client(
            [f"{host}:{port}"], tls=tls_of(pki, "agent1"), patience=1.0
        ) as api:
            with pytest.raises(MasterUnreachable, match="not a master's"):
                await api.register("198.18.0.11")
        nursery.cancel_scope.cancel()
    assert seen == []  # nothing was sent to it


@pytest.fixture(scope="module")
def open_reads(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MasterProcesses]:
    with OpenReads(tmp_path_factory.mktemp("api-open"), 1, NETWORK, tls=True) as m:
        m.start_all()
        yield m


async def test_open_reads_let_anyone_read_and_nobody_uncertified_write(
    open_reads: MasterProcesses,
) -> None:
    m = open_reads
    leader = await m.leader()
    context = ssl.create_default_context(cafile=str(m.pki / CA_CERT))
    async with HttpClient(tls=context, timeout=5.0, keep_alive=False) as http:
        state = await http.request("GET", m.url(leader) + "/overlay-master/state")
        assert state.status == 200
        assert "agents" in state.json()
    assert await post_register(m, leader, "198.18.0.21", None) == 403
    async with open_master_client([m.url(leader)], tls=m.client_tls) as api:
        assert (await api.state())["agents"] == []  # the uncertified write left nothing
        assert (await api.register("198.18.0.21"))["ip"] == "198.18.0.21"  # a certified one


def test_the_cli_reads_the_state_with_a_certificate(masters: MasterProcesses) -> None:
    m = masters
    assert m.client_tls is not None
    files = m.client_tls.files
    base = [sys.executable, "-m", "vxnet", "master", "state", "--api", m.url(0), "--json"]
    flags = ["--ca", str(files.ca), "--cert", str(files.cert), "--key", str(files.key)]
    done = subprocess.run([*base, *flags], capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert "agents" in json.loads(done.stdout)
    half = subprocess.run(
        [*base, "--ca", str(files.ca)], capture_output=True, text=True, timeout=30, check=False
    )
    assert half.returncode == 2
    assert "--ca needs --cert and --key too" in half.stderr
    none = subprocess.run(base, capture_output=True, text=True, timeout=30, check=False)
    assert none.returncode != 0
    assert "needs a CA and a certificate" in none.stderr
