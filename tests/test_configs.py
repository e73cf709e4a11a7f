"""The deployment examples: configs/cluster (three masters, one agent) and configs/systemd.

Each rule is a function that returns problems, tested twice: on the shipped files (no problem)
and on a copy broken on purpose (the problem is found), so that no rule passes vacuously.
"""

from __future__ import annotations

import configparser
import dataclasses
import shlex
import shutil
import subprocess
import sys
from ipaddress import ip_address
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from vxnet.cli import build_parser
from vxnet.config import (
    AgentConfig,
    LogSettings,
    MasterConfig,
    Role,
    load_config,
    parse_hostport,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = ROOT / "configs" / "cluster"
SYSTEMD = ROOT / "configs" / "systemd"
MASTER_FILES = sorted(CLUSTER.glob("master-*.toml"))
AGENT_FILE = CLUSTER / "agent.toml"
UNITS: dict[Role, Path] = {
    "master": SYSTEMD / "vxnet-master.service",
    "agent": SYSTEMD / "vxnet-agent.service",
}
INSTALLED_VXNET = "/usr/local/bin/vxnet"


def load_masters() -> dict[str, MasterConfig]:
    masters = {}
    for path in MASTER_FILES:
        config = load_config(path, role="master")
        assert isinstance(config, MasterConfig)
        masters[path.name] = config
    return masters


def load_agent() -> AgentConfig:
    config = load_config(AGENT_FILE, role="agent")
    assert isinstance(config, AgentConfig)
    return config


# --- configs/cluster ----------------------------------------------------------------------------


def cluster_problems(masters: Mapping[str, MasterConfig], agent: AgentConfig) -> list[str]:
    """What makes the master files disagree with each other or with the agent's file."""
    found: list[str] = []
    configs = list(masters.items())
    first_name, first = configs[0]
    for name, m in configs[1:]:
        if m.network != first.network:
            found.append(f"{name}: [network] differs from {first_name}'s")
        if m.log.replicas != first.log.replicas:
            found.append(f"{name}: log.replicas {m.log.replicas} differs from {first_name}'s")
    api_ports: set[int] = set()
    for name, m in masters.items():
        me = me_of(m)
        if me not in m.log.replicas:
            found.append(f"{name}: log.listen {me} is not in log.replicas")
        if m.log.quorum != 2:
            found.append(f"{name}: log.quorum is {m.log.quorum}, not 2")
        # A follower sends requests to the leader at the leader's log host and its own API port.
        api_host, api_port = parse_hostport(m.master.listen)
        api_ports.add(api_port)
        if api_host != parse_hostport(me)[0] and not ip_address(api_host).is_unspecified:
            found.append(f"{name}: master.listen {m.master.listen} is not on the log's host {me}")
    if len(api_ports) > 1:
        found.append(f"the masters' API ports differ: {sorted(api_ports)}")
    mine = sorted(me_of(m) for m in masters.values())
    if mine != sorted(first.log.replicas):
        found.append(f"log.replicas {first.log.replicas} are not the masters' own {mine}")
    listens = sorted(m.master.listen for m in masters.values())
    if sorted(agent.agent.masters) != listens:
        found.append(f"agent.masters {agent.agent.masters} is not the masters' {listens}")
    if agent.gossip.advertise is None or parse_hostport(agent.gossip.advertise)[0] != str(
        agent.agent.ip
    ):
        found.append(
            f"gossip.advertise {agent.gossip.advertise} is not on agent.ip {agent.agent.ip}"
        )
    return found


def me_of(m: MasterConfig) -> str:
    return m.log.advertise if m.log.advertise is not None else m.log.listen


def with_log(m: MasterConfig, log: LogSettings) -> MasterConfig:
    return dataclasses.replace(m, log=log)


def test_there_are_three_master_files() -> None:
    assert [p.name for p in MASTER_FILES] == ["master-1.toml", "master-2.toml", "master-3.toml"]


@pytest.mark.parametrize("path", MASTER_FILES, ids=lambda p: p.name)
def test_master_file_passes_the_check(path: Path) -> None:
    assert isinstance(load_config(path, role="master"), MasterConfig)
    assert isinstance(load_config(path), MasterConfig)  # its tables say it is a master's


def test_agent_file_passes_the_check() -> None:
    assert isinstance(load_config(AGENT_FILE, role="agent"), AgentConfig)
    assert isinstance(load_config(AGENT_FILE), AgentConfig)


def test_cluster_files_agree() -> None:
    assert cluster_problems(load_masters(), load_agent()) == []


def _swap_replicas(masters: dict[str, MasterConfig], agent: AgentConfig) -> None:
    m = masters["master-2.toml"]
    masters["master-2.toml"] = with_log(
        m, dataclasses.replace(m.log, replicas=tuple(reversed(m.log.replicas)))
    )


def _other_network(masters: dict[str, MasterConfig], agent: AgentConfig) -> None:
    m = masters["master-3.toml"]
    overlay = dataclasses.replace(m.network.overlays[0], prefix=25)
    network = dataclasses.replace(m.network, overlays=(overlay,))
    masters["master-3.toml"] = dataclasses.replace(m, network=network)


def _listen_not_replica(masters: dict[str, MasterConfig], agent: AgentConfig) -> None:
    m = masters["master-1.toml"]
    masters["master-1.toml"] = with_log(m, dataclasses.replace(m.log, listen="198.18.0.9:61090"))


def _quorum_one(masters: dict[str, MasterConfig], agent: AgentConfig) -> None:
    for name, m in masters.items():
        masters[name] = with_log(m, dataclasses.replace(m.log, quorum=1))


def _api_elsewhere(masters: dict[str, MasterConfig], agent: AgentConfig) -> None:
    m = masters["master-2.toml"]
    settings = dataclasses.replace(m.master, listen="198.18.0.2:61081")
    masters["master-2.toml"] = dataclasses.replace(m, master=settings)


BREAKAGES: list[tuple[Callable[[dict[str, MasterConfig], AgentConfig], None], str]] = [
    (_swap_replicas, "master-2.toml: log.replicas"),
    (_other_network, "master-3.toml: [network] differs"),
    (_listen_not_replica, "master-1.toml: log.listen 198.18.0.9:61090 is not in log.replicas"),
    (_quorum_one, "log.quorum is 1, not 2"),
    (_api_elsewhere, "the masters' API ports differ"),
]


@pytest.mark.parametrize(
    ("break_it", "expected"), BREAKAGES, ids=[f.__name__.lstrip("_") for f, _ in BREAKAGES]
)
def test_cluster_check_finds_a_master_that_disagrees(
    break_it: Callable[[dict[str, MasterConfig], AgentConfig], None], expected: str
) -> None:
    masters = load_masters()
    agent = load_agent()
    break_it(masters, agent)
    assert any(expected in line for line in cluster_problems(masters, agent))


@pytest.mark.parametrize(
    ("masters", "expected"),
    [
        (("198.18.0.1:61080", "198.18.0.2:61080"), "agent.masters"),
        (("198.18.0.1:61080", "198.18.0.2:61080", "198.18.0.4:61080"), "agent.masters"),
    ],
    ids=["missing-one", "wrong-one"],
)
def test_cluster_check_finds_an_agent_with_other_masters(
    masters: tuple[str, ...], expected: str
) -> None:
    agent = load_agent()
    agent = dataclasses.replace(agent, agent=dataclasses.replace(agent.agent, masters=masters))
    assert any(line.startswith(expected) for line in cluster_problems(load_masters(), agent))


# --- configs/systemd ----------------------------------------------------------------------------


class UnitParser(configparser.ConfigParser):
    """systemd unit files as INI: keys keep their case, ``%`` is not special."""

    def __init__(self) -> None:
        super().__init__(strict=False, interpolation=None)

    def optionxform(self, optionstr: str) -> str:
        return optionstr


def unit_problems(text: str, role: Role, state_dir: str) -> list[str]:
    """What is wrong with the unit of ``role`` (its state directory must be ``state_dir``)."""
    unit = UnitParser()
    try:
        unit.read_string(text)
    except configparser.Error as exc:
        return [f"not an INI file: {exc}"]
    found = [f"no [{s}] section" for s in ("Unit", "Service", "Install") if not unit.has_section(s)]
    if found:
        return found
    service = unit["Service"]
    start = shlex.split(service.get("ExecStart", ""))
    pre = shlex.split(service.get("ExecStartPre", ""))
    if not start or start[1:3] != [role, "-c"] or len(start) != 4:
        return [f"ExecStart {start} does not run `vxnet {role} -c FILE`"]
    path = start[3]
    if pre[1:] != ["config", "check", path, "--role", role]:
        found.append(f"ExecStartPre {pre} does not run `vxnet config check {path} --role {role}`")
    for argv in (start, pre):
        if argv and argv[0] != INSTALLED_VXNET:
            found.append(f"{argv[0]} is not {INSTALLED_VXNET}")
        found.extend(cli_problems(argv[1:]))
    expected = {
        "Type": "simple",
        "Restart": "on-failure",
        "RestartSec": "2",
        "KillSignal": "SIGTERM",
        "TimeoutStopSec": "20",
        "LimitNOFILE": "65536",
    }
    for key, value in expected.items():
        if service.get(key) != value:
            found.append(f"Service.{key} is {service.get(key)!r}, not {value!r}")
    if "/var/lib/" + service.get("StateDirectory", "") != state_dir:
        found.append(f"StateDirectory {service.get('StateDirectory')!r} does not make {state_dir}")
    after = unit["Unit"].get("After", "").split()
    wants = unit["Unit"].get("Wants", "").split()
    if "network-online.target" not in after or "network-online.target" not in wants:
        found.append("not After= and Wants= network-online.target")
    if role == "agent" and "docker.service" not in after:
        found.append("the agent does not start After=docker.service")
    if "docker.service" in unit["Unit"].get("Requires", "").split():
        found.append("Requires=docker.service: Docker is optional")
    if unit["Install"].get("WantedBy") != "multi-user.target":
        found.append("not WantedBy=multi-user.target")
    return found


def cli_problems(args: list[str]) -> list[str]:
    """Whether the vxnet command line parses (argparse exits on a bad one)."""
    try:
        build_parser().parse_args(args)
    except SystemExit:
        return [f"`vxnet {shlex.join(args)}` is not a vxnet command line"]
    return []


def state_dir(role: Role) -> str:
    if role == "agent":
        return load_agent().agent.state_dir
    (data_dir,) = {m.master.data_dir for m in load_masters().values()}
    return data_dir


@pytest.mark.parametrize("role", list(UNITS))
def test_unit_runs_the_checked_file(role: Role) -> None:
    assert unit_problems(UNITS[role].read_text(encoding="utf-8"), role, state_dir(role)) == []


@pytest.mark.parametrize(
    ("role", "old", "new", "expected"),
    [
        ("master", "--role master", "--role agent", "ExecStartPre"),
        ("agent", "check /etc/vxnet/agent.toml", "check /etc/vxnet/master.toml", "ExecStartPre"),
        ("agent", "vxnet agent -c", "vxnet master -c", "ExecStart"),
        ("master", "vxnet master -c", "vxnet master --config-file", "ExecStart"),
        ("master", "[Install]", "[Installation]", "no [Install] section"),
        ("master", "check /etc", "chekc /etc", "is not a vxnet command line"),
        ("agent", "StateDirectory=vxnet/agent", "StateDirectory=vxnet", "StateDirectory"),
        ("agent", "RestartSec=2", "RestartSec=30", "Service.RestartSec"),
        ("agent", " docker.service\n", "\n", "After=docker.service"),
    ],
)
def test_unit_check_finds_a_broken_unit(role: Role, old: str, new: str, expected: str) -> None:
    text = UNITS[role].read_text(encoding="utf-8")
    assert old in text
    broken = text.replace(old, new)
    assert any(expected in line for line in unit_problems(broken, role, state_dir(role)))


SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
VENV_VXNET = Path(sys.executable).with_name("vxnet")


def systemd_verify(units: Mapping[str, str], tmp_path: Path) -> list[str]:
    """``systemd-analyze verify`` on the units (name -> text), with ExecStart= pointing at this
    venv's vxnet: the lines it prints about them (it exits 0 on unknown keys, but says so)."""
    assert SYSTEMD_ANALYZE is not None
    paths = []
    for name, text in units.items():
        path = tmp_path / name
        path.write_text(text.replace(INSTALLED_VXNET, str(VENV_VXNET)), encoding="utf-8")
        paths.append(str(path))
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", *paths],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = (result.stdout + result.stderr).splitlines()
    lines = [line for line in output if any(name in line for name in units)]
    if result.returncode != 0:
        lines.append(f"systemd-analyze verify exited {result.returncode}: {output}")
    return lines


needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None or not VENV_VXNET.exists(),
    reason="systemd-analyze is not installed (or vxnet is not in this venv)",
)


@needs_systemd_analyze
def test_systemd_analyze_verifies_the_units(tmp_path: Path) -> None:
    units = {path.name: path.read_text(encoding="utf-8") for path in UNITS.values()}
    assert systemd_verify(units, tmp_path) == []


@needs_systemd_analyze
def test_systemd_analyze_reports_a_misspelt_key(tmp_path: Path) -> None:
    text = UNITS["master"].read_text(encoding="utf-8").replace("RestartSec=", "RestartSecs=")
    found = systemd_verify({"vxnet-master.service": text}, tmp_path)
    assert any("RestartSecs" in line for line in found)
