"""A vxnet cluster of real processes in a :class:`~.lab.Lab`: for tests, benchmarks, the sandbox.

:class:`LabCluster` writes the configuration of every master and agent from the same dataclasses
a real deployment's files load into (:mod:`vxnet.config`, rendered with ``to_toml``), starts
``vxnet master`` and ``vxnet agent`` as processes inside the lab's hosts, waits for the overlay
to converge (through ``vxnet overlay status`` run inside each host, as an operator would), and
attaches containers with the conflists the agents write (:mod:`vxnet.sandbox.cni`, with the Debian
CNI plugins and the agent's ``vxnet-ipam`` on ``CNI_PATH``). The lab's teardown stops every
process it started.

With ``secure`` the cluster runs as a deployment should (:class:`ClusterSecrets`): a CA of its
own (:mod:`vxnet.pki`) with a master certificate per master, an agent certificate per agent and
an operator certificate for tools; a master token; and the CA's gossip key. Masters then speak
TLS on their API and log ports and require the token; agents register over HTTPS with their
certificate and the token, and encrypt gossip. Secrets live in files (mode 0600) and in the
configurations (written 0600), never in a log or a ``repr``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Network
from secrets import token_urlsafe
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
    TlsSettings,
    to_toml,
)
from vxnet.pki import CA_CERT, GOSSIP_KEY, init_ca, issue
from vxnet.sandbox.cni import find_plugin_dir, resolv_conf, run_conflist, with_resolv_conf

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    from vxnet.sandbox.lab import Container, Host, Lab

__all__ = [
    "OPERATOR",
    "TOKEN_FILE",
    "Attachment",
    "ClusterSecrets",
    "LabCluster",
    "dual_stack_network",
]

MASTER_PORT = 61080
LOG_PORT = 61090
GOSSIP_PORT = 7946
OPERATOR = "operator"  # the name of the tools' certificate in the PKI directory
TOKEN_FILE = "master.token"  # noqa: S105 - a file name, not a secret
KEYRING_FILE = "keyring.json"


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
    """A container attached to a network: its addresses (without prefix length), and the
    ``resolv.conf`` written from the CNI result."""

    container: Container
    network: str
    container_id: str
    ip: str | None
    ip6: str | None
    resolv_conf: Path | None = None

    def run(
        self, argv: Sequence[str], *, check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in the container, with its ``resolv.conf`` as a runtime would give it."""
        if self.resolv_conf is not None:
            argv = with_resolv_conf(argv, self.resolv_conf)
        return self.container.run(argv, check=check, timeout=timeout)


@dataclass(frozen=True, slots=True)
class ClusterSecrets:
    """What a secure cluster shares: its PKI directory and the masters' bearer token.

    The directory holds the CA (``ca.pem``, ``ca-key.pem``), the gossip key (``gossip.key``),
    the token (``master.token``) and every certificate issued (``NAME.pem``, ``NAME-key.pem``);
    every secret file has mode 0600. The token and the gossip key are left out of ``repr``.
    """

    pki: Path
    token: str = field(repr=False)
    gossip_key: str = field(repr=False)

    @property
    def ca(self) -> Path:
        return self.pki / CA_CERT

    @classmethod
    def create(cls, pki: Path) -> ClusterSecrets:
        """The secrets in ``pki``, made first where missing (a CA, a gossip key, a token)."""
        if not (pki / CA_CERT).exists():
            init_ca(pki, name="vxnet lab CA")
        token_file = pki / TOKEN_FILE
        if not token_file.exists():
            _write_secret(token_file, token_urlsafe(32) + "\n")
        return cls(
            pki,
            token=token_file.read_text().strip(),
            gossip_key=(pki / GOSSIP_KEY).read_text().strip(),
        )

    def tls(self, role: str, name: str, ips: Sequence[str] = ()) -> TlsSettings:
        """``[tls]`` with the certificate ``name`` of ``role`` (issued first if missing)."""
        cert, key = self.pki / f"{name}.pem", self.pki / f"{name}-key.pem"
        if not cert.exists():
            issue(self.pki, role, name, ips=ips)
        return TlsSettings(ca=str(self.ca), cert=str(cert), key=str(key))

    def operator(self) -> TlsSettings:
        """The operator's certificate, for tools (issued first if missing)."""
        return self.tls("operator", OPERATOR)

    def operator_args(self) -> list[str]:
        """``--ca``, ``--cert`` and ``--key`` with the operator's certificate, for the ``vxnet``
        commands that read the masters."""
        tls = self.operator()
        return ["--ca", str(tls.ca), "--cert", str(tls.cert), "--key", str(tls.key)]


