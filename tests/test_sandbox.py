"""``vxnet sandbox``: a whole cluster on this machine, run as a user runs it (real processes).

The sandboxes here live in directories of their own (``VXNET_SANDBOX_DIR``), except the one the
README's first command brings up, which uses the default, as a user's would.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from vxnet.sandbox import _sandbox as sandbox
from vxnet.sandbox.lab import LAB_ROOT, NETNS_DIR
from vxnet.sandbox.podman import podman_available
from waiting import wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator

REPO = Path(__file__).resolve().parent.parent
DOCKER = shutil.which("dockerd") is not None
PODMAN = podman_available()
lab = pytest.mark.lab
wait = functools.partial(wait_until, poll=0.5)  # each look runs processes


# --- helpers ------------------------------------------------------------------------------------


def vxnet(
    base: Path | None, *args: str, timeout: float = 300, check: bool = True
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if base is not None:
        env["VXNET_SANDBOX_DIR"] = str(base)
    else:
        env.pop("VXNET_SANDBOX_DIR", None)
    result = subprocess.run(
        [sys.executable, "-m", "vxnet", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    if check and result.returncode != 0:
        pytest.fail(
            f"vxnet {' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
        )
    return result


def exec_in(base: Path | None, name: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return vxnet(base, "sandbox", "exec", name, *argv, timeout=60, check=False)


def pings(base: Path | None, state: dict[str, Any]) -> list[str]:
    """Every container pings every other (IPv4, and IPv6 where both have it): the failures."""
    env = dict(os.environ)
    if base is not None:
        env["VXNET_SANDBOX_DIR"] = str(base)
    procs = []
    for src in state["containers"]:
        for dst in state["containers"]:
            for key in ("ip", "ip6"):
                if src is not dst and src.get(key) and dst.get(key):
                    argv = [sys.executable, "-m", "vxnet", "sandbox", "exec", src["name"]]
                    argv += ["ping", "-c", "1", "-W", "3", dst[key]]
                    procs.append(
                        (
                            f"{src['name']} -> {dst['name']} {dst[key]}",
                            subprocess.Popen(argv, stdout=subprocess.DEVNULL, env=env),
                        )
                    )
    assert procs, "no container pairs"
    return [what for what, p in procs if p.wait(timeout=60) != 0]


def answers(base: Path | None, host: str, name: str, rtype: str = "A") -> set[str]:
    out = exec_in(base, host, "dig", "@127.0.0.1", "+short", "+tries=1", "+time=2", name, rtype)
    return {line for line in out.stdout.split() if line}


def routes_via_vtep(base: Path | None, host: str) -> set[str]:
    out = exec_in(base, host, "ip", "-j", "route", "show", "dev", "vtep1024").stdout
    return {r["dst"] for r in json.loads(out or "[]") if r.get("gateway")}


def snapshot(base: Path | None) -> dict[str, Any]:
    """What the sandbox could leave behind on the machine, to compare before and after."""
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    cgroups = sorted(p.name for p in Path("/sys/fs/cgroup").glob("vxnet-dk-*"))
    return {
        "netns": sorted(os.listdir(NETNS_DIR)) if NETNS_DIR.is_dir() else [],
        "links": sorted(line.split(":")[1].strip() for line in links.stdout.splitlines()),
        "mounts": sorted(m for m in mounts if "vxnet" in m or "docker" in m or "netns" in m),
        "cgroups": cgroups,
        "lab slots": sorted(os.listdir(LAB_ROOT)) if LAB_ROOT.is_dir() else [],
        "short docker roots": sorted(os.listdir("/run/vxnet-dk"))
        if Path("/run/vxnet-dk").is_dir()
        else [],
        "sandbox dir": sorted(os.listdir(base)) if base is not None and base.is_dir() else [],
    }


def sandbox_processes(base: Path) -> list[str]:
    """Processes that belong to a sandbox: its vxnet processes, dockerds and containers."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{entry.name}/cmdline").read_bytes().replace(b"\0", b" ")
            text = cmdline.decode(errors="replace")
            if str(base) in text or "sleep 2147483647" in text:
                found.append(f"{entry.name}: {text[:200]}")
    return found


