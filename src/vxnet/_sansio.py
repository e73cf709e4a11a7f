"""What the trio drivers of the sans-IO cores (gossip membership, the replicated log) share.

A core keeps its own timers and says when it next needs the clock (``next_deadline()``); its
driver calls it back then (``tick(now)``). :class:`DeadlineTimer` is that loop, with the one
rule every driver needs: after anything it fed the core, move the wake-up to the core's new
deadline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["DeadlineTimer"]


class DeadlineTimer:
    """Calls ``fire(now)`` each time the trio clock reaches ``deadline()``.

    ``deadline`` is read when the timer starts waiting and again at each :meth:`reset`; the
    driver calls :meth:`reset` after every step, since a message may have moved it.
    """

    def __init__(self, deadline: Callable[[], float], fire: Callable[[float], None]) -> None:
        self._deadline = deadline
        self._fire = fire
        self._scope: trio.CancelScope | None = None

    def reset(self) -> None:
        """Wake at the current ``deadline()`` (a no-op until :meth:`run` waits)."""
        if self._scope is not None:
            self._scope.deadline = self._deadline()

    async def run(self) -> None:
        """Wait for each deadline and fire it, until cancelled."""
        while True:
            with trio.CancelScope(deadline=self._deadline()) as scope:
                self._scope = scope
                await trio.sleep_forever()
            self._scope = None
            self._fire(trio.current_time())
