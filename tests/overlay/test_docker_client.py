"""The Docker client: against a fake daemon, then against real ones in a lab.

The first tests need neither root nor Docker: a fake daemon on a unix socket shows that events
arrive one by one, while the response goes on, and that cancelling the iteration hangs up.

The lab tests run a private dockerd (:class:`LabDockerd`) in each of two hosts at once and share
them, in file order: the last one stops both and checks that nothing is left behind.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import trio

from vxnet.overlay._docker import Docker, DockerError, DockerUnavailable
from vxnet.sandbox.dockerd import IMAGE, LabDockerd, ensure_image
from vxnet.sandbox.lab import Host, Lab, namespace_pids

if TYPE_CHECKING:
    from collections.abc import Iterator

needs_dockerd = pytest.mark.skipif(
    shutil.which("dockerd") is None, reason="dockerd is not installed (Debian package docker.io)"
)

SUBNET = IPv4Network("9.0.0.128/25")
DCOS = {
    "Name": "dcos",
    "Driver": "bridge",
    "CheckDuplicate": True,
    "Options": {
        "com.docker.network.bridge.name": "d-dcos",
        "com.docker.network.bridge.enable_ip_masquerade": "false",
        "com.docker.network.driver.mtu": "1420",
    },
    "IPAM": {"Config": [{"Subnet": str(SUBNET), "Gateway": "9.0.0.129"}]},
}
SLEEPER = {"Image": f"{IMAGE}:latest", "Cmd": ["sleep", "600"]}


# --- a fake daemon ------------------------------------------------------------------------------


async def listening(path: str) -> trio.socket.SocketType:
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(path)
    sock.listen()
    return sock


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


async def test_events_arrive_one_by_one_and_cancelling_hangs_up(tmp_path: Path) -> None:
    path = str(tmp_path / "fake.sock")
    sock = await listening(path)
    requests: list[bytes] = []
    more = trio.Event()
    hung_up = trio.Event()

    async def fake_daemon() -> None:
        async with trio.SocketListener(sock) as listener:
            stream = await listener.accept()
        data = b""
        while b"\r\n\r\n" not in data:
            data += await stream.receive_some(4096)
        requests.append(data)
        head = (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        )
        await stream.send_all(head + b"\r\n" + chunk(b'{"Action": "create"}\n{"Action": "st'))
        await more.wait()  # the client has the first event while the response goes on
        await stream.send_all(chunk(b'art"}\n'))
        while await stream.receive_some(4096):
            pass
        hung_up.set()
        await stream.aclose()

    actions = []
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fake_daemon)
            with trio.CancelScope() as scope:
                async for event in Docker(path).events({"type": ["container"]}):
                    actions.append(event["Action"])
                    more.set()
                    if len(actions) == 2:
                        scope.cancel()  # the generator is cancelled in its next read
            await hung_up.wait()
    assert actions == ["create", "start"]
    head = requests[0].decode()
    assert head.startswith("GET /v1.41/events?filters=%7B%22type%22%3A+%5B%22container%22%5D%7D ")
    assert "host: docker\r\n" in head.lower()


async def test_error_names_the_call_the_socket_and_dockers_message(tmp_path: Path) -> None:
    path = str(tmp_path / "fake.sock")
    sock = await listening(path)
    body = b'{"message": "network with name dcos already exists"}'

    async def fake_daemon() -> None:
        async with trio.SocketListener(sock) as listener:
            stream = await listener.accept()
        data = b""
        while not data.endswith(b"}"):  # the head and the JSON body
            data += await stream.receive_some(4096)
        head = f"HTTP/1.1 409 Conflict\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        await stream.send_all(head + body)
        await stream.aclose()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fake_daemon)
            with pytest.raises(DockerError) as info:
                await Docker(path).create_network(DCOS)
    assert info.value.status == 409
    assert str(info.value) == (
        f"Docker POST /networks/create on {path}: HTTP 409: network with name dcos already exists"
    )


async def test_no_daemon_is_docker_unavailable(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.sock")
    with pytest.raises(DockerUnavailable, match="Docker is not running or not installed") as info:
        await Docker(missing).ping()
    assert missing in str(info.value)
    assert info.value.status is None
    refusing = str(tmp_path / "refusing.sock")  # bound, not listening: connections are refused
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(refusing)
        with pytest.raises(DockerUnavailable, match=refusing):
            await Docker(refusing).networks()


# --- real daemons in a lab ----------------------------------------------------------------------


@dataclass
class Daemons:
    lab: Lab
    h1: LabDockerd
    h2: LabDockerd
    key_json_before: bool
    run_root_before: bool


@pytest.fixture(scope="module")
def daemons(
    tmp_path_factory: pytest.TempPathFactory, _dead_labs_removed: None
) -> Iterator[Daemons]:
    tmp = tmp_path_factory.mktemp("docker")
    # h2's base directory is too long for its sockets: they go to /run/vxnet-dk/.
    bases = {"h1": tmp / "h1", "h2": tmp / ("long-" + "x" * 60) / "h2"}
    key_json_before = Path("/etc/docker/key.json").exists()
    run_root_before = Path("/run/vxnet-dk").exists()
    with Lab(list(bases)) as lab, contextlib.ExitStack() as stack:
        with ThreadPoolExecutor(len(bases)) as pool:
            futures = [pool.submit(LabDockerd.start, lab.host(n), b) for n, b in bases.items()]
            errors = []
            for future in futures:
                try:
                    stack.enter_context(future.result())
                except Exception as exc:
                    errors.append(exc)
            if errors:
                raise errors[0]
        h1, h2 = (future.result() for future in futures)
        yield Daemons(lab, h1, h2, key_json_before, run_root_before)


def processes(host: Host) -> list[str]:
    names = []
    for pid in namespace_pids([host.netns]):
        with contextlib.suppress(OSError):
            names.append(Path(f"/proc/{pid}/comm").read_text().strip())
    return names


class Events:
    """Docker's events, received in a background task, waited for by what they are."""

    def __init__(self, receive: trio.MemoryReceiveChannel[dict[str, Any]]) -> None:
        self.receive = receive
        self.seen: list[str] = []

    async def wait(self, deadline: float, *wanted: tuple[str, str, dict[str, str]]) -> None:
        """Wait until each (type, action, actor attributes) came, at the latest by ``deadline``."""
        missing = list(wanted)
        with trio.move_on_at(deadline):
            async for event in self.receive:
                actor = {"ID": event["Actor"]["ID"], **event["Actor"].get("Attributes", {})}
                self.seen.append(f"{event['Type']} {event['Action']} {actor['ID'][:12]}")
                missing = [
                    (kind, action, attributes)
                    for kind, action, attributes in missing
                    if not (
                        event["Type"] == kind
                        and event["Action"] == action
                        and attributes.items() <= actor.items()
                    )
                ]
                if not missing:
                    return
        pytest.fail(f"events {missing} did not come in time; came: {self.seen}")