def read_state(base: Path | None) -> dict[str, Any]:
    path = (sandbox.sandbox_dir() if base is None else base) / "sandbox.json"
    return dict(json.loads(path.read_text()))


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def check_secrets_kept(base: Path, summary: dict[str, Any], *said: str) -> None:
    """The sandbox's CA, keys and token are in ``base/pki``, readable by root alone, as are the
    configurations that hold the token; neither the token nor the gossip key is in a log, or in
    what a command ``said``."""
    secured = summary["security"]
    pki = base / "pki"
    assert secured["pki"] == str(pki)
    assert mode(pki) == 0o700
    for key in ("ca", "ca_key", "operator_cert", "operator_key", "token_file", "gossip_key"):
        assert Path(secured[key]).is_file(), key
    hosts = [*(m["name"] for m in summary["masters"]), *(a["name"] for a in summary["agents"])]
    secret = [pki / f"{n}-key.pem" for n in [*hosts, "ca", "operator"]]
    secret += [pki / "gossip.key", pki / "master.token"]
    secret += [base / "hosts" / f"{n}.toml" for n in hosts]
    assert {str(p): mode(p) for p in secret} == {str(p): 0o600 for p in secret}
    token = Path(secured["token_file"]).read_text().strip()
    gossip_key = Path(secured["gossip_key"]).read_text().strip()
    assert len(token) >= 32
    assert token in (base / "hosts" / "a1.toml").read_text()
    for text in [*(p.read_text() for p in (base / "hosts").glob("*.log")), *said]:
        assert token not in text
        assert gossip_key not in text


@pytest.fixture
def base(lab_ready: None) -> Iterator[Path]:
    """A sandbox directory of this test's own; whatever the test did, ``down`` runs at the end."""
    path = Path(f"/tmp/vxsb-{secrets.token_hex(3)}")
    try:
        yield path
    finally:
        vxnet(path, "sandbox", "down", "--quiet", check=False)
        shutil.rmtree(path, ignore_errors=True)


# --- without a cluster --------------------------------------------------------------------------


def test_missing_prerequisites_name_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(sandbox, "_which", lambda c: None if c in ("dig", "dockerd") else "/x")
    lines = sandbox.missing_prerequisites(sandbox.Spec(docker=True))
    assert lines[0].startswith("root:")
    assert "dig: apt-get install bind9-dnsutils" in lines
    assert "dockerd (asked for by --docker): apt-get install docker.io" in lines
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(sandbox, "_which", lambda c: "/x")
    monkeypatch.setattr(sandbox, "CNI_DIRS", ("/nonexistent",))
    (line,) = sandbox.missing_prerequisites(sandbox.Spec(docker=False))
    assert "apt-get install containernetworking-plugins" in line


def test_bad_sizes_and_no_sandbox_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(sandbox.SandboxError, match="--masters must be 1 or 3, not 2"):
        sandbox.Spec(masters=2).check()
    with pytest.raises(sandbox.SandboxError, match="--agents must be 2 to 20, not 1"):
        sandbox.Spec(agents=1).check()
    bad = vxnet(tmp_path, "sandbox", "up", "--agents", "0", check=False)
    assert bad.returncode == 1
    assert "--agents must be 2 to 20, not 0" in bad.stderr
    for args in (
        ("status",),
        ("exec", "a1", "true"),
        ("kill", "a1"),
        ("start", "a1"),
        ("logs", "a1"),
    ):
        result = vxnet(tmp_path, "sandbox", *args, check=False)
        assert result.returncode == 1, args
        assert "no sandbox is up" in result.stderr, args
    down = vxnet(tmp_path, "sandbox", "down")
    assert "no sandbox is up: nothing to remove" in down.stdout
    (tmp_path / "sandbox.json").write_text("{not json")
    damaged = vxnet(tmp_path, "sandbox", "status", check=False)
    assert "is damaged" in damaged.stderr
    assert "`vxnet sandbox down` removes the sandbox" in damaged.stderr
    vxnet(tmp_path, "sandbox", "down")
    assert not (tmp_path / "sandbox.json").exists()


