"""Timing and sizing of the gossip layer, with memberlist's presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["GossipTiming"]


@dataclass(frozen=True, slots=True)
class GossipTiming:
    """How often and how hard the membership protocol works (memberlist ``Config`` names).

    ``lan()`` is memberlist's ``DefaultLANConfig``, which Serf uses; ``local()`` is its
    ``DefaultLocalConfig``, for tests and loopback clusters.
    """

    probe_interval: float = 1.0  # a member is probed every second
    probe_timeout: float = 0.5  # direct ack wait before indirect probes
    gossip_interval: float = 0.2  # gossip to gossip_nodes members this often
    gossip_nodes: int = 3
    suspicion_mult: int = 4  # suspicion timeout = mult * log10(n) * probe_interval
    suspicion_max_timeout_mult: int = 6  # Lifeguard: start at max, shrink with confirmations
    retransmit_mult: int = 4  # a broadcast is sent mult * log10(n + 1) times
    push_pull_interval: float = 30.0  # full state exchange with one random member
    indirect_checks: int = 3  # members asked to probe on our behalf
    awareness_max_multiplier: int = 8  # Lifeguard: probe interval stretches up to 8x
    tcp_timeout: float = 10.0
    gossip_to_the_dead_time: float = 30.0  # dead members still get gossip this long
    udp_buffer_size: int = 1400  # largest packet we send
    dead_node_reclaim_time: float = 0.0  # 0: a dead name cannot return from a new address
    disable_tcp_pings: bool = False  # no TCP fallback probe (memberlist DisableTcpPings)
    max_push_pull_requests: int = 128  # concurrent incoming push-pulls served
    max_push_state_bytes: int = 20 * 1024 * 1024
    # Serf's additions: members that failed (not left) are retried with a push-pull, so that the
    # two sides of a healed partition find each other again even after reaping.
    reconnect_interval: float = 30.0
    reconnect_timeout: float = 24 * 3600.0

    @classmethod
    def lan(cls) -> GossipTiming:
        return cls()

    @classmethod
    def local(cls) -> GossipTiming:
        return cls(
            tcp_timeout=1.0,
            indirect_checks=1,
            retransmit_mult=2,
            suspicion_mult=3,
            push_pull_interval=15.0,
            probe_timeout=0.2,
            probe_interval=1.0,
            gossip_interval=0.1,
            gossip_to_the_dead_time=15.0,
        )

    def replace(self, **changes: Any) -> GossipTiming:
        return dataclasses.replace(self, **changes)
