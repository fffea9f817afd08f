"""The start-up sweep: queues new to a worker each get one check as soon as a
bounded rate allows, instead of waiting for their phase (up to a check period).

At start, and when a re-listing of wildcards finds new queues, the ``Schedule``
hands its new idle queues here with the time of their phase check. They are
swept from the furthest phase to the nearest, while the phase rotation takes the
nearest first: a queue seen by its phase leaves the sweep, so the two meet and
each queue is seen once, n / (rate + n / period) seconds after the start at the
latest. Pure: time is passed in.

The rate, ``SWEEP_RATE`` checks a second, bounds what a restart adds to the
checks at the phases (n / period a second: 8.6 on 500 queues). At 20 a second,
50 queues are swept in under 3 s and 500 in under 18 s (the phases take a third
of them); a fleet of twenty workers restarted together makes at most 400 calls a
second for those seconds, and fewer with a shared cache: they sweep in about the
same order, so the first one's counts serve the others. A swept queue's next
check comes a period less ``REPHASE`` after the sweep's (``Schedule``), so the
sweep costs one check a queue in all, spread over the periods the queue takes to
meet its phase again: an idle worker's first minute on 500 queues costs about 80
calls more than one without a sweep, within issue 12's 700.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping

__all__ = ["BURST", "SWEEP_RATE", "Sweep"]

SWEEP_RATE = 20.0  # checks a second: at most rate x (seconds + BURST) in any window
BURST = 0.25  # s: a sweep that fell behind catches up at most this much of its rate


class Sweep:
    """Queues (by url) waiting for their early check, and the rate that paces them."""

    def __init__(self, rate: float = SWEEP_RATE) -> None:
        self.rate = rate
        self._pending: dict[str, float] = {}  # url -> time of its phase check
        self._order: deque[str] = deque()
        self._next = -math.inf  # the earliest time of the next sweep check

    def add(self, phase_at: Mapping[str, float]) -> None:
        """Sweep these queues (url -> time of their phase check), furthest first."""
        self._pending.update(phase_at)
        self._order = deque(sorted(self._pending, key=self._pending.__getitem__, reverse=True))

    def drop(self, url: str) -> None:
        """``url`` was seen another way (a check at its phase, a receive)."""
        self._pending.pop(url, None)

    def take(self, now: float, eligible: Callable[[str], bool]) -> str | None:
        """The next queue to check now, if the rate allows; queues not ``eligible``
        (gone, in flight, known to hold work) leave the sweep."""
        if now < self._next:
            return None
        while self._order:
            url = self._order.popleft()
            if self._pending.pop(url, None) is None or not eligible(url):
                continue
            self._next = max(self._next, now - BURST) + 1.0 / self.rate
            return url
        return None

    def next_at(self) -> float:
        """When ``take`` may next return a queue (``math.inf``: none waits)."""
        return self._next if self._pending else math.inf

    def __len__(self) -> int:
        return len(self._pending)
