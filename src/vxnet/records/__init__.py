"""The typed records every component exchanges, each with one JSON codec.

* :class:`AgentInfo` (and its parts): what the masters allocate to an agent, in DC/OS
  ``overlay.proto``'s shape; the masters answer it, agents save it and read it.
* :class:`OverlayRecord`, :class:`TaskRecord`, :class:`UsageRecord`: what agents publish in the
  replicated store under :data:`OVERLAY_PREFIX`, :data:`TASK_PREFIX` and :data:`USAGE_PREFIX`.

Every type is a frozen dataclass with ``from_json(obj)`` (raising :class:`RecordError`, a
``ValueError`` that names the field) and ``to_json()``. Unknown fields, from a newer version, are
ignored. Statuses are :class:`Status` (its values are ``overlay.proto``'s names), and one rule says
whether an overlay entry is usable: :attr:`AgentOverlay.ok`.
"""

from vxnet.records._agent import (
    AgentInfo,
    AgentOverlay,
    Bridge,
    OverlayInfo,
    State,
    Status,
    VxLAN,
    agent_infos,
)
from vxnet.records._codec import RecordError
from vxnet.records._store import (
    OVERLAY_PREFIX,
    PROTOCOLS,
    TASK_PREFIX,
    USAGE_PREFIX,
    HalfUsage,
    NetworkSubnets,
    OverlayRecord,
    Port,
    TaskRecord,
    UsageRecord,
)

__all__ = [
    "OVERLAY_PREFIX",
    "PROTOCOLS",
    "TASK_PREFIX",
    "USAGE_PREFIX",
    "AgentInfo",
    "AgentOverlay",
    "Bridge",
    "HalfUsage",
    "NetworkSubnets",
    "OverlayInfo",
    "OverlayRecord",
    "Port",
    "RecordError",
    "State",
    "Status",
    "TaskRecord",
    "UsageRecord",
    "VxLAN",
    "agent_infos",
]
