"""The configuration model: frozen dataclasses with their defaults and documentation.

Every setting is declared once, here, with :func:`setting`; its ``doc`` text is what the example
files in ``configs/`` and the README's configuration reference show, and both are generated from
these classes (``vxnet config example``, ``vxnet config reference``) so they cannot drift.

Defaults are DC/OS's, kept for familiarity: the overlay ``dcos`` on 9.0.0.0/8 handing a /24 to each
agent, VTEPs in 44.128.0.0/20 with MACs under the OUI 70:B3:D5, VNI 1024 on UDP port 64000, an
overlay MTU of 1420 under a VTEP MTU of 1500.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Network
from typing import Any

__all__ = [
    "AgentConfig",
    "AgentSettings",
    "Allow",
    "DnsSettings",
    "GossipSettings",
    "LogSettings",
    "MasterConfig",
    "MasterSettings",
    "NetworkConfig",
    "Overlay",
    "TlsSettings",
    "setting",
    "toml_key",
]


def setting(
    default: Any = dataclasses.MISSING, *, doc: str, example: Any = None, key: str | None = None
) -> Any:
    """Declare a configuration field with its documentation.

    Args:
        default: The value used when the file does not set the key; leave it out for a required key.
        doc: One or two sentences for the example files and the README.
        example: A value to show, commented out, for an optional key whose default is ``None``.
        key: The key in the file when it is not the field's name (``from``, a Python keyword).
    """
    return field(default=default, metadata={"doc": doc, "example": example, "key": key})


def toml_key(f: dataclasses.Field[Any]) -> str:
    """The key of field ``f`` in a configuration file."""
    return str(f.metadata.get("key") or f.name)


@dataclass(frozen=True, slots=True)
class Overlay:
    """One virtual network: a name and the address space its agents' subnets are carved from."""

    name: str = setting(
        doc="Name of the virtual network (at most 13 characters; the bridges are m-<name> and "
        "d-<name>; host, bridge, default and none are reserved).",
    )
    subnet: IPv4Network | None = setting(
        None,
        doc="IPv4 address space of the network. Each agent gets one subnet of length `prefix` "
        "from it.",
        example="9.0.0.0/8",
    )
    prefix: int = setting(
        24,
        doc="Length of the IPv4 subnet given to each agent; its first half goes to the CNI bridge "
        "m-<name>, its second half to the Docker bridge d-<name>.",
    )
    subnet6: IPv6Network | None = setting(
        None,
        doc="IPv6 address space of the network (optional; leave out for IPv4 only).",
        example="fd01:b::/64",
    )
    prefix6: int = setting(80, doc="Length of the IPv6 subnet given to each agent.")
    allow_hosts: tuple[str, ...] = setting(
        (),
        doc="Networks of hosts (not agents) that may open connections to this network's "
        "containers, e.g. 198.51.100.0/24; by default none. Every agent reaches its own "
        "containers (health checks), and the containers' egress to the outside is not affected.",
    )


@dataclass(frozen=True, slots=True)
class Allow:
    """One allowed direction between two virtual networks (``[[network.allow]]``)."""

    source: str = setting(
        doc="The network whose containers may open connections (replies always pass).",
        key="from",
    )
    to: str = setting(doc="The network they may open connections to.")
    ports: tuple[str, ...] = setting(
        (),
        doc='Protocol and port of the destination, e.g. "tcp/5432", "udp/53", "tcp/8000-8080"; '
        "empty: every port and protocol.",
    )


