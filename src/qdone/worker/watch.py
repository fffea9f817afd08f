"""The worker's watch on idle queues: checker threads that read the counts of
queues the ``Schedule`` says are due, and a thread that turns wake-ups into
known work. Neither receives, so neither needs a job slot; both tell the
schedule under the worker's lock and wake the lanes."""

from __future__ import annotations

import threading
from collections.abc import Callable

from ..errors import BrokerError
from .checks import CountsSource, WakeSource
from .events import BrokerTrouble, Event
from .policy import Slots
from .queues import QueueRef
from .schedule import Schedule

__all__ = ["Watcher"]

TICK = 0.5  # s: the longest a checker sleeps without looking at the time


class Watcher:
    """Checks and wake-ups for one worker (see the module docstring)."""

    def __init__(
        self,
        schedule: Schedule,
        slots: Slots,
        counts: CountsSource,
        *,
        emit: Callable[[Event], None],
        clock: Callable[[], float],
        stopping: threading.Event,
    ) -> None:
        self._schedule = schedule
        self._slots = slots
        self._cond = slots.cond
        self._counts = counts
        self._emit = emit
        self._clock = clock
        self._stopping = stopping
        self.names: dict[str, str] = {}  # full name -> url, of the queues listened to

    def checker(self) -> None:
        """A checker thread's body: read counts as they come due, until the stop."""
        while not self._stopping.is_set():
            with self._cond:
                now = self._clock()
                due = self._schedule.due_checks(now, self._slots.running(), limit=1)
                if not due:
                    delay = self._schedule.next_check_at() - now
                    self._slots.watch.wait(max(0.01, min(TICK, delay)))
                    continue
            for q in due:
                self.check(q)

    def check(self, q: QueueRef) -> None:
        """Read the counts of ``q`` and tell the schedule (a failure: checked later)."""
        with self._cond:
            epoch = self._schedule.epoch
        try:
            visible, delayed = self._counts.counts(q)
        except BrokerError as exc:
            self._emit(BrokerTrouble(q.name, str(exc), 0.0))
            visible, delayed = -1, -1
        with self._cond:
            self._schedule.checked(q.url, visible, delayed, self._clock(), epoch)
            self._slots.notify_all()

    def wake_loop(self, wakes: WakeSource) -> None:
        """The wake-up thread's body: each queue named is polled at the next free slot."""
        try:
            for name in wakes.wakes():
                if self._stopping.is_set():
                    return
                with self._cond:
                    url = self.names.get(name)
                    if url is not None and self._schedule.wake(url):
                        self._slots.notify_all()
        except Exception as exc:  # an accelerator: its failure ends wake-ups, not the worker
            if not self._stopping.is_set():
                self._emit(BrokerTrouble("", f"wake-ups stopped: {exc}", 0.0))
