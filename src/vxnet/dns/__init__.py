"""Cluster DNS, answered on every agent.

This subpackage owns the authoritative zone ``dcos.thisdcos.directory``: names such as
``<task>.<framework>.containerip.dcos.thisdcos.directory`` are answered from the replicated store on
every agent, with no central server to fail, and other names are forwarded upstream.
"""