def test_a_sandbox_whose_lab_is_gone_says_so_and_down_clears_it(tmp_path: Path) -> None:
    """As after a reboot with the sandbox's directory on disk: namespaces and slot are gone."""
    prefix = f"vxl-250-{secrets.token_hex(3)}"
    state = {
        "version": 1,
        "phase": "up",
        "spec": {"masters": 1, "agents": 2, "ipv6": False, "docker": True},
        "lab": {"slot": 250, "prefix": prefix, "subnet": "198.18.250.0/24"},
        "hosts": {
            "a1": {
                "role": "agent",
                "pid": None,
                "netns": f"{prefix}-a1",
                "config": str(tmp_path / "hosts" / "a1.toml"),
                "log": str(tmp_path / "hosts" / "a1.log"),
                "docker": {"socket": str(tmp_path / "nothing.sock")},
            }
        },
        "containers": [
            {
                "name": "a1-web",
                "host": "a1",
                "kind": "cni",
                "task": "web",
                "ip": "9.0.0.2",
                "netns": f"{prefix}-a1-web",
            },
            {
                "name": "a1-db",
                "host": "a1",
                "kind": "docker",
                "task": "db",
                "ip": "9.0.0.130",
                "id": "0123",
            },
        ],
    }
    (tmp_path / "sandbox.json").write_text(json.dumps(state))
    (tmp_path / "hosts").mkdir()
    gone = "is gone (after a reboot?): `vxnet sandbox down`, then `vxnet sandbox up`"
    for name in ("a1", "a1-web"):
        result = vxnet(tmp_path, "sandbox", "exec", name, "true", check=False)
        assert result.returncode == 1
        assert gone in result.stderr, result.stderr
    docker = vxnet(tmp_path, "sandbox", "exec", "a1-db", "true", check=False)
    assert "a1's dockerd does not answer" in docker.stderr, docker.stderr
    start = vxnet(tmp_path, "sandbox", "start", "a1", check=False)
    assert "the sandbox's lab is gone (after a reboot?)" in start.stderr, start.stderr
    down = vxnet(tmp_path, "sandbox", "down")
    assert f"removed the sandbox's files in {tmp_path}" in down.stdout
    assert not tmp_path.exists()


# --- a sandbox ----------------------------------------------------------------------------------


