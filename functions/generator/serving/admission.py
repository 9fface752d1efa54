"""Bounded admission: a fixed number of generation slots and a bounded FIFO queue.

Overload is explicit: a request that finds every slot busy and the queue full is
refused at once (`Overloaded` → 503 + Retry-After) instead of piling up. Waiters
learn their position so the stream can say why it waits.

Thread-safe: worker threads free their slot the moment they stop computing, without
a round trip through an event loop (which may already be gone); waiters are woken
on their own loop with `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import AsyncIterator

from streamkit.errors import Overloaded


class Ticket:
    """One request's place: `admitted` once it holds a slot."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.admitted = False
        self._loop = loop
        self._changed = asyncio.Event()

    def _notify(self) -> bool:
        """Wake the waiter (from any thread); False when its event loop is gone."""
        if self._loop.is_closed():
            return False
        try:
            self._loop.call_soon_threadsafe(self._changed.set)
        except RuntimeError:
            return False
        return True


class Admission:
    def __init__(self, slots: int, max_queue: int, retry_after_s: int) -> None:
        self._free = slots
        self._max_queue = max_queue
        self._retry_after_s = retry_after_s
        self._waiting: deque[Ticket] = deque()
        self._lock = threading.Lock()

    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    def enter(self) -> Ticket:
        """Take a slot now or a place in the queue; raise `Overloaded` when both are full."""
        ticket = Ticket(asyncio.get_running_loop())
        with self._lock:
            if self._free > 0 and not self._waiting:
                self._free -= 1
                ticket.admitted = True
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
        with self._lock:
            return self._waiting.index(ticket) + 1 if ticket in self._waiting else 0

    async def wait(self, ticket: Ticket, heartbeat_s: float) -> AsyncIterator[int]:
        """Yield the queue position each time it changes, and at least every `heartbeat_s`
        (so an idle-timeout downstream never mistakes a long wait for a dead stream),
        until the ticket is admitted."""
        while True:
            ticket._changed.clear()  # before reading state, so no wake-up is lost
            position = self.position(ticket)
            if ticket.admitted:
                return
            yield position
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ticket._changed.wait(), heartbeat_s)

    def release(self) -> None:
        """Free a slot (any thread): hand it to the longest live waiter, or to the pool."""
        with self._lock:
            while self._waiting:
                ticket = self._waiting.popleft()
                ticket.admitted = True
                if ticket._notify():
                    self._notify_waiting()
                    return
            self._free += 1

    def abandon(self, ticket: Ticket) -> None:
        """A waiter went away before it was admitted: drop it from the queue."""
        with self._lock:
            if ticket in self._waiting:
                self._waiting.remove(ticket)
                self._notify_waiting()

    def _notify_waiting(self) -> None:
        for ticket in self._waiting:
            ticket._notify()
