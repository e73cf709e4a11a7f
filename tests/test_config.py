"""Configuration: every validation rule, round trips, and docs generated from the model."""

from __future__ import annotations

import dataclasses
import json
import re
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vxnet.config import (
    AgentConfig,
    AgentSettings,
    ConfigError,
    MasterConfig,
    MasterSettings,
    NetworkConfig,
    Overlay,
    Role,
    TlsSettings,
    example_toml,
    load_config,
    overlapping_pairs,
    parse_config,
    reference_markdown,
    to_json,
    to_toml,
)

ROOT = Path(__file__).resolve().parent.parent


def all_problems(text: str, role: Role | None = None) -> list[tuple[str, str]]:
    """Every problem of a file, or nothing if it is valid."""
    try:
        parse_config(text, source="conf.toml", role=role)
    except ConfigError as exc:
        error = exc
    else:
        return []
    assert all(line.startswith("conf.toml: ") for line in error.lines())
    return [(p.key, p.message) for p in error.problems]


def problems(text: str, role: Role | None = None) -> list[tuple[str, str]]:
    found = all_problems(text, role)
    assert found, "the file was accepted"
    return found


def overlay(**fields: object) -> str:
    body = "\n".join(f"{k} = {json.dumps(v)}" for k, v in fields.items())
    return f"[[network.overlays]]\n{body}\n"


def network(**fields: object) -> str:
    return "[network]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in fields.items()) + "\n"


DCOS = overlay(name="dcos", subnet="9.0.0.0/8")