DEFAULT_OVERLAYS = (Overlay(name="dcos", subnet=IPv4Network("9.0.0.0/8"), prefix=24),)


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    """Cluster-wide overlay settings, owned by the masters and handed to every agent."""

    vtep_subnet: IPv4Network = setting(
        IPv4Network("44.128.0.0/20"),
        doc="IPv4 addresses of the VTEPs, one per agent. A VTEP's MAC is the OUI plus the low 24 "
        "bits of its address, so the prefix must be /8 or longer.",
    )
    vtep_subnet6: IPv6Network = setting(
        IPv6Network("fd01:a::/64"),
        doc="IPv6 addresses of the VTEPs, used when a network has an IPv6 subnet.",
    )
    vtep_mac_oui: str = setting(
        "70:B3:D5:00:00:00",
        doc="Organisationally unique identifier of VTEP MACs; its low 24 bits must be zero.",
    )
    vtep_mtu: int = setting(1500, doc="MTU of the VxLAN device vtep<vni> on every agent.")
    overlay_mtu: int = setting(
        1420,
        doc="MTU of the container bridges and interfaces; at least 552 and at most vtep_mtu - 50 "
        "(the VxLAN encapsulation takes 50 bytes).",
    )
    vni: int = setting(1024, doc="VxLAN network identifier shared by all virtual networks.")
    vxlan_port: int = setting(64000, doc="UDP port of the VxLAN encapsulation.")
    overlays: tuple[Overlay, ...] = setting(
        DEFAULT_OVERLAYS,
        doc="The virtual networks. Subnets must not overlap each other or the VTEP subnets.",
    )
    isolation: bool = setting(
        True,
        doc="Each virtual network its own walled garden: its containers reach only each other "
        "and the networks [[network.allow]] opens to them. false: all networks reach each other "
        "(DC/OS's behaviour).",
    )
    allow: tuple[Allow, ...] = setting(
        (),
        doc="Directions in which one network may open connections to another (from, to, "
        "optional ports); a network always reaches itself.",
    )


@dataclass(frozen=True, slots=True)
class GossipSettings:
    """How a node joins the gossip cluster (memberlist/Serf compatible)."""

    name: str | None = setting(
        None,
        doc="This node's unique name in the cluster. Leave out to use the host name.",
        example="agent-1",
    )
    bind: str = setting(
        "0.0.0.0:7946",
        doc="Address and port for gossip, UDP and TCP both (Serf's default port is 7946; 0 "
        "picks a free port, for tests).",
    )
    advertise: str | None = setting(
        None,
        doc="Address and port other members reach this node at. Leave out to use the bind "
        "address, or the agent's ip when binding to all addresses.",
        example="198.18.0.11:7946",
    )
    seeds: tuple[str, ...] = setting(
        (),
        doc="Members (host:port) to join through; any one that answers suffices, and the node "
        "retries with backoff while none does. Empty: start a new cluster.",
    )
    keys: tuple[str, ...] = setting(
        (),
        doc="Encryption keys, base64 as `serf keygen` prints them (16, 24 or 32 bytes); the "
        "first one encrypts, all of them decrypt. Empty: no encryption.",
    )
    keyring_file: str | None = setting(
        None,
        doc="File that keeps the keyring across restarts (Serf's -keyring-file format: a JSON "
        "array of base64 keys, primary first). Once it exists it is used instead of keys; key "
        "changes by `serf keys` or `vxnet keys` are written to it. Leave out: such changes "
        "last until the agent restarts.",
        example="/var/lib/vxnet/agent/keyring.json",
    )
    profile: str = setting(
        "lan",
        doc="Timing preset: lan (memberlist's DefaultLANConfig, as Serf) or local (faster, for "
        "tests on one machine).",
    )
    record_grace: int = setting(
        30,
        doc="Seconds the records of a failed member stay in force (other agents keep its routes, "
        "its names keep resolving), so that a quick restart drops nothing; after that they are "
        "ignored until it returns. 1 to 86400.",
    )


