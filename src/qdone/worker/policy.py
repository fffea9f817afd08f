"""Small policies of the worker: job slots, retry backoff, long-poll wait."""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable

from .events import MAX_VISIBILITY

__all__ = ["Slots", "poll_wait", "retry_delay"]

JITTER = 0.25  # a delay is base * 2**(attempt-1), times 1 +/- this


class Slots:
    """Free job slots. A receive reserves slots first, so the worker never holds a
    message it cannot start at once. ``polling``: slots held by receives in flight."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0
        self.polling = 0
        self._waiting: dict[str, int] = {}  # threads waiting in reserve, by queue
        self._cond = threading.Condition()

    def free(self) -> int:
        with self._cond:
            return self.total - self.used

    def running(self) -> int:
        """Slots held by messages received (jobs running or waiting their turn)."""
        with self._cond:
            return self.used - self.polling

    def reserve(
        self,
        want: int,
        linger: float,
        stopping: Callable[[], bool],
        timeout: float = 1.0,
        queue: str = "",
    ) -> int:
        """Take up to ``want`` slots for a receive: wait (up to ``timeout``) for one,
        then up to ``linger`` s more for ``want`` while running jobs may free them.
        0 on stop or timeout. Give back with ``settle``."""
        with self._cond:
            self._waiting[queue] = self._waiting.get(queue, 0) + 1
            try:
                ready = self._cond.wait_for(lambda: stopping() or self.used < self.total, timeout)
            finally:
                self._waiting[queue] -= 1
            if not ready:
                return 0
            if stopping():
                return 0
            want = min(want, self.total - self.polling)
            end = time.monotonic() + linger
            while self.total - self.used < want and self.used > self.polling and not stopping():
                left = end - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            n = max(1, min(want, self.total - self.used))
            self.used += n
            self.polling += n
            return n

    def settle(self, n: int, got: int) -> None:
        """A receive of ``n`` reserved slots returned ``got`` messages."""
        with self._cond:
            self.polling -= n
            self.used -= n - got
            if got < n:  # slots freed; otherwise nobody waiting can go on
                self._cond.notify_all()

    def others_waiting(self, queue: str) -> bool:
        """Whether a receive for another queue than ``queue`` waits for a slot."""
        with self._cond:
            return any(n for q, n in self._waiting.items() if q != queue)

    def repoll(self) -> None:
        """A running job's slot goes straight to a receive (``settle(1, got)`` after)."""
        with self._cond:
            self.polling += 1

    def release(self, n: int = 1) -> None:
        """``n`` received messages are done with."""
        if n <= 0:
            return
        with self._cond:
            self.used -= n
            self._cond.notify_all()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()


def retry_delay(
    base: int,
    attempt: int,
    *,
    rng: random.Random,
    held_for: float,
    age: float,
    retention: int,
) -> int:
    """Seconds before attempt ``attempt + 1``: exponential from ``base`` with jitter,
    kept below SQS's 12 hours from the receive and before the message expires."""
    delay = base * 2 ** min(attempt - 1, 30) * rng.uniform(1 - JITTER, 1 + JITTER)
    cap = min(MAX_VISIBILITY - held_for - 1, retention - age - 60)
    return max(0, math.floor(min(float(delay), float(cap))))


def poll_wait(wait_time: int, queues: int, slots: int) -> int:
    """Long-poll wait: ``wait_time``, shortened when there are fewer slots than queues
    (queues then take turns, so each is still polled once per ``wait_time``)."""
    if queues <= slots or wait_time == 0:
        return wait_time
    return max(1, wait_time * slots // queues)
