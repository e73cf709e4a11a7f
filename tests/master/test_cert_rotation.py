"""Rotating certificates without a restart: :meth:`vxnet.pki.Tls.reload`, and SIGHUP to real
``vxnet master`` and ``vxnet log serve`` processes.

A reload reaches new connections only; the established ones (the log's peers among them) are
kept, so the log keeps its quorum and its leader while every master in turn takes a new
certificate under load. Files that cannot be used are refused and the certificate in force stays.
A new CA is brought in by trusting both CAs first, then moving the certificates, then dropping the
old CA, one SIGHUP per master at each step.
"""

from __future__ import annotations

import itertools
import json
import shutil
import signal
from functools import partial
from typing import TYPE_CHECKING, Any

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from certs import expired_certificate, tls_of
from vxnet.http import HttpError, serve_asgi
from vxnet.master import open_master_client
from vxnet.pki import CA_CERT, PkiError, Tls, TlsFiles, init_ca, issue, tls_over
from vxnet.replog import LogUnavailable, open_log_client, request_once
from vxnet.testing.procs import LogProcesses, MasterProcesses

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from starlette.requests import Request

NETWORK = """
[network]
vtep_subnet = "44.128.0.0/16"

[[network.overlays]]
name = "dcos"
subnet = "9.0.0.0/8"
prefix = 24
"""
TOKEN = "rotation-test-token"  # noqa: S105 - a test fixture, not a secret
RELOADED = "reloaded TLS certificate"
REFUSED = "keeping the certificate in force"
STEP = 100  # registrations acknowledged between two steps of a rotation, at least
CLIENTS = 8  # registering at once: half on kept connections, half on a new one each time


def der_of(cert: Path) -> bytes:
    """The DER of the PEM certificate in ``cert`` (as ``getpeercert(binary_form=True)`` gives)."""
    return x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(
        serialization.Encoding.DER
    )


def serial_of(cert: Path) -> str:
    return f"{x509.load_pem_x509_certificate(cert.read_bytes()).serial_number:x}"


async def presented(address: tuple[str, int], tls: Tls) -> bytes:
    """The certificate a new TLS connection to ``address`` is shown (``tls``'s client side)."""
    tcp = await trio.open_tcp_stream(*address)
    stream = await tls_over(tcp, tls.client, server_side=False, server_hostname=address[0])
    try:
        der = stream.getpeercert()
    finally:
        await stream.aclose()
    assert der is not None
    return der


async def eventually(what: str, check: Callable[[], bool], within: float = 10.0) -> None:
    """Poll ``check`` until it holds; fail the test after ``within`` seconds."""
    with trio.move_on_after(within):
        while True:
            if check():
                return
            await trio.sleep(0.02)
    pytest.fail(f"timed out after {within:g} s waiting for {what}")


def hup(m: LogProcesses, i: int) -> None:
    m.procs[i].send_signal(signal.SIGHUP)


async def hup_and_wait(m: LogProcesses, i: int, mark: str) -> None:
    """SIGHUP replica ``i``; return once its log holds one ``mark`` line more than before."""
    seen = m.log_text(i).count(mark)
    hup(m, i)
    await eventually(f"{mark!r} in replica {i}'s log", lambda: m.log_text(i).count(mark) > seen)


def api_address(m: MasterProcesses, i: int) -> tuple[str, int]:
    return (m.host(i), m.api_port)


def replace_files(m: LogProcesses, i: int, cert: Path, key: Path) -> None:
    """Put ``cert`` and ``key`` where replica ``i``'s config names its own (key first)."""
    shutil.copyfile(key, m.pki / f"replica{i}-key.pem")
    shutil.copyfile(cert, m.pki / f"replica{i}.pem")


# --- in process: what a reload changes and what it keeps --------------------------------------


async def client_certificate(request: Request) -> JSONResponse:
    """The PEM certificate the client presented on this connection (where a master answers its
    state, for :class:`vxnet.master.MasterClient`)."""
    chain = request.scope["extensions"]["tls"]["client_cert_chain"]
    return JSONResponse({"cert": chain[0] if chain else None})


def pem_as_der(pem: str) -> bytes:
    return x509.load_pem_x509_certificate(pem.encode()).public_bytes(serialization.Encoding.DER)


