"""The agent's Prometheus metrics (``GET /metrics``), collected when scraped.

* ``vxnet_members{status}``: gossip members by status; ``vxnet_gossip_probe_seconds``
  (histogram: probe round trips), ``vxnet_gossip_suspicions_total`` (members this node
  suspected).
* ``vxnet_dns_queries_total{result}``, ``vxnet_dns_answer_seconds`` (histogram),
  ``vxnet_dns_records``, ``vxnet_dns_rate_limited_total``, ``vxnet_dns_rate_limit_slipped_total``,
  ``vxnet_dns_kernel_drops_total`` (queries lost in the socket's
  receive queue, from ``/proc/net/udp``).
* ``vxnet_addresses{network, half, state}``: container addresses of this agent's halves
  (``cni``, ``docker``), ``allocated`` and ``free`` (IPv4; ``half="cni6"`` for IPv6).
* ``vxnet_ipam_requests_total{command, result}``: requests of ``vxnet-ipam`` (``ok`` or
  ``error <cni code>``).
* ``vxnet_overlay_reconciles_total``, ``vxnet_overlay_repairs_total``,
  ``vxnet_overlay_netlink_errors_total``, ``vxnet_overlay_remote_agents``.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from vxnet._metrics import by_label, histogram
from vxnet.dns._server import LATENCY_BUCKETS
from vxnet.gossip._membership_types import PROBE_BUCKETS

if TYPE_CHECKING:
    from collections.abc import Iterator

    from prometheus_client.metrics_core import Metric

    from vxnet.dns._server import DnsService
    from vxnet.gossip import GossipService
    from vxnet.overlay._service import OverlayService

__all__ = ["render"]


class _Collector:
    def __init__(
        self, node: GossipService, overlay: OverlayService | None, dns: DnsService | None
    ) -> None:
        self.node = node
        self.overlay = overlay
        self.dns = dns

    def _dns(self) -> Iterator[Metric]:
        dns = self.dns
        if dns is None:
            return
        tally = dns.totals()
        yield by_label(
            CounterMetricFamily,
            "vxnet_dns_queries",
            "DNS queries by result (rcode, forwarded, dropped)",
            "result",
            tally.counts,
        )
        yield histogram(
            "vxnet_dns_answer_seconds",
            "Time from a DNS query's arrival (in the kernel's receive queue, for UDP) to its "
            "answer, forwarding included",
            LATENCY_BUCKETS,
            tally.latency,
            tally.latency_sum,
        )
        yield GaugeMetricFamily("vxnet_dns_records", "Records served", value=dns.zone_size())
        if dns.limiter is not None:
            yield CounterMetricFamily(
                "vxnet_dns_rate_limited",
                "UDP answers the response rate limit held back (dropped or sent truncated)",
                value=tally.limited,
            )
            yield CounterMetricFamily(
                "vxnet_dns_rate_limit_slipped",
                "Rate-limited UDP answers sent truncated, so that real clients retry over TCP",
                value=tally.slipped,
            )
        if dns.pool is not None:
            yield CounterMetricFamily(
                "vxnet_dns_worker_restarts",
                "DNS worker processes started again after one exited",
                value=dns.pool.restarts,
            )
        drops = dns.kernel_drops()
        if drops is not None:
            yield CounterMetricFamily(
                "vxnet_dns_kernel_drops",
                "DNS queries the kernel dropped before the server read them (full receive queue)",
                value=drops,
            )

    def _gossip(self) -> Iterator[Metric]:
        stats = self.node.core.stats
        yield histogram(
            "vxnet_gossip_probe_seconds",
            "Gossip probe round trips (ping sent to ack received)",
            PROBE_BUCKETS,
            stats.probe_rtt,
            stats.probe_rtt_sum,
        )
        yield CounterMetricFamily(
            "vxnet_gossip_suspicions",
            "Members this node suspected (a probe it sent went unanswered)",
            value=stats.suspicions,
        )

    def collect(self) -> Iterator[Metric]:
        counts = collections.Counter(m["status"] for m in self.node.members())
        yield by_label(
            GaugeMetricFamily, "vxnet_members", "Gossip members by status", "status", counts
        )
        yield from self._gossip()
        yield from self._dns()
        overlay = self.overlay
        if overlay is None:
            return
        addresses = GaugeMetricFamily(
            "vxnet_addresses",
            "Container addresses of this agent by network, half and state",
            labels=["network", "half", "state"],
        )
        for network, halves in overlay.containers.usage().items():
            for half, c in halves.items():
                for suffix in ("", "6"):
                    if f"total{suffix}" in c:
                        name = f"{half}{suffix}"
                        addresses.add_metric([network, name, "allocated"], c[f"allocated{suffix}"])
                        addresses.add_metric([network, name, "free"], c[f"free{suffix}"])
        yield addresses
        requests = CounterMetricFamily(
            "vxnet_ipam_requests", "Requests of vxnet-ipam", labels=["command", "result"]
        )
        for what, n in sorted(overlay.containers.requests.items()):
            command, _, result = what.partition(" ")
            requests.add_metric([command, result], n)
        yield requests
        for name, text, value in (
            ("vxnet_overlay_reconciles", "Reconciles that wrote to the kernel", overlay.reconciles),
            ("vxnet_overlay_repairs", "Repairs after netlink notifications", overlay.repairs),
            ("vxnet_overlay_netlink_errors", "Failed netlink requests", overlay.netlink_errors),
        ):
            yield CounterMetricFamily(name, text, value=value)
        yield GaugeMetricFamily(
            "vxnet_overlay_remote_agents", "Live remote agents", value=len(overlay.remotes)
        )


def render(
    node: GossipService, overlay: OverlayService | None, dns: DnsService | None = None
) -> tuple[bytes, str]:
    """The metrics text and its content type."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(node, overlay, dns))
    return generate_latest(registry), CONTENT_TYPE_LATEST