@lab
def test_up_reach_resolve_kill_start_and_down_leaves_nothing(base: Path) -> None:
    before = snapshot(base)
    up = vxnet(base, "sandbox", "up", "--agents", "3", "--json", *(["--podman"] if PODMAN else []))
    kinds_run = 1 + DOCKER + PODMAN  # CNI, and Docker and podman where installed
    steps = 8 + DOCKER + PODMAN
    summary = json.loads(up.stdout)
    assert f"{steps}/{steps} checking that every container reaches every other" in up.stderr
    assert "resolving the names inside every container, with no flags" in up.stderr
    assert "with TLS, a master token and gossip encryption" in up.stderr
    assert summary["phase"] == "up"
    assert [a["name"] for a in summary["agents"]] == ["a1", "a2", "a3"]
    assert all(a["process"] == "running" for a in summary["agents"])
    assert all(a["overlay"]["remotes"] == 2 for a in summary["agents"])
    state = read_state(base)
    assert state["spec"]["tls"] is True

    # secure by default: TLS with the sandbox's own CA, a master token, gossip encryption
    secured = summary["security"]
    assert (secured["tls"], secured["token"], secured["gossip_encryption"]) == (True, True, True)
    assert secured["summary"] == (
        f"TLS 1.3 with client certificates (CA {base}/pki/ca.pem), master token, gossip encryption"
    )
    check_secrets_kept(base, summary, up.stdout, up.stderr)
    for agent in ("a1", "a2", "a3"):
        overlay = json.loads(exec_in(base, agent, "vxnet", "overlay", "status", "--json").stdout)
        assert overlay["security_warnings"] == [], (agent, overlay["security_warnings"])
    # the summary's command reads the master's state over HTTPS with the operator's certificate
    (read_master,) = [t for t in summary["try"] if " master state " in t]
    assert read_master.endswith(
        f"--ca {secured['ca']} --cert {secured['operator_cert']} --key {secured['operator_key']}"
    )
    argv = read_master.split(" sandbox exec ")[1].split()
    master_state = exec_in(base, *argv, "--json")
    assert master_state.returncode == 0, master_state.stderr
    agent_ips = sorted(state["hosts"][n]["address"] for n in ("a1", "a2", "a3"))
    assert sorted(a["ip"] for a in json.loads(master_state.stdout)["agents"]) == agent_ips
    anonymous = exec_in(base, *argv[: argv.index("--ca")])
    assert anonymous.returncode != 0, anonymous.stdout
    kinds = sorted(c["kind"] for c in state["containers"])
    assert kinds == ["cni"] * 3 + ["docker"] * 3 * DOCKER + ["podman"] * 3 * PODMAN

    again = vxnet(base, "sandbox", "up", check=False)
    assert again.returncode == 1
    assert "a sandbox exists already" in again.stderr

    # checked here again, not taken from up's word: every pair, every name on every host
    assert pings(base, state) == []
    by_task: dict[str, set[str]] = {}
    for c in state["containers"]:
        by_task.setdefault(c["task"], set()).add(c["ip"])
    for host in ("a1", "a2", "a3"):
        for task, ips in by_task.items():
            name = f"{task}.marathon.containerip.dcos.thisdcos.directory"
            assert answers(base, host, name) == ips, (host, name)

    ok = vxnet(base, "sandbox", "check")
    containers = 3 * kinds_run
    pairs = containers * (containers - 1)
    assert f"reachability: {pairs} of {pairs} pings answered" in ok.stdout, ok.stdout
    names = kinds_run * 2 * 3  # containerip and agentip of each task, on each agent
    assert f"names: {names} of {names} answers as expected (a1, a2, a3)" in ok.stdout, ok.stdout
    inside = containers * kinds_run  # every container asks for every task's name
    assert f"names inside containers: {inside} of {inside} lookups as expected" in ok.stdout
    # a CNI container's resolver is the agent's well-known address, from the CNI result
    resolv = exec_in(base, "a1-web", "cat", "/etc/resolv.conf").stdout
    assert resolv == "nameserver 198.51.100.1\n", resolv

    # kill an agent: the others drop its routes and its names, the rest keeps working
    a2_web = next(c for c in state["containers"] if c["name"] == "a2-web")
    a2_subnet = next(s for s in routes_via_vtep(base, "a1") if a2_web["ip"].startswith(s[:5]))
    killed = vxnet(base, "sandbox", "kill", "a2")
    assert "stopped by SIGKILL" in killed.stdout
    status = vxnet(base, "sandbox", "status", "--json", check=False)
    assert status.returncode == 1
    (a2,) = [a for a in json.loads(status.stdout)["agents"] if a["name"] == "a2"]
    assert a2["process"] == "stopped"
    web = "web.marathon.containerip.dcos.thisdcos.directory"
    gone = wait(
        "a1 to drop a2's route",
        lambda: a2_subnet not in routes_via_vtep(base, "a1"),
        sandbox.RECORD_GRACE + 25,
    )
    print(f"a2's route left a1 {gone:.1f} s after the kill was confirmed")
    wait(
        "a2-web to leave the DNS answers", lambda: a2_web["ip"] not in answers(base, "a3", web), 15
    )
    a3_web = next(c for c in state["containers"] if c["name"] == "a3-web")
    assert exec_in(base, "a1-web", "ping", "-c", "1", "-W", "2", a3_web["ip"]).returncode == 0
    assert vxnet(base, "sandbox", "kill", "a2", check=False).returncode == 1
    looked = vxnet(base, "sandbox", "check", "--json", check=False)
    assert looked.returncode == 1
    result = json.loads(looked.stdout)
    assert {"from": "a1-web", "to": "a2-web"}.items() <= next(
        u for u in result["unreachable"] if u["from"] == "a1-web" and u["to"] == "a2-web"
    ).items()
    assert all("a2" in (u["from"][:2], u["to"][:2]) for u in result["unreachable"])
    assert result["agents_asked"] == ["a1", "a3"]
    missing = {
        ip for w in result["wrong_answers"] for ip in w["expected"] if ip not in w["answered"]
    }
    assert a2_web["ip"] in missing

    started = vxnet(base, "sandbox", "start", "a2")
    assert "vxnet agent started" in started.stdout
    wait("a1 to route to a2 again", lambda: a2_subnet in routes_via_vtep(base, "a1"), 30)
    wait(
        "a1-web to reach a2-web again",
        lambda: exec_in(base, "a1-web", "ping", "-c", "1", "-W", "1", a2_web["ip"]).returncode == 0,
        30,
    )
    wait("a2-web back in the DNS answers", lambda: a2_web["ip"] in answers(base, "a3", web), 30)
    status_text = vxnet(base, "sandbox", "status").stdout
    assert f"security: {secured['summary']}\n" in status_text, status_text
    assert f"https://{summary['masters'][0]['api']}" in status_text
    wait(
        "check to pass again",
        lambda: vxnet(base, "sandbox", "check", check=False).returncode == 0,
        30,
    )
    log = vxnet(base, "sandbox", "logs", "a2", "-n", "200").stdout
    assert "agent a2: gossip on" in log
    assert "allocation from the masters" in log
    if DOCKER:
        assert vxnet(base, "sandbox", "logs", "a1", "--dockerd").returncode == 0
    unknown = vxnet(base, "sandbox", "logs", "zz", check=False)
    assert "no host 'zz' runs a vxnet process in the sandbox: m1, a1, a2, a3" in unknown.stderr

    down = vxnet(base, "sandbox", "down")
    assert "removed lab" in down.stdout
    assert sandbox_processes(base) == []
    assert snapshot(base) == before
    assert not base.exists()
    assert "no sandbox is up" in vxnet(base, "sandbox", "down").stdout