async def test_a_reload_reaches_new_connections_on_both_ends_and_keeps_established_ones(
    tmp_path: Path,
) -> None:
    """Server side: the HTTP server asks for its context at each connection. Client side: the
    masters' client (an agent registers with it, a new one each time) reads it per connection."""
    pki = tmp_path / "pki"
    init_ca(pki)
    issue(pki, "master", "server", ips=["127.0.0.1"])
    issue(pki, "agent", "client", ips=["127.0.0.1"])
    server, client = tls_of(pki, "server"), tls_of(pki, "client")
    app = Starlette(routes=[Route("/overlay-master/state", client_certificate)])
    first_server, first_client = der_of(pki / "server.pem"), der_of(pki / "client.pem")
    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(
            lambda task_status: serve_asgi(
                app, "127.0.0.1", 0, tls=lambda: server.server, task_status=task_status
            )
        )
        async with open_master_client([f"{host}:{port}"], tls=client) as kept:
            assert pem_as_der((await kept.state())["cert"]) == first_client
            assert await presented((host, port), client) == first_server

            issue(pki, "master", "server", ips=["127.0.0.1"], force=True)
            issue(pki, "agent", "client", ips=["127.0.0.1"], force=True)
            assert (
                server.reload().serial_number
                != x509.load_der_x509_certificate(first_server).serial_number
            )
            client.reload()

            # Its connection was made before the reload: kept, with the certificates it had.
            assert pem_as_der((await kept.state())["cert"]) == first_client
            await kept.aclose()  # hung up: the same client's next connection is a new one
            assert pem_as_der((await kept.state())["cert"]) == der_of(pki / "client.pem")
            assert await presented((host, port), client) == der_of(pki / "server.pem")
        nursery.cancel_scope.cancel()


def test_a_reload_refuses_files_that_cannot_serve_and_keeps_the_contexts(tmp_path: Path) -> None:
    pki, other = tmp_path / "pki", tmp_path / "other"
    init_ca(pki)
    init_ca(other)
    own = issue(pki, "master", "m1", ips=["127.0.0.1"])
    tls = tls_of(pki, "m1")
    in_force = (tls.server, tls.client, tls.server_optional, tls.certificate)
    good_cert, good_key = own.cert.read_bytes(), own.key.read_bytes()
    stranger = issue(other, "master", "m1", ips=["127.0.0.1"])
    agent = issue(pki, "agent", "a1", ips=["127.0.0.1"])
    spare = issue(pki, "master", "spare", ips=["127.0.0.1"])
    expired_certificate(pki, role="master")
    bad = {
        "garbage": (b"not a certificate\n", good_key, "not a readable certificate"),
        "a key that does not match": (good_cert, spare.key.read_bytes(), "and its key"),
        "another CA's": (stranger.cert.read_bytes(), stranger.key.read_bytes(), "not issued"),
        "another role": (agent.cert.read_bytes(), agent.key.read_bytes(), "role agent"),
        "expired": (
            (pki / "old.pem").read_bytes(),
            (pki / "old-key.pem").read_bytes(),
            "not now",
        ),
    }
    for what, (cert, key, reason) in bad.items():
        own.cert.write_bytes(cert)
        own.key.write_bytes(key)
        with pytest.raises(PkiError, match=reason):
            tls.reload()
        assert (tls.server, tls.client, tls.server_optional, tls.certificate) == in_force, what
    (pki / CA_CERT).write_bytes(b"no CA here\n")
    own.cert.write_bytes(good_cert)
    own.key.write_bytes(good_key)
    with pytest.raises(PkiError, match="not a readable CA certificate"):
        tls.reload()
    assert tls.server is in_force[0]

    shutil.copyfile(other / CA_CERT, pki / CA_CERT)
    shutil.copyfile(stranger.cert, own.cert)
    shutil.copyfile(stranger.key, own.key)
    new = tls.reload()  # the other CA's certificate, now that the CA file names that CA
    assert new.serial_number != in_force[3].serial_number
    assert tls.server is not in_force[0]
    assert tls.certificate == new


# --- real masters -------------------------------------------------------------------------------


