"""Small policies of the worker: job slots and the retry backoff."""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable

from .events import MAX_VISIBILITY

__all__ = ["Slots", "retry_delay"]

JITTER = 0.25  # a delay is base * 2**(attempt-1), times 1 +/- this


class Slots:
    """Free job slots. A receive reserves slots first, so the worker never holds a
    message it cannot start at once; a chain of messages (one FIFO group) holds one.
    ``polling``: slots held by receives in flight. ``cond`` (reentrant) guards them
    and is what the lanes wait on; ``watch``, over the same lock, is what the
    watchers (the main loop, the checkers) wait on. A change wakes the lanes, but
    the watchers only with no job running or when ``watched`` says it may concern
    them: waking every thread at each job's start and end cost the worker about
    as much CPU as the rest of what it does for a job."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0
        self.polling = 0
        lock = threading.RLock()
        self.cond = threading.Condition(lock)
        self.watch = threading.Condition(lock)
        self.watched: Callable[[], bool] = lambda: True  # called with the lock held

    def lower(self, total: int) -> int:
        """Hold at most ``total`` slots from now on (at least 1, never more than
        before): jobs could not start with more. The new total."""
        with self.cond:
            self.total = max(1, min(self.total, total))
            return self.total

    def free(self) -> int:
        with self.cond:
            return self.total - self.used

    def running(self) -> int:
        """Slots held by messages received (jobs running or waiting their turn)."""
        with self.cond:
            return self.used - self.polling

    def reserve(self, n: int) -> int:
        """Take up to ``n`` free slots for a receive now; how many were taken."""
        with self.cond:
            n = max(0, min(n, self.total - self.used))
            self.used += n
            self.polling += n
            return n

    def settle(self, n: int, kept: int) -> None:
        """A receive of ``n`` reserved slots keeps ``kept`` of them (its chains)."""
        with self.cond:
            self.polling -= n
            self.used -= n - kept
            self.notify_all()

    def release(self, n: int = 1) -> None:
        """``n`` chains of received messages are done with."""
        if n <= 0:
            return
        with self.cond:
            self.used -= n
            self.notify_all()

    def notify_all(self) -> None:
        """Something changed: wake the lanes, and the watchers if it may concern them."""
        with self.cond:
            self.cond.notify_all()
            if self.used == self.polling or self.watched():
                self.watch.notify_all()

    def wake(self) -> None:
        """Wake every thread (a stop, new queues)."""
        with self.cond:
            self.cond.notify_all()
            self.watch.notify_all()


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