@lab
def test_a_dual_stack_sandbox_with_three_masters(base: Path) -> None:
    up = vxnet(base, "sandbox", "up", "--agents", "2", "--masters", "3", "--ipv6", "--json")
    summary = json.loads(up.stdout)
    assert [m["process"] for m in summary["masters"]] == ["running"] * 3
    state = read_state(base)
    assert all(c["ip6"] for c in state["containers"]), state["containers"]
    assert pings(base, state) == []  # both families: IPv6 pairs are in it
    six = {c["ip6"] for c in state["containers"] if c["task"] == "web"}
    name = "web.marathon.containerip.dcos.thisdcos.directory"
    assert answers(base, "a2", name, "AAAA") == six
    # the masters' log has a leader, and stays usable with one master down
    m2 = str(base / "hosts" / "m2.toml")
    assert "coordinator" in exec_in(base, "m2", "vxnet", "log", "status", "-c", m2).stdout
    vxnet(base, "sandbox", "kill", "m1")
    wait(
        "a coordinator among m2 and m3",
        lambda: "coordinator" in exec_in(base, "m2", "vxnet", "log", "status", "-c", m2).stdout,
        15,
    )
    m1, m2_api = state["hosts"]["m1"]["address"], f"{state['hosts']['m2']['address']}:61080"
    secured = summary["security"]
    operator = ["--ca", secured["ca"], "--cert", secured["operator_cert"]]
    operator += ["--key", secured["operator_key"]]
    state_after = exec_in(base, "a1", "vxnet", "master", "state", "--api", m2_api, *operator)
    said = state_after.stdout + state_after.stderr
    leaders = [line for line in state_after.stdout.splitlines() if line.startswith("leader: ")]
    assert len(leaders) == 1, said
    assert f"//{m1}:" not in leaders[0], said


def interrupt_up(base: Path, sig: signal.Signals, *more: str) -> tuple[str, int]:
    """Start ``up`` (2 agents, no Docker, ``more`` arguments), send ``sig`` once its agents are
    starting; what it wrote on stderr and its exit status."""
    env = {**os.environ, "VXNET_SANDBOX_DIR": str(base)}
    argv = [sys.executable, "-m", "vxnet", "sandbox", "up", "--agents", "2", "--no-docker", *more]
    up = subprocess.Popen(
        argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env
    )
    assert up.stderr is not None
    seen = []
    try:
        for line in up.stderr:
            seen.append(line)
            if "waiting for every agent" in line:
                break
    finally:
        up.send_signal(sig)
        seen.append(up.stderr.read())
        up.wait(timeout=60)
        up.stderr.close()
    said = "".join(seen)
    assert "waiting for every agent" in said, said
    return said, up.returncode