@pytest.fixture
def masters(tmp_path: Path) -> Iterator[MasterProcesses]:
    with MasterProcesses(tmp_path, 3, NETWORK, extra=f'token = "{TOKEN}"', tls=True) as m:
        m.start_all()
        yield m


async def log_views(m: MasterProcesses) -> list[dict[str, Any]]:
    """Every master's log view (its ``/overlay-master/leader`` answer's ``log``)."""
    views = []
    for i in range(m.n):
        view = await m.status(i)
        assert view is not None, f"master {i} does not answer:\n{m.log_text(i)[-3000:]}"
        views.append(view["log"])
    return views


class Load:
    """Registrations with the leader and reads of every master's API and log port, each counted:
    a request that fails is a failure, whatever the reason (no retries hide it)."""

    def __init__(self, m: MasterProcesses, leader: int) -> None:
        self.m = m
        self.leader_url = m.url(leader)
        self.acked: dict[str, dict[str, Any]] = {}
        self.failures: list[str] = []
        self.reads = 0
        self._ips = (f"198.18.{n // 250}.{1 + n % 250}" for n in itertools.count())

    async def register(self, *, keep_alive: bool) -> None:
        """One client registering new agents in a loop; ``keep_alive=False``: a new TLS
        connection (a new handshake) for every registration."""
        headers = [("Authorization", f"Bearer {TOKEN}"), ("Content-Type", "application/json")]
        async with self.m.http_client(keep_alive=keep_alive) as http:
            while True:
                ip = next(self._ips)
                body = json.dumps({"ip": ip}).encode()
                try:
                    r = await http.request(
                        "POST",
                        f"{self.leader_url}/overlay-master/register",
                        body=body,
                        headers=headers,
                    )
                except HttpError as exc:
                    self.failures.append(f"register {ip}: {exc}")
                    continue
                if r.status not in (200, 201):
                    self.failures.append(f"register {ip}: HTTP {r.status} {r.body[:200]!r}")
                    continue
                self.acked[ip] = r.json()
                await trio.sleep(0.002)  # a steady load, not a flood of the allocator

    async def read(self) -> None:
        """New connections to every master's API and log port, in turn."""
        async with self.m.http_client(keep_alive=False) as http:
            for i in itertools.cycle(range(self.m.n)):
                try:
                    r = await http.request("GET", f"{self.m.url(i)}/overlay-master/leader")
                    if r.status != 200:
                        self.failures.append(f"read master {i}: HTTP {r.status}")
                    await request_once(self.m.addresses[i], {"op": "status"}, tls=self.m.client_tls)
                except (HttpError, LogUnavailable) as exc:
                    self.failures.append(f"read master {i}: {exc}")
                self.reads += 1
                await trio.sleep(0.005)  # paced readers: new connections all along, not a flood

    async def progress(self, count: int = STEP) -> None:
        """Wait until ``count`` more registrations are acknowledged."""
        target = len(self.acked) + count
        await eventually(f"{count} more registrations", lambda: len(self.acked) >= target)


async def test_rotating_every_master_under_load_fails_no_request_and_keeps_the_leader(
    masters: MasterProcesses,
) -> None:
    m = masters
    await m.formed()
    leader = await m.leader()
    before = await log_views(m)
    load = Load(m, leader)
    assert m.client_tls is not None
    async with trio.open_nursery() as nursery:
        for n in range(CLIENTS):
            nursery.start_soon(partial(load.register, keep_alive=n % 2 == 0))
        nursery.start_soon(load.read)
        nursery.start_soon(load.read)
        await load.progress()
        for i in range(m.n):  # followers and the leader alike, one at a time
            cert = m.pki / f"replica{i}.pem"
            old = der_of(cert)
            issue(m.pki, "master", f"replica{i}", ips=[m.host(i)], force=True)
            new = der_of(cert)
            assert new != old
            await hup_and_wait(m, i, RELOADED)
            assert f"{RELOADED} {cert} (serial {serial_of(cert)}, expires " in m.log_text(i)
            assert await presented(api_address(m, i), m.client_tls) == new
            assert await presented(m.addresses[i], m.client_tls) == new
            await load.progress()
        nursery.cancel_scope.cancel()

    assert load.failures == []
    assert len(load.acked) >= (m.n + 1) * STEP
    assert load.reads > 0
    assert m.running() == [0, 1, 2]
    assert await m.leader() == leader
    after = await log_views(m)
    for i in range(m.n):
        assert after[i]["leader_changes"] == before[i]["leader_changes"], f"master {i}"
        assert after[i]["ballot"] == before[i]["ballot"], f"master {i} saw an election"
    async with open_master_client([m.url(i) for i in range(m.n)], tls=m.client_tls) as api:
        by_ip = {a["ip"]: a for a in (await api.state())["agents"]}
    for ip, info in load.acked.items():
        assert by_ip[ip] == info, f"{ip}'s acknowledged allocation is not in the log"


