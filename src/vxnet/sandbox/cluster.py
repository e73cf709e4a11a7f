"""A vxnet cluster of real processes in a :class:`~.lab.Lab`: for tests, benchmarks, the sandbox.

:class:`LabCluster` writes the configuration of every master and agent from the same dataclasses
a real deployment's files load into (:mod:`vxnet.config`, rendered with ``to_toml``), starts
``vxnet master`` and ``vxnet agent`` as processes inside the lab's hosts, waits for the overlay
to converge (through ``vxnet overlay status`` run inside each host, as an operator would), and
attaches containers with the conflists the agents write (:mod:`vxnet.sandbox.cni`, with the Debian
CNI plugins and the agent's ``vxnet-ipam`` on ``CNI_PATH``). The lab's teardown stops every
process it started.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Network
from typing import TYPE_CHECKING, Any

from vxnet.config import (
    AgentConfig,
    AgentSettings,
    DnsSettings,
    GossipSettings,
    LogSettings,
    MasterConfig,
    MasterSettings,
    NetworkConfig,
    Overlay,
    to_toml,
)
from vxnet.sandbox.cni import find_plugin_dir, run_conflist

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    from vxnet.sandbox.lab import Container, Host, Lab

__all__ = ["Attachment", "LabCluster", "dual_stack_network"]

MASTER_PORT = 61080
LOG_PORT = 61090
GOSSIP_PORT = 7946


def dual_stack_network() -> NetworkConfig:
    """The default network ``dcos`` (9.0.0.0/8, /24 per agent) with IPv6 fd01:b::/64 (/80)."""
    return NetworkConfig(
        overlays=(
            Overlay(
                name="dcos",
                subnet=IPv4Network("9.0.0.0/8"),
                prefix=24,
                subnet6=IPv6Network("fd01:b::/64"),
                prefix6=80,
            ),
        )
    )


@dataclass(frozen=True, slots=True)
class Attachment:
    """A container attached to a network: its addresses (without prefix length)."""

    container: Container
    network: str
    container_id: str
    ip: str | None
    ip6: str | None


@dataclass
class LabCluster:
    """One master host and agent hosts of ``lab``; files and logs under ``tmp``.

    Args:
        lab: The lab (created).
        tmp: A directory for configurations, state and logs.
        master: The (first) master's host.
        agents: The agents' hosts.
        more_masters: Further masters' hosts: with two, three masters replicate the log
            (quorum 2), and the agents register with any of them.
        network: The cluster's network configuration.
        record_grace: The agents' ``gossip.record_grace``.
        docker_sockets: The Docker socket of each host (by name) whose agent uses Docker; the
            others run with ``agent.docker`` off (the machine's own Docker is never touched).
        dns_on_host: The agents answer DNS on their underlay address as well as on loopback
            (so that containers can ask them).
    """

    lab: Lab
    tmp: Path
    master: Host
    agents: list[Host]
    network: NetworkConfig = field(default_factory=dual_stack_network)
    record_grace: int = 30
    docker_sockets: dict[str, str] = field(default_factory=dict)
    more_masters: list[Host] = field(default_factory=list)
    dns_on_host: bool = False
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def masters(self) -> list[Host]:
        """Every master's host, the first one first."""
        return [self.master, *self.more_masters]

    def master_api(self, host: Host) -> str:
        """``host:port`` of a master's HTTP API."""
        return f"{host.address}:{MASTER_PORT}"

    # --- processes ------------------------------------------------------------------------------

    def config_path(self, host: Host) -> Path:
        return self.tmp / f"{host.name}.toml"

    def log_path(self, host: Host) -> Path:
        return self.tmp / f"{host.name}.log"

    def command(self, host: Host, role: str) -> list[str]:
        """The command line of ``host``'s ``vxnet master`` or ``vxnet agent``."""
        return [sys.executable, "-m", "vxnet", role, "-c", str(self.config_path(host))]

    def _spawn(self, host: Host, role: str, text: str) -> None:
        self.config_path(host).write_text(text)
        with self.log_path(host).open("ab") as log:
            self.procs[host.name] = host.spawn(self.command(host, role), stdout=log, stderr=log)

    def master_config(self, host: Host | None = None) -> MasterConfig:
        """The configuration of the master on ``host`` (default: the first)."""
        host = self.master if host is None else host
        data_dir = self.tmp / f"{host.name}-data"
        if self.more_masters:
            log = LogSettings(
                listen=f"{host.address}:{LOG_PORT}",
                replicas=tuple(f"{m.address}:{LOG_PORT}" for m in self.masters),
                quorum=len(self.masters) // 2 + 1,
            )
        else:
            log = LogSettings(listen=f"127.0.0.1:{LOG_PORT}")
        return MasterConfig(
            master=MasterSettings(listen=self.master_api(host), data_dir=str(data_dir)),
            network=self.network,
            log=log,
        )

    def agent_config(self, host: Host, *, seed: Host | None = None, **agent: Any) -> AgentConfig:
        """``host``'s configuration; ``agent`` overrides ``[agent]`` settings."""
        if seed is None:
            seed = self.agents[0] if host is not self.agents[0] else self.agents[1]
        settings = AgentSettings(
            masters=tuple(self.master_api(m) for m in self.masters),
            ip=IPv4Address(str(host.address)),
            state_dir=str(self.state_dir(host)),
            cni_dir=str(self.state_dir(host) / "cni"),
            cni_bin_dir=str(self.state_dir(host) / "bin"),
            docker=host.name in self.docker_sockets,
            docker_socket=self.docker_sockets.get(host.name, "/nonexistent/docker.sock"),
        )
        dns = DnsSettings()
        if self.dns_on_host:
            dns = DnsSettings(listen=("127.0.0.1:53", f"{host.address}:53"))
        return AgentConfig(
            agent=dataclasses.replace(settings, **agent),
            dns=dns,
            gossip=GossipSettings(
                name=host.name,
                bind=f"{host.address}:{GOSSIP_PORT}",
                seeds=(f"{seed.address}:{GOSSIP_PORT}",),
                profile="local",
                record_grace=self.record_grace,
            ),
        )

    def state_dir(self, host: Host) -> Path:
        return self.tmp / host.name

    def start_master(self, host: Host | None = None) -> None:
        host = self.master if host is None else host
        self._spawn(host, "master", to_toml(self.master_config(host)))

    def start_agent(self, host: Host, *, seed: Host | None = None, **agent: Any) -> None:
        self._spawn(host, "agent", to_toml(self.agent_config(host, seed=seed, **agent)))

    def start(self) -> None:
        """Start the masters and every agent."""
        for host in self.masters:
            self.start_master(host)
        for host in self.agents:
            self.start_agent(host)

    def stop(self, host: Host, *, kill: bool = False, timeout: float = 15.0) -> None:
        """Stop ``host``'s process: SIGTERM (a graceful stop) or SIGKILL."""
        proc = self.procs.pop(host.name)
        if kill:
            proc.kill()
        else:
            proc.terminate()
        proc.wait(timeout=timeout)

    # --- observing ------------------------------------------------------------------------------

    def status(self, host: Host) -> dict[str, Any]:
        """``vxnet overlay status --json`` run inside ``host``."""
        out = host.run([sys.executable, "-m", "vxnet", "overlay", "status", "--json"]).stdout
        return dict(json.loads(out))

    def converged(self, host: Host, remotes: int | None = None) -> bool:
        """``host`` has its allocation, knows ``remotes`` other agents (default: all) and has
        exactly their kernel objects, all as desired."""
        want = len(self.agents) - 1 if remotes is None else remotes
        try:
            status = self.status(host)
        except Exception:
            return False
        objects = status["objects"]
        return (
            status["info"] is not None
            and len(status["remotes"]) == want
            and bool(objects) == (want > 0)
            and all(o["state"] == "ok" for o in objects)
        )

    def wait_converged(self, hosts: Sequence[Host] | None = None, timeout: float = 30.0) -> float:
        """Wait until every one of ``hosts`` (default: the agents) has converged; seconds taken.

        Raises:
            TimeoutError: One did not (named, with the processes' logs' tails).
        """
        start = time.monotonic()
        for host in self.agents if hosts is None else hosts:
            while not self.converged(host):
                if time.monotonic() - start > timeout:
                    raise TimeoutError(
                        f"{host.name} did not converge within {timeout:.0f} s\n{self.logs()}"
                    )
                time.sleep(0.1)
        return time.monotonic() - start

    def logs(self, tail: int = 3000) -> str:
        """The tail of every process's log."""
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-tail:]}"
            for p in sorted(self.tmp.glob("*.log"))
        )

    # --- containers -----------------------------------------------------------------------------

    def cni(
        self,
        host: Host,
        container: Container,
        command: str,
        *,
        network: str = "dcos",
        container_id: str | None = None,
        args: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Run ``command`` of ``host``'s conflist for ``container`` (as a runtime would)."""
        conflist = json.loads((self.state_dir(host) / "cni" / f"{network}.conflist").read_text())
        return run_conflist(
            conflist,
            command,
            container_id or container.netns,
            container.netns_path,
            args=args,
            plugin_dirs=[find_plugin_dir(), str(self.state_dir(host) / "bin")],
            wrap=host.command,
        )

    def attach(
        self,
        host: Host,
        name: str = "c1",
        *,
        network: str = "dcos",
        args: Mapping[str, str] | None = None,
    ) -> Attachment:
        """A new container ``name`` on ``host``, attached to ``network`` through CNI."""
        container = self.lab.container(host, name)
        result = self.cni(host, container, "ADD", network=network, args=args)
        ip = ip6 = None
        for entry in result["ips"]:
            address = str(entry["address"]).split("/")[0]
            if ":" in address:
                ip6 = address
            else:
                ip = address
        return Attachment(container, network, container.netns, ip, ip6)
