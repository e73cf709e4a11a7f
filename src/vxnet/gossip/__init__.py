"""Cluster membership and the replicated store.

This subpackage owns how nodes find each other and agree on who is alive: SWIM membership with the
Lifeguard refinements, speaking the HashiCorp memberlist / Serf 0.9 wire protocol so that a real
``serf agent`` can join a vxnet cluster, and a Lashup-like replicated key/value store (a CRDT
carried on that gossip) in which agents publish their overlay records and task records. Its cores
are sans-IO; thin trio drivers move their datagrams and streams.
"""
