"""The masters: subnet allocation on a replicated log.

This subpackage owns the Subnet Allocation Module of the DC/OS overlay design: it gives each agent
a VTEP IP, a VTEP MAC and, for every virtual network, a subnet split into a CNI half and a Docker
half, and answers an agent only once the allocation is written to the Multi-Paxos replicated log
(:mod:`vxnet.replog`) shared by one, three or five masters, so that a master failover never loses
or duplicates an allocation. Its modules:

* :mod:`._allocator`: the sans-IO state machine applied from the log's entries.
* :mod:`._service`: one master: the log replica, the allocator, and the rules between them.
* :mod:`._api`: the HTTP API (``/overlay-master/...``); :mod:`._run`: the ``vxnet master`` process.
* :mod:`._client`: the client agents use, which finds the leader and rides out failovers.
"""

from vxnet.master._allocator import Allocator, Outcome, agent_address_problem, network_json
from vxnet.master._client import MasterClient, MasterRefused, MasterUnreachable, open_master_client
from vxnet.master._run import run_master
from vxnet.master._service import (
    AllocationFailed,
    MasterConfigError,
    MasterService,
    MasterUnavailable,
)

__all__ = [
    "AllocationFailed",
    "Allocator",
    "MasterClient",
    "MasterConfigError",
    "MasterRefused",
    "MasterService",
    "MasterUnavailable",
    "MasterUnreachable",
    "Outcome",
    "agent_address_problem",
    "network_json",
    "open_master_client",
    "run_master",
]