@dataclass(frozen=True, slots=True)
class LogSettings:
    """The masters' replicated log (Multi-Paxos): who the replicas are and the quorum."""

    listen: str = setting(
        "0.0.0.0:61090",
        doc="Address and port this master's log replica listens on for its peers (TCP).",
    )
    replicas: tuple[str, ...] = setting(
        (),
        doc="Every master's log address (host:port), in the same order on every master. Empty: "
        "this master alone (quorum 1).",
    )
    advertise: str | None = setting(
        None,
        doc="This master's own entry in replicas. Leave out when listen names a specific address "
        "that appears in replicas.",
        example="198.18.0.1:61090",
    )
    quorum: int = setting(
        1,
        doc="How many replicas must accept an append. The replicas must number 2 * quorum - 1: "
        "1, 3 or 5 masters for a quorum of 1, 2 or 3.",
    )


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """Mutual TLS with the cluster's CA (`vxnet pki`): all three files, or none for plain TCP."""

    ca: str | None = setting(
        None,
        doc="The cluster CA's certificate (ca.pem). With it, the log port and the API speak TLS "
        "1.3 only and require a certificate from this CA: on the log, a master's from peers, a "
        "master's or an operator's from clients; on the API, an agent's or an operator's to "
        "register or delete, any to read (see open_reads).",
        example="/etc/vxnet/pki/ca.pem",
    )
    cert: str | None = setting(
        None,
        doc="This process's certificate: a master's (`vxnet pki issue --role master`, naming the "
        "addresses others dial: its entry in log.replicas and master.listen), or an agent's "
        "(`--role agent`), with which it registers with the masters over HTTPS.",
        example="/etc/vxnet/pki/m1.pem",
    )
    key: str | None = setting(
        None, doc="The key of cert (mode 0600).", example="/etc/vxnet/pki/m1-key.pem"
    )
    open_reads: bool = setting(
        False,
        doc="Masters only: with TLS, let clients without a certificate read the API (GET "
        "/overlay-master/state, "
        "/overlay-master/leader, /metrics: a monitoring system, say). Writes always need an "
        "agent's or an operator's certificate.",
    )


@dataclass(frozen=True, slots=True)
class MasterSettings:
    """Settings of one master process."""

    listen: str = setting(
        "0.0.0.0:61080",
        doc="Address and port of the master's HTTP API (/overlay-master/...).",
    )
    data_dir: str = setting(
        "/var/lib/vxnet/master",
        doc="Directory of the master's durable state (the replicated log).",
    )
    token: str | None = setting(
        None,
        doc="Bearer token that register and delete requests must carry (`Authorization: Bearer "
        "<token>`). Leave out to accept them from anyone who can reach the API.",
        example="s3cret-token",
    )


@dataclass(frozen=True, slots=True)
class AgentSettings:
    """Settings of one agent process."""

    masters: tuple[str, ...] = setting(
        ("127.0.0.1:61080",),
        doc="HTTP API addresses (host:port) of the masters the agent registers with.",
    )
    ip: IPv4Address | None = setting(
        None,
        doc="The agent's underlay address (the VxLAN tunnel endpoint). Leave out to use the "
        "address the kernel picks to reach the first master.",
        example="198.18.0.11",
    )
    listen: str = setting(
        "127.0.0.1:62080",
        doc="Address and port of the agent's HTTP API (/overlay-agent/...).",
    )
    state_dir: str = setting(
        "/var/lib/vxnet/agent",
        doc="Directory of the agent's durable state (its last allocation, container addresses).",
    )
    cni_dir: str = setting(
        "/etc/cni/net.d",
        doc="Directory the agent writes its CNI network configurations to.",
    )
    cni_bin_dir: str = setting(
        "/opt/cni/bin",
        doc="A directory of the runtimes' CNI_PATH: the agent links its IPAM plugin vxnet-ipam "
        "there (empty: do not link; put vxnet-ipam on CNI_PATH yourself).",
    )
    overlay: bool = setting(
        True,
        doc="Register with the masters and program the overlay into the kernel (the VxLAN "
        "device, bridges, routes, neighbour and FDB entries); needs root. Off: the agent only "
        "gossips and serves its API.",
    )
    master_token: str | None = setting(
        None,
        doc="Bearer token the masters require for registrations (their master.token).",
        example="s3cret-token",
    )
    docker: bool = setting(
        True,
        doc="Put Docker containers on the overlay: the agent creates the Docker network <net> "
        "(bridge d-<net>) for every network and publishes a task record for each container "
        "connected to one. Docker absent or stopped: the agent says so once and serves CNI.",
    )
    docker_socket: str = setting(
        "/var/run/docker.sock",
        doc="The Docker Engine API socket.",
    )
    egress_nat: bool = setting(
        True,
        doc="Masquerade containers' traffic to destinations outside the overlay behind the "
        "agent's address (nftables tables `ip vxnet` and `ip6 vxnet`). Off: such traffic "
        "leaves with container addresses, for networks that route the overlay.",
    )


