"""The DNS service's zone follows the store: a record that arrives before the service subscribed
to changes (while its workers start, say) is still served. A stand-in for the gossip layer lets
the test choose exactly when records appear and what the subscription reports."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from vxnet.config import DnsSettings
from vxnet.dns._server import DnsService

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

RECORD = {"name": "web", "framework": "marathon", "agent_ip": "198.18.0.1", "ip": "9.0.1.2"}


class Subscription:
    """Reports no change at all: only what happened after it was made would show here."""

    @property
    def changes(self) -> AsyncIterator[None]:
        return self._never()

    async def _never(self) -> AsyncIterator[None]:
        await trio.sleep_forever()
        yield None


class Gossip:
    """The first read of the task records finds none; the record is there from then on."""

    def __init__(self) -> None:
        self.reads = 0

    def hidden_owners(self) -> frozenset[str]:
        return frozenset()

    def records(self, prefix: str, *, live: bool) -> list[dict[str, Any]]:
        self.reads += 1
        if self.reads == 1:
            return []
        return [{"key": f"{prefix}198.18.0.1/web", "value": RECORD}]

    def subscribe(self, prefix: str) -> Subscription:
        return Subscription()


def served(service: DnsService) -> bool:
    name = "web.marathon.containerip.dcos.thisdcos.directory"
    return {"name": name, "type": "A", "value": "9.0.1.2", "ttl": 5} in service.zone.records()


async def test_a_record_stored_before_the_subscription_is_served() -> None:
    gossip = Gossip()
    service = DnsService(DnsSettings(listen=("127.0.0.1:0",), workers=0), gossip)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        assert not served(service)  # the first build found no record
        with trio.fail_after(5):
            while not served(service):  # noqa: ASYNC110 (the swap signals nothing)
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert gossip.reads >= 2
