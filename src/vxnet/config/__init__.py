"""Configuration: TOML files loaded into frozen dataclasses, validated once at load.

A master's file holds ``[master]`` and ``[network]`` (the cluster-wide overlay settings the master
hands to agents); an agent's file holds ``[agent]``. :func:`load_config` reports every problem of a
file at once, each naming the file, the key and the reason.
"""

from vxnet.config._load import (
    ConfigError,
    ConfigProblem,
    Role,
    load_config,
    overlapping_pairs,
    parse_config,
    parse_hostport,
    parse_mac,
)
from vxnet.config._model import (
    AgentConfig,
    AgentSettings,
    DnsSettings,
    GossipSettings,
    LogSettings,
    MasterConfig,
    MasterSettings,
    NetworkConfig,
    Overlay,
)
from vxnet.config._render import example_toml, reference_markdown, to_data, to_json, to_toml

__all__ = [
    "AgentConfig",
    "AgentSettings",
    "ConfigError",
    "ConfigProblem",
    "DnsSettings",
    "GossipSettings",
    "LogSettings",
    "MasterConfig",
    "MasterSettings",
    "NetworkConfig",
    "Overlay",
    "Role",
    "example_toml",
    "load_config",
    "overlapping_pairs",
    "parse_config",
    "parse_hostport",
    "parse_mac",
    "reference_markdown",
    "to_data",
    "to_json",
    "to_toml",
]
