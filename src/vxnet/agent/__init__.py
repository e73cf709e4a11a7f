"""The ``vxnet agent`` process: gossip, the overlay, DNS and the agent's HTTP API, together.

This package composes the components (:mod:`vxnet.gossip`, :mod:`vxnet.overlay`,
:mod:`vxnet.dns`) that do not know each other: :mod:`._run` runs them in one nursery,
:mod:`._api` serves their state over HTTP (``/v1/...``, ``/overlay-agent/...``) and
:mod:`._metrics` renders their counters for Prometheus.
"""

from vxnet.agent._run import run_agent

__all__ = ["run_agent"]
