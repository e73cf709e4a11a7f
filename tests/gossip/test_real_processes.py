"""Real processes on loopback: vxnet agents with each other and with Debian's ``serf agent``.

These run real processes in real time: each waits for an observable condition with a deadline
and stops every process it started by PID.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from vxnet.http import ApiError, fetch_json

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

SERF = shutil.which("serf")


def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1."""
    for _ in range(50):
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(port)
    raise RuntimeError("no free port")


def wait_for(what: str, check: Callable[[], bool], timeout: float = 30.0) -> float:
    """Poll ``check`` until true; return the seconds it took. Fails the test at ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=timeout)


class Cluster:
    """Starts vxnet agents and serf agents, and stops all of them at the end."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[Proc] = []
        self.key = base64.b64encode(os.urandom(32)).decode()

    def start_vxnet(
        self,
        name: str,
        seeds: tuple[int, ...] = (),
        *,
        encrypt: bool = False,
        key: str | None = None,
        keyring_file: Path | None = None,
    ) -> tuple[Proc, int, str]:
        port, api = free_port(), free_port()
        conf = self.tmp / f"{name}.toml"
        lines = [
            "[agent]",
            f'listen = "127.0.0.1:{api}"',
            "overlay = false",
            "[gossip]",
            f'name = "{name}"',
            f'bind = "127.0.0.1:{port}"',
            f"seeds = {json.dumps([f'127.0.0.1:{s}' for s in seeds])}",
        ]
        if encrypt:
            lines.append(f'keys = ["{key or self.key}"]')
        if keyring_file is not None:
            lines.append(f'keyring_file = "{keyring_file}"')
        lines += ["[dns]", "enabled = false"]  # several agents share this namespace
        conf.write_text("\n".join(lines) + "\n")
        log = self.tmp / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", "vxnet", "agent", "-c", str(conf)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        url = f"http://127.0.0.1:{api}"
        wait_for(f"{name}'s API", lambda: self._answers(url), timeout=20)
        return proc, port, url

    def start_serf(
        self,
        name: str,
        join: int | None = None,
        *,
        encrypt: bool = False,
        tags: dict[str, str] | None = None,
    ) -> tuple[Proc, int, str]:
        assert SERF is not None
        port, rpc = free_port(), free_port()
        argv = [
            SERF,
            "agent",
            f"-node={name}",
            f"-bind=127.0.0.1:{port}",
            f"-rpc-addr=127.0.0.1:{rpc}",
            "-log-level=debug",
        ]
        for k, v in (tags or {}).items():
            argv.append(f"-tag={k}={v}")
        if join is not None:
            argv.append(f"-join=127.0.0.1:{join}")
        if encrypt:
            argv.append(f"-encrypt={self.key}")
        log = self.tmp / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        rpc_addr = f"127.0.0.1:{rpc}"
        wait_for(f"{name}'s RPC", lambda: self.serf_members(rpc_addr) is not None, timeout=20)
        return proc, port, rpc_addr

    @staticmethod
    def _answers(url: str) -> bool:
        try:
            fetch_json(f"{url}/v1/members", timeout=1)
        except ApiError:
            return False
        return True

    @staticmethod
    def serf_members(rpc_addr: str) -> dict[str, dict[str, Any]] | None:
        assert SERF is not None
        out = subprocess.run(
            [SERF, "members", f"-rpc-addr={rpc_addr}", "-format=json"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if out.returncode != 0:
            return None
        return {m["name"]: m for m in json.loads(out.stdout)["members"]}

    @staticmethod
    def vxnet_members(url: str) -> dict[str, dict[str, Any]]:
        return {m["name"]: m for m in fetch_json(f"{url}/v1/members")["members"]}

    def close(self) -> None:
        for proc in self.procs:
            proc.stop()


@pytest.fixture
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    if SERF is None and request.node.get_closest_marker("serf") is not None:
        pytest.skip("serf is not installed (Debian package serf)")
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.close()
        for proc in c.procs:
            assert proc.popen.poll() is not None, f"{proc.name} still runs"


def serf_status(c: Cluster, rpc: str, name: str) -> str | None:
    members = c.serf_members(rpc) or {}
    return members.get(name, {}).get("status")


def vxnet_status(c: Cluster, url: str, name: str) -> str | None:
    return c.vxnet_members(url).get(name, {}).get("status")


@pytest.mark.serf
@pytest.mark.parametrize("encrypt", [False, True], ids=["plain", "encrypted"])
def test_serf_joins_vxnet_and_lists_it_with_tags(cluster: Cluster, encrypt: bool) -> None:
    _, a_port, a_url = cluster.start_vxnet("vx-a", encrypt=encrypt)
    cluster.start_vxnet("vx-b", (a_port,), encrypt=encrypt)
    _, _, rpc = cluster.start_serf("serf-1", join=a_port, encrypt=encrypt, tags={"role": "web"})
    wait_for(
        "serf to list both vxnet nodes alive",
        lambda: all(serf_status(cluster, rpc, n) == "alive" for n in ("vx-a", "vx-b")),
    )
    members = cluster.serf_members(rpc)
    assert members is not None
    assert members["vx-a"]["tags"] == {"role": "agent", "vxnet": "0.1.0"}
    assert members["vx-a"]["addr"] == f"127.0.0.1:{a_port}"
    wait_for("vxnet to list serf alive", lambda: vxnet_status(cluster, a_url, "serf-1") == "alive")
    assert cluster.vxnet_members(a_url)["serf-1"]["tags"] == {"role": "web"}
    # Serf user events and queries reach the vxnet nodes, which witness and ignore them.
    assert SERF is not None
    subprocess.run([SERF, "event", f"-rpc-addr={rpc}", "deploy", "v42"], check=True, timeout=10)
    subprocess.run(
        [SERF, "query", f"-rpc-addr={rpc}", "-timeout=1s", "uptime"],
        check=True,
        timeout=10,
        capture_output=True,
    )
    wait_for(
        "the nodes to stay alive",
        lambda: all(serf_status(cluster, rpc, n) == "alive" for n in ("vx-a", "vx-b")),
    )
    assert vxnet_status(cluster, a_url, "serf-1") == "alive"
    serf_log = (cluster.tmp / "serf-1.log").read_text()
    # Protocol errors only: the agent's IPC may fail to stream a late query ack to `serf query`,
    # which has already gone after its 1 s timeout (a client-side race, not the wire's).
    errors = [
        line for line in serf_log.splitlines() if "[ERR]" in line and "agent.ipc:" not in line
    ]
    assert errors == [], serf_log
    # The operator's view, from the vxnet command.
    api = a_url.removeprefix("http://")
    table = subprocess.run(
        [sys.executable, "-m", "vxnet", "members", "--api", api],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout
    lines = table.splitlines()
    assert lines[0].split() == ["NAME", "ADDRESS", "STATUS", "TAGS"]
    assert any(
        line.split()[:3] == ["serf-1", line.split()[1], "alive"] and "role=web" in line
        for line in lines[1:]
    )
    listed = json.loads(
        subprocess.run(
            [sys.executable, "-m", "vxnet", "members", "--api", api, "--json"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout
    )
    assert {m["name"] for m in listed} == {"vx-a", "vx-b", "serf-1"}


@pytest.mark.serf
@pytest.mark.parametrize("encrypt", [False, True], ids=["plain", "encrypted"])
def test_vxnet_joins_serf(cluster: Cluster, encrypt: bool) -> None:
    _, s_port, rpc = cluster.start_serf("serf-1", encrypt=encrypt, tags={"dc": "lab"})
    _, _, url = cluster.start_vxnet("vx-a", (s_port,), encrypt=encrypt)
    wait_for(
        "both sides to agree",
        lambda: (
            serf_status(cluster, rpc, "vx-a") == "alive"
            and vxnet_status(cluster, url, "serf-1") == "alive"
        ),
    )
    assert cluster.vxnet_members(url)["serf-1"]["tags"] == {"dc": "lab"}


@pytest.mark.serf
def test_a_vxnet_node_that_leaves_is_left_and_one_killed_is_failed(cluster: Cluster) -> None:
    leaver, a_port, _ = cluster.start_vxnet("vx-leaver")
    victim, _, _ = cluster.start_vxnet("vx-victim", (a_port,))
    _, _, rpc = cluster.start_serf("serf-1", join=a_port)
    wait_for(
        "serf to see both alive",
        lambda: all(serf_status(cluster, rpc, n) == "alive" for n in ("vx-leaver", "vx-victim")),
    )
    leaver.stop(signal.SIGTERM)  # graceful: leave intent, then dead-from-self
    assert leaver.popen.returncode == 0
    wait_for(
        "serf to see the leaver left",
        lambda: serf_status(cluster, rpc, "vx-leaver") == "left",
        timeout=15,
    )
    victim.stop(signal.SIGKILL)
    took = wait_for(
        "serf to see the victim failed",
        lambda: serf_status(cluster, rpc, "vx-victim") == "failed",
        timeout=40,
    )
    assert took < 30


@pytest.mark.serf
def test_a_killed_serf_agent_becomes_failed_in_vxnet(cluster: Cluster) -> None:
    _, a_port, url = cluster.start_vxnet("vx-a")
    serf, _, _ = cluster.start_serf("serf-1", join=a_port)
    wait_for("vxnet to see serf alive", lambda: vxnet_status(cluster, url, "serf-1") == "alive")
    serf.stop(signal.SIGKILL)
    took = wait_for(
        "vxnet to see serf failed",
        lambda: vxnet_status(cluster, url, "serf-1") == "failed",
        timeout=40,
    )
    assert took < 30


@pytest.mark.parametrize("encrypt", [False, True], ids=["plain", "encrypted"])
def test_a_store_write_on_one_agent_is_visible_on_the_others(
    cluster: Cluster, encrypt: bool
) -> None:
    _, a_port, a_url = cluster.start_vxnet("vx-a", encrypt=encrypt)
    _, _, b_url = cluster.start_vxnet("vx-b", (a_port,), encrypt=encrypt)
    _, _, c_url = cluster.start_vxnet("vx-c", (a_port,), encrypt=encrypt)
    wait_for(
        "three members",
        lambda: all(len(cluster.vxnet_members(u)) == 3 for u in (a_url, b_url, c_url)),
    )
    value = {"vtep_ip": "44.128.0.1", "subnet": "9.0.1.0/24"}
    api = b_url.removeprefix("http://")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "vxnet",
            "store",
            "--api",
            api,
            "put",
            "overlay/198.18.0.2",
            json.dumps(value),
        ],
        check=True,
        timeout=10,
    )

    def seen(url: str) -> list[dict[str, Any]]:
        return list(fetch_json(f"{url}/v1/store?prefix=overlay/")["records"])

    def has_it(url: str) -> bool:
        return len(seen(url)) == 1

    took = max(
        wait_for(f"the write on {u}", functools.partial(has_it, u), 10) for u in (a_url, c_url)
    )
    assert took < 5
    record = seen(c_url)[0]
    assert record["key"] == "overlay/198.18.0.2"
    assert record["value"] == value
    assert record["owner"] == "vx-b"
    assert record["version"]["writer"] == "vx-b"
    # A delete spreads the same way; the CLI lists what an agent holds.
    subprocess.run(
        [sys.executable, "-m", "vxnet", "store", "--api", api, "delete", "overlay/198.18.0.2"],
        check=True,
        timeout=10,
    )
    wait_for("the delete on a", lambda: seen(a_url) == [], timeout=10)
    bad = subprocess.run(
        [sys.executable, "-m", "vxnet", "store", "--api", api, "put", "../escape", "{}"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert bad.returncode == 2
    assert "HTTP 400" in bad.stderr


def test_overlay_status_of_an_agent_without_the_overlay_says_so(cluster: Cluster) -> None:
    _, _, a_url = cluster.start_vxnet("vx-a")
    done = subprocess.run(
        [sys.executable, "-m", "vxnet", "overlay", "status", "--api", a_url],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert done.returncode == 1
    assert "HTTP 404: this agent runs without the overlay (agent.overlay = false)" in done.stderr


def serf_keys(rpc: str, *args: str) -> str:
    """``serf keys`` against the serf agent at ``rpc``; its output (it must succeed)."""
    assert SERF is not None
    out = subprocess.run(
        [SERF, "keys", f"-rpc-addr={rpc}", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 0, f"serf keys {' '.join(args)}: {out.stdout}{out.stderr}"
    return out.stdout


def listed_keys(rpc: str) -> dict[str, str]:
    """``serf keys -list``: each key with how many members hold it ("3/3")."""
    lines = [line.split() for line in serf_keys(rpc, "-list").splitlines()]
    return {w[0]: w[1].strip("[]") for w in lines if len(w) == 2 and w[1].startswith("[")}


MIXED = ("vx-a", "vx-b", "serf-1")


def mixed_cluster(
    cluster: Cluster, keyrings: dict[str, Path] | None = None
) -> tuple[int, str, Proc, str, str]:
    """Two encrypted vxnet agents and a serf agent, all alive in serf's view: vx-a's gossip port
    and API, vx-b's process and API, serf's RPC address."""
    keyrings = keyrings or {}
    _, a_port, a_url = cluster.start_vxnet("vx-a", encrypt=True, keyring_file=keyrings.get("vx-a"))
    b, _, b_url = cluster.start_vxnet(
        "vx-b", (a_port,), encrypt=True, keyring_file=keyrings.get("vx-b")
    )
    _, _, rpc = cluster.start_serf("serf-1", join=a_port, encrypt=True)
    wait_for(
        "all three alive in serf",
        lambda: all(serf_status(cluster, rpc, n) == "alive" for n in MIXED),
    )
    return a_port, a_url, b, b_url, rpc


@pytest.mark.serf
def test_serf_keys_rotates_the_gossip_key_on_every_vxnet_node(cluster: Cluster) -> None:
    a_port, a_url, _, b_url, rpc = mixed_cluster(cluster)
    names = MIXED
    old, new = cluster.key, base64.b64encode(os.urandom(32)).decode()
    assert listed_keys(rpc) == {old: "3/3"}
    serf_keys(rpc, "-install", new)
    assert listed_keys(rpc) == {old: "3/3", new: "3/3"}
    serf_keys(rpc, "-use", new)
    serf_keys(rpc, "-remove", old)
    assert listed_keys(rpc) == {new: "3/3"}

    # Nobody was lost on the way, and the old key no longer gets anyone in.
    for url in (a_url, b_url):
        assert all(vxnet_status(cluster, url, n) == "alive" for n in names)
    cluster.start_vxnet("vx-old", (a_port,), encrypt=True, key=old)
    cluster.start_vxnet("vx-new", (a_port,), encrypt=True, key=new)
    wait_for(
        "vx-new to join with the new key", lambda: vxnet_status(cluster, a_url, "vx-new") == "alive"
    )
    assert "vx-old" not in cluster.vxnet_members(a_url), "a node with the removed key joined"
    assert "vx-old" not in (cluster.serf_members(rpc) or {})


def vxnet_keys(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vxnet", "keys", *args, "--api", url.removeprefix("http://")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.serf
def test_vxnet_keys_rotates_serf_and_vxnet_members_and_a_restart_keeps_the_new_key(
    cluster: Cluster,
) -> None:
    keyrings = {n: cluster.tmp / f"{n}-keyring.json" for n in ("vx-a", "vx-b")}
    a_port, a_url, b, _, rpc = mixed_cluster(cluster, keyrings)
    old, new = cluster.key, base64.b64encode(os.urandom(16)).decode()
    listed = vxnet_keys(a_url, "list")
    assert listed.returncode == 0, listed.stderr
    assert f"{old}  [3/3]  primary on 3" in listed.stdout, listed.stdout
    for step in (("install", new), ("use", new), ("remove", old)):
        done = vxnet_keys(a_url, *step)
        assert done.returncode == 0, (step, done.stdout, done.stderr)
        assert "Done on all 3 members" in done.stdout
    assert listed_keys(rpc) == {new: "3/3"}, "serf does not hold the new key alone"
    assert json.loads(keyrings["vx-b"].read_text()) == [new]

    # vx-b's config still names the old key: after a restart its keyring file wins.
    b.stop()
    cluster.start_vxnet("vx-b", (a_port,), encrypt=True, keyring_file=keyrings["vx-b"])
    wait_for(
        "the restarted vx-b to be alive in serf again",
        lambda: serf_status(cluster, rpc, "vx-b") == "alive" and listed_keys(rpc) == {new: "3/3"},
    )
    wrong = vxnet_keys(a_url, "remove", new)  # the primary key: every member refuses
    assert wrong.returncode == 1
    assert "3/3 members reported failure" in wrong.stderr


def put_record(url: str, key: str, value: dict[str, Any]) -> None:
    r = subprocess.run(
        [
            *(sys.executable, "-m", "vxnet", "store", "--api", url.removeprefix("http://")),
            *("put", key, json.dumps(value)),
        ],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert r.returncode == 0, r.stderr


def test_a_node_without_the_key_can_neither_join_nor_get_a_record_accepted(
    cluster: Cluster,
) -> None:
    _, a_port, a_url = cluster.start_vxnet("vx-a", encrypt=True)
    _, _, b_url = cluster.start_vxnet("vx-b", (a_port,), encrypt=True)
    # Strangers first, so they have had longer than the member that comes after them: one
    # with no key, one with another key. Each writes a forged overlay record on its own node.
    other = base64.b64encode(os.urandom(32)).decode()
    _, _, plain_url = cluster.start_vxnet("stranger-plain", (a_port,))
    _, _, other_url = cluster.start_vxnet("stranger-key", (a_port,), encrypt=True, key=other)
    put_record(plain_url, "overlay/198.18.0.66", {"vtep_ip": "44.128.0.66"})
    put_record(other_url, "overlay/198.18.0.67", {"vtep_ip": "44.128.0.67"})
    _, _, c_url = cluster.start_vxnet("vx-c", (a_port,), encrypt=True)
    put_record(c_url, "overlay/198.18.0.3", {"vtep_ip": "44.128.0.3"})

    def records(url: str) -> set[str]:
        return {r["key"] for r in fetch_json(f"{url}/v1/store?prefix=overlay/")["records"]}

    for url in (a_url, b_url):
        has = functools.partial(lambda u: "overlay/198.18.0.3" in records(u), url)
        wait_for(f"vx-c's record on {url}", has)
    for url in (a_url, b_url, c_url):
        members = cluster.vxnet_members(url)
        assert set(members) == {"vx-a", "vx-b", "vx-c"}, members
        assert records(url) == {"overlay/198.18.0.3"}, "a stranger's record was accepted"
    assert set(cluster.vxnet_members(plain_url)) == {"stranger-plain"}
