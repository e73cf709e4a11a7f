"""The agent's data plane.

This subpackage owns everything an agent does to put containers on the overlay: registering with
the masters, programming the kernel (the VxLAN VTEP, the bridges, and the routes, neighbour and
forwarding entries towards every live remote agent) by reconciling desired against actual state,
writing CNI configurations, creating Docker networks, allocating container addresses through
vxnet's CNI IPAM plugin, and publishing overlay and task records in the replicated store.
"""