@pytest.mark.lab
@needs_dockerd
async def test_two_daemons_at_once_each_with_its_containerd(daemons: Daemons) -> None:
    for daemon in (daemons.h1, daemons.h2):
        names = processes(daemon.host)
        assert names.count("dockerd") == 1
        assert names.count("containerd") == 1
    assert daemons.h2.socket_path.startswith("/run/vxnet-dk/")  # its base is too long

    async def check(daemon: LabDockerd) -> None:
        docker = daemon.docker()
        assert await docker.ping() == "OK"
        assert (await docker.version())["ApiVersion"] == "1.41"
        assert {n["Name"] for n in await docker.networks()} == {"host", "none"}  # no docker0
        await ensure_image(docker)
        image = await docker.image(f"{IMAGE}:latest")
        assert image is not None
        await ensure_image(docker)  # there already: nothing to do
        assert await docker.image(f"{IMAGE}:latest") == image

    async with trio.open_nursery() as nursery:
        for daemon in (daemons.h1, daemons.h2):
            nursery.start_soon(check, daemon)


@pytest.mark.lab
@needs_dockerd
async def test_bridge_network_container_and_their_events(daemons: Daemons) -> None:
    docker = daemons.h1.docker()
    host = daemons.h1.host
    since = time.time()
    network_id = await docker.create_network(DCOS)
    network = await docker.network("dcos")
    assert network is not None
    assert network["Id"] == network_id
    assert network["IPAM"]["Config"] == [{"Subnet": str(SUBNET), "Gateway": "9.0.0.129"}]
    with pytest.raises(DockerError, match="dcos already exists") as info:
        await docker.create_network(DCOS)
    assert info.value.status == 409
    assert daemons.h1.socket_path in str(info.value)

    send, receive = trio.open_memory_channel[dict[str, Any]](100)
    events = Events(receive)

    async def watch() -> None:
        filters = {"type": ["network", "container"]}
        async with contextlib.aclosing(docker.events(filters, since=since)) as stream:
            async for event in stream:
                await send.send(event)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        # The network's creation, from before the subscription: all that follows is live.
        await events.wait(trio.current_time() + 5, ("network", "create", {"ID": network_id}))

        cid = await docker.create_container({**SLEEPER, "HostConfig": {"NetworkMode": "dcos"}})
        deadline = trio.current_time() + 2
        await docker.start_container(cid)
        await events.wait(
            deadline,
            ("network", "connect", {"ID": network_id, "container": cid}),
            ("container", "start", {"ID": cid}),
        )
        inspected = await docker.container(cid)
        assert inspected is not None
        assert inspected["State"]["Running"]
        address = IPv4Address(inspected["NetworkSettings"]["Networks"]["dcos"]["IPAddress"])
        assert address in SUBNET
        assert address != IPv4Address("9.0.0.129")
        assert [c["Id"] for c in await docker.containers(filters={"network": ["dcos"]})] == [cid]
        # Docker 20.10 gives the bridge the MTU of its ports: 1500 until the first one joins.
        link = json.loads(host.run(["ip", "-j", "link", "show", "d-dcos"]).stdout)
        assert link[0]["mtu"] == 1420
        inside = ["nsenter", f"--net=/proc/{inspected['State']['Pid']}/ns/net", "ip", "-j", "link"]
        links = json.loads((await trio.run_process(inside, capture_stdout=True)).stdout)
        eth0 = [i for i in links if i["ifname"] == "eth0"]
        assert eth0[0]["mtu"] == 1420

        await docker.stop_container(cid)
        await events.wait(
            trio.current_time() + 5,
            ("container", "die", {"ID": cid}),
            ("network", "disconnect", {"ID": network_id, "container": cid}),
        )
        await docker.remove_container(cid)
        assert await docker.container(cid) is None
        await docker.remove_container(cid)  # gone already: no error
        await docker.remove_network("dcos")
        await events.wait(trio.current_time() + 2, ("network", "destroy", {"ID": network_id}))
        assert await docker.network("dcos") is None
        await docker.remove_network("dcos")  # gone already: no error
        nursery.cancel_scope.cancel()