@dataclass(frozen=True, slots=True)
class DnsSettings:
    """The agent's DNS server: vxnet's zone for every task, and forwarding for the rest."""

    enabled: bool = setting(True, doc="Answer DNS on this agent.")
    listen: tuple[str, ...] = setting(
        ("127.0.0.1:53",),
        doc="Addresses and ports to answer on, UDP and TCP, besides container_addresses (add "
        "the agent's own address for other hosts to ask it).",
    )
    container_addresses: tuple[str, ...] = setting(
        ("198.51.100.1",),
        doc="Where every container on this agent finds its DNS, the same on every agent (as "
        "DC/OS's 198.51.100.1): addresses of the agent's device vxnet-dns (a bridge without "
        "ports), answered on port 53, and the nameservers the CNI configurations give the "
        "containers. Only with agent.overlay; empty: none.",
    )
    search: tuple[str, ...] = setting(
        (),
        doc="Search domains the CNI configurations give the containers (e.g. "
        "marathon.containerip.dcos.thisdcos.directory, so that `web` resolves).",
    )
    suffix: str = setting(
        "dcos.thisdcos.directory",
        doc="The zone vxnet answers for: <task>.<framework>.containerip.<suffix> and so on.",
    )
    upstreams: tuple[str, ...] = setting(
        (),
        doc="Resolvers (ip:port) for names outside vxnet's zone, asked two at a time, first "
        "answer wins. Empty: such queries are REFUSED.",
    )
    forward_clients: tuple[str, ...] = setting(
        ("127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"),
        doc="Networks whose clients may use forwarding (the overlay's own networks are always "
        "allowed); vxnet's zone answers everyone. Keeps the agent from being an open resolver.",
    )
    rate_limit: int = setting(
        5000,
        doc="Response rate limit: UDP answers per second to one client prefix (IPv4 /24, IPv6 "
        "/56) before limiting, far above what the containers behind one prefix ask; 0: off. "
        "Keeps a spoofed flood from turning the agent into an amplifier.",
    )
    rate_limit_slip: int = setting(
        2,
        doc="Every how many rate-limited answers one goes out truncated (TC), sending a real "
        "client to TCP, which is not limited; the others are dropped. 0: drop them all.",
    )
    workers: int | None = setting(
        None,
        doc="Processes answering UDP queries, sharing each listen port (SO_REUSEPORT) and fed "
        "the zone by the agent, so DNS load takes the workers' CPU time, not the agent's; unset: "
        "one per CPU the agent may run on; 0: the agent answers UDP itself. The rate limits "
        "apply in each worker.",
        example=2,
    )


@dataclass(frozen=True, slots=True)
class MasterConfig:
    """A master's configuration file: ``[master]``, ``[network]``, ``[log]``, ``[gossip]``,
    ``[tls]``."""

    master: MasterSettings = field(default_factory=MasterSettings)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    log: LogSettings = field(default_factory=LogSettings)
    gossip: GossipSettings = field(default_factory=GossipSettings)
    tls: TlsSettings = field(default_factory=TlsSettings)


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """An agent's configuration file: ``[agent]``, ``[gossip]``, ``[dns]`` and ``[tls]``."""

    agent: AgentSettings = field(default_factory=AgentSettings)
    gossip: GossipSettings = field(default_factory=GossipSettings)
    dns: DnsSettings = field(default_factory=DnsSettings)
    tls: TlsSettings = field(default_factory=TlsSettings)

    def security_warnings(self) -> list[str]:
        """What this configuration leaves open to anyone on the underlay (empty: nothing)."""
        warnings = []
        if not self.gossip.keys and not self.gossip.keyring_file:
            warnings.append(
                "gossip is not encrypted (no gossip.keys): anyone who can reach the gossip port "
                "can join and write overlay and task records (`vxnet pki init` makes a key)"
            )
        if self.agent.overlay and self.tls.ca is None:
            warnings.append(
                "the agent registers with the masters over plain HTTP (no [tls]): the token, "
                "if any, travels in clear text"
            )
        return warnings