# (case id, file text, role, key of the problem, fragment of its message)
BAD_FILES = [
    (
        "name-too-long",
        overlay(name="abcdefghijklmn", subnet="9.0.0.0/8"),
        None,
        "network.overlays[0].name",
        "14 characters long; at most 13",
    ),
    (
        "name-space",
        overlay(name="my net", subnet="9.0.0.0/8"),
        None,
        "network.overlays[0].name",
        "not a valid interface-name stem",
    ),
    (
        "name-leading-dash",
        overlay(name="-dcos", subnet="9.0.0.0/8"),
        None,
        "network.overlays[0].name",
        "not a valid interface-name stem",
    ),
    (
        "name-slash",
        overlay(name="a/b", subnet="9.0.0.0/8"),
        None,
        "network.overlays[0].name",
        "not a valid interface-name stem",
    ),
    (
        "name-empty",
        overlay(name="", subnet="9.0.0.0/8"),
        None,
        "network.overlays[0].name",
        "must not be empty",
    ),
    (
        "name-missing",
        overlay(subnet="9.0.0.0/8"),
        None,
        "network.overlays[0].name",
        "required key is missing",
    ),
    *[
        (
            f"reserved-{n}",
            overlay(name=n, subnet="9.0.0.0/8"),
            None,
            "network.overlays[0].name",
            "is reserved",
        )
        for n in ("host", "bridge", "default", "none", "Host")
    ],
    (
        "duplicate-name",
        DCOS + overlay(name="DCOS", subnet="10.0.0.0/8"),
        None,
        "network.overlays[1].name",
        "duplicate network name 'DCOS' (also network.overlays[0]",
    ),
    (
        "cidr-garbage",
        overlay(name="a", subnet="9.0.0/8x"),
        None,
        "network.overlays[0].subnet",
        "is not a valid IPv4 network",
    ),
    (
        "cidr-no-length",
        overlay(name="a", subnet="9.0.0.0"),
        None,
        "network.overlays[0].subnet",
        "has no prefix length",
    ),
    (
        "cidr-wrong-family",
        overlay(name="a", subnet="fd01:b::/64"),
        None,
        "network.overlays[0].subnet",
        "is an IPv6 network; this key takes IPv4",
    ),
    (
        "cidr6-wrong-family",
        overlay(name="a", subnet6="9.0.0.0/8"),
        None,
        "network.overlays[0].subnet6",
        "is an IPv4 network; this key takes IPv6",
    ),
    (
        "cidr-host-bits",
        overlay(name="a", subnet="9.0.0.1/8"),
        None,
        "network.overlays[0].subnet",
        "has host bits set; did you mean '9.0.0.0/8'?",
    ),
    (
        "cidr6-host-bits",
        overlay(name="a", subnet6="fd01:b::1/64"),
        None,
        "network.overlays[0].subnet6",
        "has host bits set; did you mean 'fd01:b::/64'?",
    ),
    (
        "vtep-host-bits",
        network(vtep_subnet="44.128.0.1/20") + DCOS,
        None,
        "network.vtep_subnet",
        "has host bits set",
    ),
    (
        "cidr-not-string",
        overlay(name="a", subnet=9),
        None,
        "network.overlays[0].subnet",
        "expected an IPv4 network such as '9.0.0.0/8', got an integer",
    ),
    (
        "prefix-not-longer",
        overlay(name="a", subnet="9.0.0.0/16", prefix=16),
        None,
        "network.overlays[0].prefix",
        "/16 is not longer than the network's /16",
    ),
    (
        "prefix-shorter",
        overlay(name="a", subnet="9.0.0.0/16", prefix=12),
        None,
        "network.overlays[0].prefix",
        "/12 is not longer",
    ),
    (
        "prefix-too-long",
        overlay(name="a", subnet="9.0.0.0/8", prefix=30),
        None,
        "network.overlays[0].prefix",
        "/30 is too long",
    ),
    (
        "prefix6-not-longer",
        overlay(name="a", subnet6="fd01:b::/96", prefix6=80),
        None,
        "network.overlays[0].prefix6",
        "/80 is not longer than the network's /96",
    ),
    (
        "prefix6-too-long",
        overlay(name="a", subnet6="fd01:b::/64", prefix6=127),
        None,
        "network.overlays[0].prefix6",
        "/127 is too long",
    ),
    (
        "prefix-not-integer",
        overlay(name="a", subnet="9.0.0.0/8", prefix="24"),
        None,
        "network.overlays[0].prefix",
        "expected an integer, got a string",
    ),
    ("no-subnet", overlay(name="a"), None, "network.overlays[0]", "has neither subnet nor subnet6"),
    (
        "no-overlays",
        "[network]\noverlays = []\n",
        None,
        "network.overlays",
        "no virtual network is defined",
    ),
    (
        "overlap-v4",
        DCOS + overlay(name="b", subnet="9.4.0.0/16"),
        None,
        "network.overlays[1].subnet",
        "9.4.0.0/16 overlaps 9.0.0.0/8 (network.overlays[0].subnet)",
    ),
    (
        "overlap-v6",
        overlay(name="a", subnet6="fd01:b::/64") + overlay(name="b", subnet6="fd01:b:0:0:1::/80"),
        None,
        "network.overlays[1].subnet6",
        "overlaps fd01:b::/64 (network.overlays[0].subnet6)",
    ),
    (
        "overlap-vtep",
        overlay(name="a", subnet="44.0.0.0/8"),
        None,
        "network.overlays[0].subnet",
        "44.0.0.0/8 overlaps 44.128.0.0/20 (network.vtep_subnet)",
    ),
    (
        "overlap-vtep6",
        overlay(name="a", subnet6="fd01:a::/64"),
        None,
        "network.overlays[0].subnet6",
        "overlaps fd01:a::/64 (network.vtep_subnet6)",
    ),
    (
        "vtep-too-large",
        network(vtep_subnet="44.0.0.0/7") + DCOS,
        None,
        "network.vtep_subnet",
        "/7 is too large",
    ),
    (
        "vtep-too-small",
        network(vtep_subnet="44.128.0.0/31") + DCOS,
        None,
        "network.vtep_subnet",
        "/31 is too small",
    ),
    (
        "vtep6-too-small",
        network(vtep_subnet6="fd01:a::/127") + DCOS,
        None,
        "network.vtep_subnet6",
        "/127 is too small",
    ),
    (
        "oui-low-bits",
        network(vtep_mac_oui="70:B3:D5:00:00:01") + DCOS,
        None,
        "network.vtep_mac_oui",
        "low 24 bits must be zero",
    ),
    (
        "oui-multicast",
        network(vtep_mac_oui="71:B3:D5:00:00:00") + DCOS,
        None,
        "network.vtep_mac_oui",
        "multicast MAC",
    ),
    (
        "oui-garbage",
        network(vtep_mac_oui="70:B3:D5") + DCOS,
        None,
        "network.vtep_mac_oui",
        "is not a MAC address",
    ),
    (
        "mtu-too-small",
        network(overlay_mtu=551) + DCOS,
        None,
        "network.overlay_mtu",
        "551 is below the minimum overlay MTU 552",
    ),
    (
        "mtu-above-vtep",
        network(overlay_mtu=1451) + DCOS,
        None,
        "network.overlay_mtu",
        "1451 is above vtep_mtu - 50 = 1450",
    ),
    (
        "mtu-above-small-vtep",
        network(vtep_mtu=1000, overlay_mtu=960) + DCOS,
        None,
        "network.overlay_mtu",
        "960 is above vtep_mtu - 50 = 950",
    ),
    (
        "mtu-ipv6",
        network(overlay_mtu=1200) + overlay(name="a", subnet6="fd01:b::/64"),
        None,
        "network.overlay_mtu",
        "below 1280, the minimum MTU of IPv6",
    ),
    ("vni-zero", network(vni=0) + DCOS, None, "network.vni", "0 is out of range"),
    ("vni-25-bits", network(vni=1 << 24) + DCOS, None, "network.vni", "from 1 to 16777215"),
    ("port-range", network(vxlan_port=70000) + DCOS, None, "network.vxlan_port", "a UDP port"),
    (
        "unknown-top",
        "[netwrok]\n[master]\n",
        None,
        "netwrok",
        "unknown key (did you mean 'network'?)",
    ),
    (
        "unknown-network",
        network(vtep_subnett="44.128.0.0/20") + DCOS,
        None,
        "network.vtep_subnett",
        "did you mean 'vtep_subnet'?",
    ),
    (
        "unknown-overlay",
        overlay(name="a", subnet="9.0.0.0/8", prefx=24),
        None,
        "network.overlays[0].prefx",
        "did you mean 'prefix'?",
    ),
    (
        "unknown-agent",
        "[agent]\nmaster = ['127.0.0.1:61080']\n",
        None,
        "agent.master",
        "did you mean 'masters'?",
    ),
    ("table-not-table", "network = 5\n", None, "network", "expected a table, got an integer"),
    (
        "master-listen",
        "[master]\nlisten = 'localhost:61080'\n",
        None,
        "master.listen",
        "the host must be an IP address",
    ),
    (
        "master-listen-port",
        "[master]\nlisten = '0.0.0.0:0'\n",
        None,
        "master.listen",
        "port must be a number from 1 to 65535",
    ),
    (
        "master-dir",
        "[master]\ndata_dir = 'var/lib'\n",
        None,
        "master.data_dir",
        "not an absolute path",
    ),
    ("agent-no-masters", "[agent]\nmasters = []\n", None, "agent.masters", "lists no master"),
    (
        "agent-master-no-port",
        "[agent]\nmasters = ['m1']\n",
        None,
        "agent.masters[0]",
        "has no port",
    ),
    (
        "agent-master-v6",
        "[agent]\nmasters = ['fd00::1:61080']\n",
        None,
        "agent.masters[0]",
        "put an IPv6 address in brackets",
    ),
    (
        "agent-master-twice",
        "[agent]\nmasters = ['m1:1', 'm1:1']\n",
        None,
        "agent.masters[1]",
        "listed twice",
    ),
    ("agent-ip", "[agent]\nip = '224.0.0.1'\n", None, "agent.ip", "cannot be a tunnel endpoint"),
    ("agent-ip-garbage", "[agent]\nip = '198.18.0.300'\n", None, "agent.ip", "not an IPv4 address"),
    (
        "agent-bool-for-string",
        "[agent]\ncni_dir = true\n",
        None,
        "agent.cni_dir",
        "expected a string, got a boolean",
    ),
    (
        "agent-token-short",
        "[agent]\nmaster_token = 'abc'\n",
        None,
        "agent.master_token",
        "too short",
    ),
    (
        "master-token-space",
        "[master]\ntoken = 'has a space'\n",
        None,
        "master.token",
        "printable ASCII without spaces",
    ),
    ("both-roles", "[master]\n[agent]\n", None, "", "holds both master"),
    ("no-role", "", None, "", "cannot tell whether this is a master or an agent"),
    ("not-toml", "[network\n", None, "", "not valid TOML"),
    ("forced-role", "[master]\n", "agent", "master", "unknown key"),
]