async def test_a_bad_reload_keeps_the_master_serving_its_certificate_until_a_good_one(
    masters: MasterProcesses, tmp_path: Path
) -> None:
    m = masters
    await m.formed()
    leader = await m.leader()
    before = await log_views(m)
    assert m.client_tls is not None
    i = leader
    cert, key = m.pki / f"replica{i}.pem", m.pki / f"replica{i}-key.pem"
    in_force, good_cert = der_of(cert), cert.read_bytes()
    spare = issue(m.pki, "master", "spare", ips=[m.host(i)])
    other = tmp_path / "other-ca"
    init_ca(other)
    stranger = issue(other, "master", f"replica{i}", ips=[m.host(i)])

    def mismatched_key() -> None:
        cert.write_bytes(good_cert)
        shutil.copyfile(spare.key, key)

    bad: list[tuple[str, Callable[[], object]]] = [
        ("garbage in the certificate file", lambda: cert.write_bytes(b"garbage\n")),
        ("a key that does not match", mismatched_key),
        ("another CA's pair", lambda: replace_files(m, i, stranger.cert, stranger.key)),
    ]

    urls = [m.url(j) for j in range(m.n)]
    async with open_master_client(urls, token=TOKEN, tls=m.client_tls) as api:
        for n, (what, spoil) in enumerate(bad):
            spoil()
            await hup_and_wait(m, i, REFUSED)
            line = next(text for text in m.log_text(i).splitlines()[::-1] if REFUSED in text)
            assert " ERROR " in line, line
            assert m.procs[i].poll() is None, what
            assert await presented(api_address(m, i), m.client_tls) == in_force, what
            assert await presented(m.addresses[i], m.client_tls) == in_force, what
            await api.register(f"198.18.7.{n + 1}")
        assert "not a readable certificate" in m.log_text(i)
        assert "not a certificate and its key" in m.log_text(i)
        assert "not issued by the CA" in m.log_text(i)
        assert RELOADED not in m.log_text(i)

        issue(m.pki, "master", f"replica{i}", ips=[m.host(i)], force=True)
        await hup_and_wait(m, i, RELOADED)
        assert await presented(api_address(m, i), m.client_tls) == der_of(cert) != in_force
        assert await presented(m.addresses[i], m.client_tls) == der_of(cert)
        await api.register("198.18.7.100")
    assert m.running() == [0, 1, 2]
    assert await m.leader() == leader
    after = await log_views(m)
    assert [v["leader_changes"] for v in after] == [v["leader_changes"] for v in before]