@lab
def test_down_removes_a_sandbox_whose_up_was_killed(base: Path) -> None:
    """Also the plain mode (``--no-tls``), as far as ``up`` got: recorded, nothing secured."""
    before = snapshot(base)
    said, _ = interrupt_up(base, signal.SIGKILL, "--no-tls")
    assert "2 agents, plain (--no-tls)" in said, said
    state = read_state(base)
    assert state["phase"] == "building"
    assert state["spec"]["tls"] is False
    assert len(sandbox_processes(base)) >= 3, "the master and agents outlive up"
    assert not (base / "pki").exists()
    agent_config = (base / "hosts" / "a1.toml").read_text()
    assert "master_token" not in agent_config
    assert "\nca = " not in agent_config
    status = json.loads(vxnet(base, "sandbox", "status", "--json", check=False).stdout)
    assert status["security"] == {
        "tls": False,
        "token": False,
        "gossip_encryption": False,
        "summary": "off (--no-tls): plain HTTP, no token, gossip in clear",
    }
    (read_master,) = [t for t in status["try"] if " master state " in t]
    assert "--ca" not in read_master
    # the lab is kept by the sandbox's file, not by the dead up process
    subprocess.run(
        [sys.executable, "-m", "vxnet", "lab", "cleanup"], check=True, capture_output=True
    )
    prefix = state["lab"]["prefix"]
    assert any(n.startswith(prefix) for n in os.listdir(NETNS_DIR))
    down = vxnet(base, "sandbox", "down")
    assert f"removed lab {prefix}" in down.stdout
    assert sandbox_processes(base) == []
    assert snapshot(base) == before


@lab
def test_an_interrupted_up_removes_what_it_built(base: Path) -> None:
    before = snapshot(base)
    said, status = interrupt_up(base, signal.SIGINT)
    assert status == 130, said
    assert "interrupted; the sandbox was removed again; its logs are in /tmp/" in said
    kept = Path(said.split("its logs are in ")[1].split()[0])
    assert (kept / "a1.log").is_file()
    shutil.rmtree(kept)
    assert sandbox_processes(base) == []
    assert snapshot(base) == before
    assert not base.exists()


# --- the README's first command -----------------------------------------------------------------


def readme_commands() -> list[str]:
    """The commands of the README's first sh block (its first screen), comments dropped."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", text, re.S)
    assert block is not None, "README.md has no sh code block"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines()]


def readme_first_command() -> str:
    text = (REPO / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", text, re.S)
    assert block is not None, "README.md has no sh code block"
    return block.group(1).splitlines()[0]


def test_ci_runs_the_readmes_second_command() -> None:
    first, second = readme_commands()
    assert first == "./scripts/sandbox"
    ci = [
        line.strip()
        for line in (REPO / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.startswith("#") and not line.startswith(("set ", "cd "))
    ]
    assert ci == [second], f".ci/run must run exactly {second!r}, it runs {ci}"


@lab
def test_readme_first_command_brings_a_sandbox_up(lab_ready: None) -> None:
    command = readme_first_command()
    assert command.startswith("./scripts/sandbox")
    default = sandbox.sandbox_dir()
    if os.environ.get("VXNET_SANDBOX_DIR") is None and (default / "sandbox.json").exists():
        pytest.fail(f"a sandbox is up in {default}: `vxnet sandbox down` it before this test")
    env = dict(os.environ)
    env.pop("VXNET_SANDBOX_DIR", None)
    try:
        result = subprocess.run(
            ["bash", "-c", command],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=900,
            env=env,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "vxnet sandbox is up in" in result.stdout
        assert "checked: every container reached every other" in result.stdout
        assert "security: TLS 1.3 with client certificates (CA " in result.stdout
        status = vxnet(None, "sandbox", "status", "--json")
        assert json.loads(status.stdout)["phase"] == "up"
    finally:
        vxnet(None, "sandbox", "down", "--quiet", check=False)
    assert not (default / "sandbox.json").exists()