LOG = "[master]\n[log]\n"
THREE = "replicas = ['198.18.0.1:61090', '198.18.0.2:61090', '198.18.0.3:61090']\n"
BAD_FILES += [
    (
        "log-even-replicas",
        LOG + "replicas = ['a:1', 'b:1']\nadvertise = 'a:1'\nquorum = 2\n",
        None,
        "log.quorum",
        "2 replicas cannot form a majority quorum: use 1 or 3",
    ),
    (
        "log-wrong-quorum",
        LOG + THREE + "advertise = '198.18.0.1:61090'\nquorum = 3\n",
        None,
        "log.quorum",
        "quorum 3 does not fit 3 replicas (replicas must number 2 * quorum - 1; "
        "3 replicas need quorum 2)",
    ),
    (
        "log-alone-quorum",
        LOG + "quorum = 2\n",
        None,
        "log.quorum",
        "quorum 2 does not fit 1 replica",
    ),
    ("log-zero-quorum", LOG + "quorum = 0\n", None, "log.quorum", "at least 1"),
    (
        "log-replica-twice",
        LOG + "replicas = ['a:1', 'b:1', 'a:1']\nadvertise = 'a:1'\nquorum = 2\n",
        None,
        "log.replicas[2]",
        "listed twice",
    ),
    ("log-replica-no-port", LOG + "replicas = ['a']\n", None, "log.replicas[0]", "has no port"),
    (
        "log-who-am-i",
        LOG + THREE + "quorum = 2\n",
        None,
        "log.advertise",
        "log.listen '0.0.0.0:61090' is not one of log.replicas",
    ),
    (
        "log-advertise-elsewhere",
        LOG + THREE + "quorum = 2\nadvertise = '198.18.0.9:61090'\n",
        None,
        "log.advertise",
        "log.advertise '198.18.0.9:61090' is not one of log.replicas",
    ),
]


