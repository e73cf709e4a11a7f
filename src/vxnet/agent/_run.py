"""The ``vxnet agent`` process: the components of an agent in one trio nursery.

An agent runs the gossip layer, its HTTP API, with ``agent.overlay`` (the default) the overlay
(:mod:`vxnet.overlay._service`, which needs root), and with ``dns.enabled`` the DNS server
(:mod:`vxnet.dns._server`). On SIGINT or SIGTERM it leaves the cluster gracefully (members see it
``left``, not ``failed``) and exits. On SIGHUP it reloads the certificate of its ``[tls]`` (with
which the overlay registers with the masters): the next connection to a master presents the new
one; files that cannot be used are logged and refused, the certificate in force staying.
"""

from __future__ import annotations

import logging
import signal
from typing import TYPE_CHECKING, Any

import trio

from vxnet.agent._api import build_app
from vxnet.gossip import GossipService
from vxnet.http import serve_api
from vxnet.pki import reload_logged

if TYPE_CHECKING:
    from collections.abc import Callable

    from vxnet.config import AgentConfig
    from vxnet.overlay._service import OverlayService

__all__ = ["run_agent"]

log = logging.getLogger("vxnet.agent")


async def run_agent(
    config: AgentConfig, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run the agent until SIGINT/SIGTERM (SIGHUP reloads its certificate); ``task_status`` gets
    the API's URL once serving."""
    for warning in config.security_warnings():
        log.warning("%s", warning)
    gossip = GossipService(config.gossip, role="agent", agent_ip=config.agent.ip)
    overlay: OverlayService | None = None
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            advertise = await nursery.start(gossip.serve)
            if config.agent.overlay:
                from vxnet.overlay._service import OverlayService

                agent_ip = str(config.agent.ip) if config.agent.ip else str(advertise[0])
                overlay = OverlayService(config, gossip, agent_ip)
                nursery.start_soon(overlay.run)
            dns = None
            if config.dns.enabled:
                from vxnet.dns._server import DnsService

                # the container addresses are the overlay's device's: none without the overlay
                addresses = config.dns.container_addresses if overlay is not None else ()
                dns = DnsService(config.dns, gossip, _overlay_networks(overlay), addresses)
                await nursery.start(dns.run)
            app = build_app(gossip, overlay, dns)
            url = await nursery.start(serve_api, app, config.agent.listen)
            log.info("agent %s: gossip on %s:%d, API on %s", gossip.name, *advertise, url)
            task_status.started(url)
            async for signum in signals:
                if signum == signal.SIGHUP:
                    reload_logged(None if overlay is None else overlay.registration.tls, log)
                    continue
                log.info("received %s: leaving the cluster", signal.Signals(signum).name)
                await gossip.leave()
                nursery.cancel_scope.cancel()
                break
    if overlay is not None:
        overlay.close()


def _overlay_networks(overlay: OverlayService | None) -> Callable[[], list[Any]]:
    """The overlay's networks as the agent's allocation names them (clients there may use DNS
    forwarding)."""
    from ipaddress import ip_network

    def networks() -> list[Any]:
        found = []
        if overlay is not None and overlay.info is not None:
            for entry in overlay.info.overlays:
                found += [ip_network(s) for s in (entry.info.subnet, entry.info.subnet6) if s]
        return found

    return networks
