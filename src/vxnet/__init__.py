"""vxnet: IP-per-container networking for container clusters.

Every container gets its own address on a VxLAN layer-3 overlay that the Linux kernel encapsulates.
Agents find each other by gossip (:mod:`vxnet.gossip`), a small master cluster hands out subnets
through a Paxos-replicated log (:mod:`vxnet.master`), every agent programs its kernel
(:mod:`vxnet.overlay`) and answers DNS for every container (:mod:`vxnet.dns`).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