def test_three_masters_with_quorum_two_are_accepted() -> None:
    config = parse_config(
        LOG + THREE + "quorum = 2\nadvertise = '198.18.0.2:61090'\n", source="m.toml"
    )
    assert isinstance(config, MasterConfig)
    assert config.log.quorum == 2
    assert config.log.replicas.index(config.log.advertise or "") == 1


GOSSIP = "[agent]\n[gossip]\n"
DNS = "[agent]\n[dns]\n"
TWO_NETS = (
    "[master]\n[[network.overlays]]\nname = 'dev'\nsubnet = '10.1.0.0/16'\n"
    "[[network.overlays]]\nname = 'prod'\nsubnet = '10.2.0.0/16'\n"
)
BAD_FILES += [
    ("gossip-name", GOSSIP + "name = ' a'\n", None, "gossip.name", "not a usable node name"),
    (
        "gossip-bind",
        GOSSIP + "bind = 'eth0:7946'\n",
        None,
        "gossip.bind",
        "the host must be an IP address",
    ),
    (
        "gossip-advertise",
        GOSSIP + "advertise = '0.0.0.0:7946'\n",
        None,
        "gossip.advertise",
        "others cannot reach an unspecified address",
    ),
    ("gossip-seed", GOSSIP + "seeds = ['a:1', 'b']\n", None, "gossip.seeds[1]", "has no port"),
    (
        "gossip-key-base64",
        GOSSIP + "keys = ['not base64!']\n",
        None,
        "gossip.keys[0]",
        "is not base64",
    ),
    ("gossip-key-size", GOSSIP + "keys = ['AAAA']\n", None, "gossip.keys[0]", "decodes to 3 bytes"),
    (
        "dns-container-address",
        DNS + "container_addresses = ['dns.local']\n",
        None,
        "dns.container_addresses[0]",
        "is not an IP address",
    ),
    (
        "dns-container-loopback",
        DNS + "container_addresses = ['127.0.0.53']\n",
        None,
        "dns.container_addresses[0]",
        "is not an address containers can reach",
    ),
    (
        "dns-container-twice",
        DNS + "container_addresses = ['198.51.100.1', '198.51.100.1']\n",
        None,
        "dns.container_addresses[1]",
        "listed twice",
    ),
    ("dns-search", DNS + "search = ['not a domain']\n", None, "dns.search[0]", "not a domain"),
    ("dns-workers", DNS + "workers = 65\n", None, "dns.workers", "to 64 processes"),
    (
        "allow-unknown-network",
        TWO_NETS + "[[network.allow]]\nfrom = 'dev'\nto = 'stage'\n",
        None,
        "network.allow[0].to",
        "no network 'stage' (the networks: dev, prod)",
    ),
    (
        "allow-twice",
        TWO_NETS + "[[network.allow]]\nfrom = 'dev'\nto = 'prod'\n" * 2,
        None,
        "network.allow[1]",
        "dev -> prod is listed twice (also network.allow[0])",
    ),
    (
        "allow-itself",
        TWO_NETS + "[[network.allow]]\nfrom = 'dev'\nto = 'dev'\n",
        None,
        "network.allow[0]",
        "a network always reaches itself",
    ),
    (
        "allow-bad-port",
        TWO_NETS + "[[network.allow]]\nfrom = 'dev'\nto = 'prod'\nports = ['tcp/99999']\n",
        None,
        "network.allow[0].ports[0]",
        "ports are 1 to 65535",
    ),
    (
        "allow-bad-protocol",
        TWO_NETS + "[[network.allow]]\nfrom = 'dev'\nto = 'prod'\nports = ['http/80']\n",
        None,
        "network.allow[0].ports[0]",
        "give tcp, udp, sctp",
    ),
    (
        "allow-backwards",
        TWO_NETS + "[[network.allow]]\nfrom = 'dev'\nto = 'prod'\nports = ['tcp/90-80']\n",
        None,
        "network.allow[0].ports[0]",
        "runs backwards",
    ),
    (
        "allow-hosts",
        "[master]\n[[network.overlays]]\nname = 'dev'\nsubnet = '10.1.0.0/16'\n"
        "allow_hosts = ['198.51.100.0/33']\n",
        None,
        "network.overlays[0].allow_hosts[0]",
        "give a network such as",
    ),
    ("gossip-profile", GOSSIP + "profile = 'wan'\n", None, "gossip.profile", "not a profile"),
    (
        "gossip-typo",
        "[master]\n[gossip]\nseed = []\n",
        None,
        "gossip.seed",
        "did you mean 'seeds'?",
    ),
]