def _write_secret(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600 (never readable by others, not even at first)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask, and for a file that existed
        os.write(fd, text.encode())
    finally:
        os.close(fd)


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
            (so that other hosts can ask them).
        dns_upstreams: The agents' ``dns.upstreams`` (``ip:port``).
        secure: Run with TLS, a master token and gossip encryption (:class:`ClusterSecrets`),
            as a deployment should; off, everything is plain (as the tests of other things
            want it: nothing in their way).
        pki_dir: Where ``secure`` keeps its CA, certificates and token (default ``tmp/pki``).
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
    dns_upstreams: tuple[str, ...] = ()
    secure: bool = False
    pki_dir: Path | None = None
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _secrets: ClusterSecrets | None = field(default=None, init=False, repr=False)

    @property
    def masters(self) -> list[Host]:
        """Every master's host, the first one first."""
        return [self.master, *self.more_masters]

    def master_api(self, host: Host) -> str:
        """``host:port`` of a master's HTTP API."""
        return f"{host.address}:{MASTER_PORT}"

    @property
    def secrets(self) -> ClusterSecrets | None:
        """The cluster's CA, token and gossip key when ``secure`` (made at first use), else
        None."""
        if not self.secure:
            return None
        if self._secrets is None:
            self._secrets = ClusterSecrets.create(self.pki_dir or self.tmp / "pki")
        return self._secrets

    def operator_args(self) -> list[str]:
        """What a ``vxnet`` command reading the masters needs: ``--ca/--cert/--key`` with the
        operator's certificate when ``secure``, nothing otherwise."""
        return [] if self.secrets is None else self.secrets.operator_args()

    # --- processes ------------------------------------------------------------------------------

    def config_path(self, host: Host) -> Path:
        return self.tmp / f"{host.name}.toml"

    def log_path(self, host: Host) -> Path:
        return self.tmp / f"{host.name}.log"

    def command(self, host: Host, role: str) -> list[str]:
        """The command line of ``host``'s ``vxnet master`` or ``vxnet agent``."""
        return [sys.executable, "-m", "vxnet", role, "-c", str(self.config_path(host))]

    def _spawn(self, host: Host, role: str, text: str) -> None:
        _write_secret(self.config_path(host), text)  # it may hold the master token
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
        config = MasterConfig(
            master=MasterSettings(listen=self.master_api(host), data_dir=str(data_dir)),
            network=self.network,
            log=log,
        )
        if self.secrets is None:
            return config
        # The certificate names every address the master is dialled at: its API's and log's
        # (loopback for a lone master's log, which `vxnet log status -c FILE` dials).
        ips = [str(host.address)] + ([] if self.more_masters else ["127.0.0.1"])
        return dataclasses.replace(
            config,
            master=dataclasses.replace(config.master, token=self.secrets.token),
            tls=self.secrets.tls("master", host.name, ips),
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
        dns = DnsSettings(upstreams=self.dns_upstreams)
        if self.dns_on_host:
            dns = dataclasses.replace(dns, listen=("127.0.0.1:53", f"{host.address}:53"))
        gossip = GossipSettings(
            name=host.name,
            bind=f"{host.address}:{GOSSIP_PORT}",
            seeds=(f"{seed.address}:{GOSSIP_PORT}",),
            profile="local",
            record_grace=self.record_grace,
        )
        tls = TlsSettings()
        if self.secrets is not None:
            settings = dataclasses.replace(settings, master_token=self.secrets.token)
            gossip = dataclasses.replace(
                gossip,
                keys=(self.secrets.gossip_key,),
                keyring_file=str(self.state_dir(host) / KEYRING_FILE),
            )
            tls = self.secrets.tls("agent", host.name, [str(host.address)])
        return AgentConfig(
            agent=dataclasses.replace(settings, **agent), dns=dns, gossip=gossip, tls=tls
        )

    def state_dir(self, host: Host) -> Path:
        return self.tmp / host.name

    def start_master(self, host: Host | None = None) -> None:
        host = self.master if host is None else host
        self._spawn(host, "master", to_toml(self.master_config(host)))

    def start_agent(
        self,
        host: Host,
        *,
        seed: Host | None = None,
        config: AgentConfig | None = None,
        **agent: Any,
    ) -> None:
        """Start ``host``'s agent with ``config``, by default :meth:`agent_config` (``seed``,
        ``agent``): a test gives its own to start an agent unlike the others."""
        if config is None:
            config = self.agent_config(host, seed=seed, **agent)
        self._spawn(host, "agent", to_toml(config))

    def change_network(self, network: NetworkConfig) -> None:
        """Give every master ``network`` (its file rewritten, then SIGHUP), as an operator does."""
        self.network = network
        for host in self.masters:
            _write_secret(self.config_path(host), to_toml(self.master_config(host)))
        for host in self.masters:
            self.procs[host.name].send_signal(signal.SIGHUP)

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

    def master_state(self, via: Host | None = None, master: Host | None = None) -> dict[str, Any]:
        """``vxnet master state --json`` run inside ``via`` (default: the first master) against
        ``master``'s API (default: the first), with the operator's certificate when ``secure``.

        Raises:
            LabError: The command failed (its error in the message).
        """
        via = self.master if via is None else via
        api = self.master_api(self.master if master is None else master)
        argv = [sys.executable, "-m", "vxnet", "master", "state", "--json", "--api", api]
        return dict(json.loads(via.run([*argv, *self.operator_args()]).stdout))

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
        resolv = self.tmp / "containers" / container.name / "resolv.conf"
        resolv.parent.mkdir(parents=True, exist_ok=True)
        resolv.write_text(resolv_conf(result))
        return Attachment(container, network, container.netns, ip, ip6, resolv)
