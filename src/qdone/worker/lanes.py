"""Lanes: the worker's ``concurrency`` threads, each of which receives and runs.

A lane with nothing to run takes a receive from the ``Schedule`` (which queue,
how many slots, how long to wait), reserves its slots, receives, runs the first
chain of messages itself and hands the others to idle lanes (there is one for
each reserved slot, since a running chain holds one slot and a lane). A chain is
one message, or on a FIFO queue one group's messages in order. On SQS a lane
waits up to ``SQS_LINGER`` for enough free slots to fill a batch from a busy
queue; SQLite receives wait at most ``SQLITE_MAX_WAIT`` (a stop is seen within).
All state is guarded by the slots' condition, shared with the worker.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ..broker.base import MAX_BATCH, Broker, Message
from ..errors import BrokerError, QueueNotFound, StoreDamaged
from ..job import nice_this_thread
from .acker import Acker
from .events import BrokerTrouble, Event, WorkerSettings
from .policy import Slots
from .queues import QueueRef
from .runner import Runner, chains
from .schedule import Pick, Schedule
from .watch import Watcher

__all__ = ["Lanes", "Run"]

SQS_LINGER = 0.2  # s to wait for more free slots, so receives and deletes fill batches
SQLITE_MAX_WAIT = 1  # s: local receives are cheap; a stop is seen within this
TICK = 0.5  # s: the longest a lane sleeps without looking at the time


@dataclass(frozen=True)
class Run:
    """A chain of received messages to run, on one slot."""

    queue: QueueRef
    chain: list[Message]
    received_at: float


class Lanes:
    """What the lane threads share; ``lane`` is a thread's body."""

    def __init__(
        self,
        broker: Broker,
        settings: WorkerSettings,
        slots: Slots,
        schedule: Schedule,
        runner: Runner,
        acker: Acker,
        watcher: Watcher,
        *,
        clock: Callable[[], float],
        stopping: threading.Event,
        emit: Callable[[Event], None],
        refresh: Callable[[], None],
        describe: Callable[[QueueRef], QueueRef],
        nice: bool,
        fatal: Callable[[BrokerError], None] = lambda _e: None,
    ) -> None:
        self._fatal = fatal
        self._broker = broker
        self._settings = settings
        self._slots = slots
        self._cond = slots.cond
        self._schedule = schedule
        self._runner = runner
        self._acker = acker
        self._watcher = watcher
        self._clock = clock
        self._stopping = stopping
        self._emit = emit
        self._refresh = refresh
        self._describe = describe
        self._nice = nice
        self._sqlite = broker.service != "SQS"
        linger = settings.receive_linger
        self._linger = linger if linger is not None else (0.0 if self._sqlite else SQS_LINGER)
        self.handoff: deque[Run] = deque()  # chains received for idle lanes
        self.inflight = 0  # receives in flight

    def lane(self) -> None:
        if self._nice:  # lanes run at the jobs' niceness (Linux): the jobs inherit it
            nice_this_thread()
        while True:
            task = self._next_task()
            if task is None:
                return
            if isinstance(task, Run):
                self._runner.run_chain(task.queue, task.chain, task.received_at)
            else:
                self.receive(task, run_first=True)

    def _next_task(self) -> Run | Pick | None:
        linger_until = time.monotonic() + self._linger
        with self._cond:
            while True:
                if self.handoff:
                    return self.handoff.popleft()
                if self._runner.killed.is_set():
                    return None
                if self._stopping.is_set():
                    if self.inflight == 0:
                        return None
                else:
                    linger = linger_until - time.monotonic()
                    pick = self._pick(linger > 0)
                    if pick is not None:
                        return pick
                    if linger > 0:
                        self._cond.wait(linger)
                        continue
                self._cond.wait(TICK)

    def _pick(self, fill: bool) -> Pick | None:
        """A receive to make now, its slots reserved and counted in flight (locked).
        ``fill``: a receive from a busy queue waits for enough free slots to fill a
        batch while jobs run (they free slots soon)."""
        free = self._slots.total - self._slots.used
        running = self._slots.running()
        batch = min(MAX_BATCH, self._slots.total) if fill and running else 0
        pick = self._schedule.pick(free, self._clock(), running, batch)
        if pick is None:
            return None
        self._slots.reserve(pick.n)
        self.inflight += 1
        return pick

    def receive(self, pick: Pick, run_first: bool) -> list[Run]:
        """Receive into the reserved slots; the chains are handed to idle lanes but,
        with ``run_first``, the first, which runs here. Returns those not handed."""
        q = pick.queue
        wait = min(pick.wait, SQLITE_MAX_WAIT) if self._sqlite else pick.wait
        with self._cond:
            epoch = self._schedule.epoch
        received_at = self._clock()
        messages: list[Message] = []
        failed: BrokerError | None = None
        try:
            self._acker.catch_up(q.url)
            messages = self._broker.receive(q.url, pick.n, self._visibility(), wait)
        except BrokerError as exc:
            failed = exc
        for m in messages:
            self._acker.hold(m, received_at, self._visibility())
        if messages:
            q = self._described(q)
        runs = [Run(q, chain, received_at) for chain in chains(q, messages)]
        mine, others = (runs[:1], runs[1:]) if run_first else (runs, [])
        with self._cond:
            self.inflight -= 1
            # Wakes the lanes (and the watchers) once the lock is let go, all told below.
            self._slots.settle(pick.n, len(runs))
            # Draining with no job left, an empty queue must show no delayed message too.
            check = self._settings.drain and not (messages or failed or self._slots.running())
            if failed is None:
                self._schedule.received(
                    q.url, pick.n, len(messages), self._clock(), epoch, not check
                )
            self.handoff.extend(others)
        if failed is not None:
            self._receive_failed(q, failed)
        elif check:
            self._watcher.check(q)
        for run in mine if run_first else ():
            self._runner.run_chain(run.queue, run.chain, run.received_at)
        return [] if run_first else mine

    def _receive_failed(self, q: QueueRef, exc: BrokerError) -> None:
        with self._cond:
            pause = self._schedule.failed(q.url, self._clock())
        if isinstance(exc, QueueNotFound):
            self._refresh()  # deleted: the listing drops it
        elif isinstance(exc, StoreDamaged):
            self._fatal(exc)  # no retry can mend it
        else:
            self._emit(BrokerTrouble(q.name, str(exc), pause))

    def _described(self, q: QueueRef) -> QueueRef:
        """``q`` with its redrive limit and retention, read when its first messages
        came (failing that, as a queue without redrive: the broker's redrive still
        applies, at the next receive after its visibility timeout)."""
        try:
            return self._describe(q)
        except BrokerError as exc:
            self._emit(BrokerTrouble(q.name, str(exc), 0.0))
            return q

    def _visibility(self) -> int:
        return min(self._settings.initial_visibility, self._settings.cover())