@pytest.mark.parametrize(
    ("text", "role", "key", "fragment"), [c[1:] for c in BAD_FILES], ids=[c[0] for c in BAD_FILES]
)
def test_each_rule_rejects_a_bad_file_naming_key_and_reason(
    text: str, role: Role | None, key: str, fragment: str
) -> None:
    found = problems(text, role)
    assert any(k == key and fragment in m for k, m in found), found


def test_every_problem_is_reported_not_only_the_first() -> None:
    text = (
        network(vni=0, overlay_mtu=9000, vtep_mac_oui="71:00:00:00:00:00", typo=1)
        + overlay(name="host", subnet="9.0.0.1/8")
        + overlay(name="toolongnetworkname", subnet="10.0.0.0/8", prefix=4)
        + overlay(name="ok", subnet="10.1.0.0/16")
    )
    keys = {k for k, _ in problems(text)}
    assert keys == {
        "network.vni",
        "network.overlay_mtu",
        "network.vtep_mac_oui",
        "network.typo",
        "network.overlays[0].name",
        "network.overlays[0].subnet",
        "network.overlays[1].name",
        "network.overlays[1].prefix",
        "network.overlays[2].subnet",
    }


def test_a_broken_value_does_not_cause_follow_on_errors() -> None:
    # The subnet cannot be read: no "neither subnet" or prefix complaint may follow from that.
    found = problems(overlay(name="a", subnet="nonsense", prefix=24))
    assert [k for k, _ in found] == ["network.overlays[0].subnet"]


