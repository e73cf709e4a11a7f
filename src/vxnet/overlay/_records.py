"""The ``overlay/<agent ip>`` records agents publish in the replicated store, and reading them back.

Each agent publishes what the others need to reach its containers::

    overlay/198.18.0.11 = {"agent_ip": "198.18.0.11", "vtep_ip": "44.128.0.1",
                           "vtep_mac": "70:b3:d5:80:00:01", "vtep_ip6": "fd01:a::1",
                           "subnets": ["9.0.0.0/24", "fd01:b::/80"],
                           "networks": {"dcos": {"subnet": "9.0.0.0/24",
                                                 "subnet6": "fd01:b::/80"}}}

``subnets`` is what the others route to this agent; ``networks`` says which network each
belongs to (for people and tools: ``vxnet store get overlay/<ip>``). The record's type and codec
are :class:`vxnet.records.OverlayRecord`; this module turns it into the overlay's terms.

Addresses are written in :mod:`ipaddress`'s canonical spelling, so that the routes built from them
compare equal to what the kernel reports. A record that does not fit (a missing field, an address
that does not parse, a subnet of the wrong family for the VTEP) is skipped with the reason, never
programmed half.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vxnet.overlay._model import RemoteAgent
from vxnet.records import OVERLAY_PREFIX, OverlayRecord, RecordError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from vxnet.records import AgentInfo

__all__ = ["RECORD_PREFIX", "RecordError", "overlay_record", "remote_from_record"]

RECORD_PREFIX = OVERLAY_PREFIX


def overlay_record(agent: AgentInfo) -> dict[str, Any]:
    """This agent's record (as stored), from the AgentInfo the masters gave it.

    Raises:
        RecordError: The AgentInfo has no VTEP (no network is OK).
    """
    return OverlayRecord.of_agent(agent).to_json()


def remote_from_record(key: str, value: Mapping[str, Any]) -> RemoteAgent:
    """The remote agent a store record describes.

    Raises:
        RecordError: The record does not fit; the message names the key and the field.
    """
    record = OverlayRecord.from_json(value, key)
    return RemoteAgent(
        ip=record.agent_ip,
        vtep_ip=record.vtep_ip,
        vtep_mac=record.vtep_mac,
        vtep_ip6=record.vtep_ip6,
        subnets=tuple(sorted(record.subnets)),
    )