async def test_a_new_ca_comes_in_trusted_beside_the_old_then_certificates_move_then_it_alone(
    masters: MasterProcesses, tmp_path: Path
) -> None:
    m = masters
    await m.formed()
    leader = await m.leader()
    before = await log_views(m)
    tls = m.client_tls
    assert tls is not None
    new_ca = tmp_path / "new-ca"
    init_ca(new_ca, name="vxnet cluster CA 2")
    # The old CA's operator certificate, offered to servers it trusts (to see whether they do).
    old_dir = tmp_path / "old-operator"
    old_dir.mkdir()
    for path in (tls.files.cert, tls.files.key):
        shutil.copyfile(path, old_dir / path.name)
    old_operator = Tls(
        TlsFiles(new_ca / CA_CERT, old_dir / tls.files.cert.name, old_dir / tls.files.key.name)
    )
    ca_file = m.pki / CA_CERT
    urls = [m.url(j) for j in range(m.n)]
    agents = (f"198.18.9.{n}" for n in itertools.count(1))

    async def every_master_answers() -> None:
        async with open_master_client(urls, token=TOKEN, tls=tls) as api:
            await api.register(next(agents))
        for j in m.running():
            await request_once(m.addresses[j], {"op": "status"}, tls=tls)

    # 1. Both CAs trusted, everywhere.
    ca_file.write_bytes(ca_file.read_bytes() + (new_ca / CA_CERT).read_bytes())
    tls.reload()
    for i in range(m.n):
        await hup_and_wait(m, i, RELOADED)
        await every_master_answers()
    # 2. Every master, then the operator, takes a certificate from the new CA.
    for i in range(m.n):
        issued = issue(new_ca, "master", f"replica{i}", ips=[m.host(i)])
        replace_files(m, i, issued.cert, issued.key)
        await hup_and_wait(m, i, RELOADED)
        assert await presented(api_address(m, i), tls) == der_of(issued.cert)
        assert await presented(m.addresses[i], tls) == der_of(issued.cert)
        await every_master_answers()
    operator = issue(new_ca, "operator", "operator")
    shutil.copyfile(operator.key, tls.files.key)
    shutil.copyfile(operator.cert, tls.files.cert)
    tls.reload()
    await every_master_answers()
    # 3. The old CA is dropped, everywhere.
    shutil.copyfile(new_ca / CA_CERT, ca_file)
    tls.reload()
    for i in range(m.n):
        await hup_and_wait(m, i, RELOADED)
        await every_master_answers()

    assert await m.leader() == leader
    after = await log_views(m)
    assert [v["leader_changes"] for v in after] == [v["leader_changes"] for v in before]
    for i in range(m.n):  # a certificate of the old CA is refused now
        with pytest.raises(LogUnavailable):
            await request_once(m.addresses[i], {"op": "status"}, tls=old_operator)
    # A follower restarted trusts the new CA only: the others' new connections to it (their
    # reloaded client certificates) are what let it catch up.
    follower = next(i for i in range(m.n) if i != leader)
    m.kill(follower, signal.SIGTERM)
    await every_master_answers()
    m.start(follower)
    leader_view = await m.status(leader)
    assert leader_view is not None
    leading = leader_view["log"]

    async def caught_up() -> bool:
        view = await m.status(follower)
        log = None if view is None else view["log"]
        if not log:
            return False
        return bool(log["status"] == "VOTING" and log["applied"] >= leading["commit"])

    with trio.fail_after(20):
        while True:
            if await caught_up():
                break
            await trio.sleep(0.05)
    await every_master_answers()
    assert await m.leader() == leader


# --- `vxnet log serve` ---------------------------------------------------------------------------


async def test_log_serve_reloads_on_sighup_and_refuses_a_bad_file(tmp_path: Path) -> None:
    with (
        LogProcesses(tmp_path / "tls", 3, tls=True) as log,
        LogProcesses(tmp_path / "plain", 1) as plain,
    ):
        log.start_all()
        plain.start_all()
        await log.formed()
        leader = await log.leader()
        tls = log.client_tls
        assert tls is not None
        before = [await log.status(i) for i in range(log.n)]
        async with open_log_client(log.addresses, tls=tls) as client:
            for i in range(log.n):
                cert = log.pki / f"replica{i}.pem"
                issue(log.pki, "master", f"replica{i}", ips=[log.host(i)], force=True)
                await hup_and_wait(log, i, RELOADED)
                assert await presented(log.addresses[i], tls) == der_of(cert)
                await client.append(f"after {i}".encode())
            good = log.pki / "replica0.pem"
            in_force = der_of(good)
            good.write_bytes(b"garbage\n")
            await hup_and_wait(log, 0, REFUSED)
            assert await presented(log.addresses[0], tls) == in_force
            await client.append(b"after a bad reload")
        assert await log.leader() == leader
        after = [await log.status(i) for i in range(log.n)]
        for i, (was, now) in enumerate(zip(before, after, strict=True)):
            assert was is not None
            assert now is not None
            assert now["leader_changes"] == was["leader_changes"], f"replica {i}"
        assert log.running() == [0, 1, 2]

        await plain.leader()
        await hup_and_wait(plain, 0, "no [tls] certificate to reload")
        assert plain.running() == [0]
        assert await plain.status(0) is not None