def test_defaults_are_dcos_defaults() -> None:
    config = parse_config("[master]\n", source="t")
    assert isinstance(config, MasterConfig)
    n = config.network
    assert n.overlays == (Overlay(name="dcos", subnet=IPv4Network("9.0.0.0/8"), prefix=24),)
    assert (n.vtep_subnet, n.vtep_subnet6) == (
        IPv4Network("44.128.0.0/20"),
        IPv6Network("fd01:a::/64"),
    )
    assert (n.vtep_mac_oui, n.vni, n.vxlan_port) == ("70:B3:D5:00:00:00", 1024, 64000)
    assert (n.overlay_mtu, n.vtep_mtu) == (1420, 1500)


def test_a_good_file_round_trips_through_toml_and_json(tmp_path: Path) -> None:
    text = (
        "[master]\nlisten = '[::]:7000'\ndata_dir = '/srv/vx'\n"
        + network(
            vtep_mtu=9000,
            overlay_mtu=8950,
            vni=42,
            vxlan_port=4789,
            vtep_mac_oui="02-00-5e-00-00-00",
        )
        + overlay(name="dcos", subnet="9.0.0.0/8")
        + overlay(
            name="prod.eu_1", subnet="10.10.0.0/16", prefix=26, subnet6="fd02::/48", prefix6=64
        )
        + overlay(name="v6only", subnet6="fd03::/64")
    )
    path = tmp_path / "master.toml"
    path.write_text(text)
    config = load_config(path)
    assert isinstance(config, MasterConfig)
    assert config.network.overlays[1].subnet6 == IPv6Network("fd02::/48")
    again = tmp_path / "again.toml"
    again.write_text(to_toml(config))
    assert load_config(again) == config
    data = json.loads(to_json(config))
    assert data["network"]["overlays"][2] == {
        "name": "v6only",
        "subnet": None,
        "prefix": 24,
        "subnet6": "fd03::/64",
        "prefix6": 64 + 16,
        "allow_hosts": [],
    }


def test_agent_file_round_trips(tmp_path: Path) -> None:
    text = (
        "[agent]\nmasters = ['198.18.0.1:61080', '[fd00::1]:61080', 'm3.example:61080']\n"
        "ip = '198.18.0.11'\n"
    )
    config = parse_config(text, source="a")
    assert isinstance(config, AgentConfig)
    assert parse_config(to_toml(config), source="again") == config


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.toml: cannot read the file"):
        load_config(tmp_path / "missing.toml")


# --- overlap detection against a brute-force oracle -----------------------------------------


def _small_nets(base: str, low: int, high: int) -> st.SearchStrategy[list[str]]:
    space = ip_network(base)
    width = space.max_prefixlen

    def make(offset: int, length: int) -> str:
        addr = int(space.network_address) + offset
        mask = ((1 << width) - 1) ^ ((1 << (width - length)) - 1)
        return str(ip_network((addr & mask, length)))

    one = st.builds(make, st.integers(0, space.num_addresses - 1), st.integers(low, high))
    return st.lists(one, min_size=1, max_size=7)


def _oracle(nets: list[str]) -> set[tuple[int, int]]:
    sets = [{int(a) for a in ip_network(n)} for n in nets]
    return {(i, j) for j in range(len(sets)) for i in range(j) if sets[i] & sets[j]}


@given(_small_nets("198.51.100.0/24", 24, 32))
def test_overlapping_pairs_matches_brute_force(nets: list[str]) -> None:
    assert set(overlapping_pairs([IPv4Network(n) for n in nets])) == _oracle(nets)


