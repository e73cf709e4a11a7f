"""The masters: subnet allocation on a replicated log.

This subpackage owns the Subnet Allocation Module of the DC/OS overlay design: it gives each agent
a VTEP IP, a VTEP MAC and, for every virtual network, a subnet split into a CNI half and a Docker
half, and answers an agent only once the allocation is written to a Multi-Paxos replicated log
shared by one, three or five masters, so that a master failover never loses or duplicates an
allocation. It also serves the master's HTTP API (``/overlay-master/...``).
"""
