"""Bounded admission: a fixed number of generation slots and a bounded FIFO queue.

Overload is explicit: a request that finds every slot busy and the queue full is
refused at once (`Overloaded` → 503 + Retry-After) instead of piling up. Waiters
learn their position so the stream can say why it waits. Runs on the event loop;
`release` may be scheduled from worker threads with `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator

from streamkit.errors import Overloaded


class Ticket:
    """One request's place: admitted once its future is done."""

    def __init__(self, admitted: asyncio.Future[None]) -> None:
        self.admitted = admitted


class Admission:
    def __init__(self, slots: int, max_queue: int, retry_after_s: int) -> None:
        self._free = slots
        self._max_queue = max_queue
        self._retry_after_s = retry_after_s
        self._waiting: deque[Ticket] = deque()
        self._moved = asyncio.Event()

    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    def enter(self) -> Ticket:
        """Take a slot now or a place in the queue; raise `Overloaded` when both are full."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        ticket = Ticket(future)
        if self._free > 0 and not self._waiting:
            self._free -= 1
            future.set_result(None)
        elif len(self._waiting) >= self._max_queue:
            raise Overloaded(
                f"all generation slots are busy and {self._max_queue} requests are waiting",
                retry_after_s=self._retry_after_s,
            )
        else:
            self._waiting.append(ticket)
        return ticket

    def position(self, ticket: Ticket) -> int:
        """1-based place in the queue (0 once admitted)."""
        try:
            return self._waiting.index(ticket) + 1
        except ValueError:
            return 0

    async def wait(self, ticket: Ticket) -> AsyncIterator[int]:
        """Yield the queue position each time it changes, until the ticket is admitted."""
        while not ticket.admitted.done():
            yield self.position(ticket)
            moved = asyncio.ensure_future(self._moved.wait())
            try:
                await asyncio.wait({ticket.admitted, moved}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                moved.cancel()

    def release(self) -> None:
        """Free a slot: hand it to the longest waiter, or return it to the pool."""
        if self._waiting:
            self._waiting.popleft().admitted.set_result(None)
            self._notify_moved()
        else:
            self._free += 1

    def abandon(self, ticket: Ticket) -> None:
        """A waiter went away before it was admitted: drop it from the queue."""
        if ticket in self._waiting:
            self._waiting.remove(ticket)
            self._notify_moved()

    def _notify_moved(self) -> None:
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()