@settings(max_examples=200)
@given(_small_nets("198.51.100.0/24", 24, 28), _small_nets("198.51.100.0/24", 24, 30))
def test_config_reports_exactly_the_overlapping_v4_networks(
    subnets: list[str], vtep: list[str]
) -> None:
    nets = [vtep[0], *subnets]
    text = network(vtep_subnet=vtep[0]) + "".join(
        overlay(name=f"n{i}", subnet=s, prefix=29) for i, s in enumerate(subnets)
    )
    keys = ["network.vtep_subnet", *(f"network.overlays[{i}].subnet" for i in range(len(subnets)))]
    expected = {(keys[j], f"{nets[j]} overlaps {nets[i]} ({keys[i]})") for i, j in _oracle(nets)}
    assert set(all_problems(text)) == expected


@settings(max_examples=100)
@given(_small_nets("fd00::/120", 120, 124))
def test_config_reports_exactly_the_overlapping_v6_networks(subnets: list[str]) -> None:
    text = "".join(overlay(name=f"n{i}", subnet6=s, prefix6=125) for i, s in enumerate(subnets))
    keys = [f"network.overlays[{i}].subnet6" for i in range(len(subnets))]
    expected = {
        (keys[j], f"{subnets[j]} overlaps {subnets[i]} ({keys[i]})") for i, j in _oracle(subnets)
    }
    assert set(all_problems(text)) == expected


# --- generated documentation ------------------------------------------------------------------


@pytest.mark.parametrize("role", ["master", "agent"])
def test_example_files_are_generated_from_the_model(role: str) -> None:
    committed = (ROOT / "configs" / f"{role}.toml").read_text()
    assert committed == example_toml(role), (
        f"configs/{role}.toml is stale: run `vxnet config example {role} > configs/{role}.toml`"
    )


@pytest.mark.parametrize("role", ["master", "agent"])
def test_example_files_load_to_the_defaults(role: str) -> None:
    config = load_config(ROOT / "configs" / f"{role}.toml")
    assert config == (MasterConfig() if role == "master" else AgentConfig())


def test_readme_reference_is_generated_from_the_model() -> None:
    readme = (ROOT / "README.md").read_text()
    m = re.search(
        r"<!-- config-reference:start -->\n(.*?)<!-- config-reference:end -->", readme, re.DOTALL
    )
    assert m, "README.md lacks the config-reference markers"
    assert m.group(1) == reference_markdown(), (
        "README's configuration reference is stale: paste `vxnet config reference` between "
        "the markers"
    )


def test_every_setting_is_documented() -> None:
    text = reference_markdown()
    for cls in (MasterSettings, AgentSettings, NetworkConfig, Overlay):
        for f in dataclasses.fields(cls):
            assert len(f.metadata["doc"]) > 20, f"{cls.__name__}.{f.name} has no real doc"
            assert f"| `{f.name}` |" in text


def test_an_agent_without_a_gossip_key_or_tls_is_warned_about() -> None:
    plain = AgentConfig()
    assert [w.split(" (")[0] for w in plain.security_warnings()] == [
        "gossip is not encrypted",
        "the agent registers with the masters over plain HTTP",
    ]
    keyed = dataclasses.replace(
        plain,
        gossip=dataclasses.replace(plain.gossip, keys=("A" * 43 + "=",)),
        tls=TlsSettings(ca="ca.pem", cert="a1.pem", key="a1-key.pem"),
    )
    assert keyed.security_warnings() == []


def test_an_isolation_policy_loads_and_round_trips_with_its_from_key(tmp_path: Path) -> None:
    text = (
        TWO_NETS
        + "[[network.allow]]\nfrom = 'dev'\nto = 'prod'\nports = ['tcp/5432', 'udp/53', 'tcp']\n"
    )
    config = parse_config(text, source="policy.toml")
    assert isinstance(config, MasterConfig)
    assert config.network.isolation is True  # the default: walled gardens
    (allowed,) = config.network.allow
    assert (allowed.source, allowed.to, allowed.ports) == (
        "dev",
        "prod",
        ("tcp/5432", "udp/53", "tcp"),
    )
    written = to_toml(config)
    assert 'from = "dev"' in written
    again = tmp_path / "again.toml"
    again.write_text(written)
    assert load_config(again) == config