@pytest.mark.lab
@needs_dockerd
async def test_docker_drops_traffic_forwarded_into_its_bridge(daemons: Daemons) -> None:
    """dockerd switched ip_forward on, so it set FORWARD's policy to DROP (sandbox.dockerd)."""
    docker = daemons.h2.docker()
    host = daemons.h2.host
    spec = {
        **DCOS,
        "Name": "fwd",
        "Options": {"com.docker.network.bridge.name": "d-fwd"},
        "IPAM": {"Config": [{"Subnet": "9.0.2.0/24", "Gateway": "9.0.2.1"}]},
    }
    await docker.create_network(spec)
    cid = await docker.create_container({**SLEEPER, "HostConfig": {"NetworkMode": "fwd"}})
    await docker.start_container(cid)
    info = await docker.container(cid)
    assert info is not None
    address = info["NetworkSettings"]["Networks"]["fwd"]["IPAddress"]
    # A neighbour routed through the host, as the overlay's VTEP would be.
    src = daemons.lab.container(host, "src")
    host.run(
        [
            "ip",
            "link",
            "add",
            "m-x",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            src.netns_path,
        ]
    )
    host.run(["ip", "addr", "add", "9.0.3.1/24", "dev", "m-x"])
    host.run(["ip", "link", "set", "m-x", "up"])
    src.run(["ip", "addr", "add", "9.0.3.2/24", "dev", "eth0"])
    src.run(["ip", "link", "set", "eth0", "up"])
    src.run(["ip", "route", "add", "default", "via", "9.0.3.1"])
    ping = ["ping", "-c", "1", "-W", "1", address]
    assert "-P FORWARD DROP" in host.run(["iptables", "-S", "FORWARD"]).stdout
    assert src.run(ping, check=False).returncode != 0
    host.run(["iptables", "-I", "DOCKER-USER", "-i", "m-x", "-o", "d-fwd", "-j", "ACCEPT"])
    assert src.run(ping, check=False).returncode == 0
    await docker.remove_container(cid)
    await docker.remove_network("fwd")


@pytest.mark.lab
@needs_dockerd
async def test_import_of_a_garbage_tar_fails(daemons: Daemons) -> None:
    docker = daemons.h2.docker()
    with pytest.raises(DockerError, match="invalid tar header") as info:
        await docker.import_image(b"not a tar " * 100, "garbage")
    assert info.value.status == 500
    assert "/images/create" in str(info.value)
    assert daemons.h2.socket_path in str(info.value)
    assert await docker.image("garbage:latest") is None


@pytest.mark.lab
@needs_dockerd
def test_stop_leaves_nothing_behind(daemons: Daemons) -> None:
    dirs = {d for daemon in (daemons.h1, daemons.h2) for d in daemon.machine_dirs}
    for daemon in (daemons.h1, daemons.h2):
        docker = daemon.docker()  # a container still runs: dockerd stops it as it stops
        trio.run(docker.start_container, trio.run(docker.create_container, SLEEPER))
        daemon.stop()
        daemon.stop()  # idempotent
    for daemon in (daemons.h1, daemons.h2):
        assert processes(daemon.host) == []
        roots = (daemon.base_dir, daemon.run_dir)
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            assert not any(Path(line.split()[4]).is_relative_to(root) for root in roots), line
        assert sorted(p.name for p in daemon.base_dir.iterdir()) == ["dockerd.log"]
        if daemon.run_dir != daemon.base_dir:
            assert not daemon.run_dir.exists()
        assert not list(Path("/sys/fs/cgroup").glob(f"*/{daemon.cgroup_parent}"))
    assert not [d for d in dirs if d.exists()]
    assert Path("/run/vxnet-dk").exists() == daemons.run_root_before
    assert Path("/etc/docker/key.json").exists() == daemons.key_json_before
