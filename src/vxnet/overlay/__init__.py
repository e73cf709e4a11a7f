"""The agent's data plane.

This subpackage owns everything an agent does to put containers on the overlay: registering with
the masters, programming the host (the VxLAN VTEP, the bridges, forwarding, egress NAT, the CNI
configurations, and the routes, neighbour and forwarding entries towards every live remote
agent) by reconciling desired against actual state, creating Docker networks, allocating
container addresses through vxnet's CNI IPAM plugin, and publishing overlay and task records in
the replicated store.

Modules, by concern:

* :mod:`._service`: :class:`~._service.OverlayService`, the loop that ties them together;
  :mod:`._status`: its status document.
* Reconciling (sans-IO rules, one I/O boundary): :mod:`._model` and :mod:`._diff` (the objects
  towards remote agents), :mod:`._local` and :mod:`._local_model` (the local state and its
  diff), :mod:`._reconcile` (one pass), :mod:`._machine` (the host behind a Protocol, and
  :class:`~._machine.LinuxMachine`), :mod:`._netlink` (netlink), :mod:`._nat` (the egress NAT
  ruleset), :mod:`._cni` (CNI configurations), :mod:`._launcher` (the IPAM plugin launcher).
* :mod:`._registration` (the masters), :mod:`._records` (the overlay record).
* Containers: :mod:`._ipam` (the lease book), :mod:`._containers` (the IPAM socket and task
  records), :mod:`._docker` and :mod:`._dockernet` (Docker networks).
"""
