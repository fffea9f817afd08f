"""The listen/run loop of ``qdone worker``.

``concurrency`` lane threads both receive and run (``lanes``), as the
``Schedule`` says (which queue, how many slots, how long to wait); the
``Watcher``'s threads read the counts of idle queues and take wake-ups. Threads: ``concurrency`` + 2
checkers + the acker's 2 + this one (+ 1 for wake-ups), whatever the number of
queues. Deletes and visibility changes go through the ``Acker``; a job's fate is
the ``Runner``'s.

Draining, the worker ends once no job runs and every queue was seen empty since
the last job ended; no receive then waits more than 1 s, so it ends about a second
after its last job, delayed messages included. ``stop()`` (first signal): no new
receive; one in flight is waited for and its messages run (on SQS up to
``--wait-time``: the price of never dropping them; SQLite receives wait at most
one second); running jobs finish. ``kill()`` (second signal): every job's
process group is killed. The core never prints: it calls ``on_event``.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..broker.base import MAX_BATCH, Broker
from ..config import Options
from ..errors import BrokerError, StoreDamaged
from .acker import Acker
from .checks import BrokerCounts, CountsSource, WakeSource
from .events import BrokerTrouble, Event, Listening, QueueMissing, Summary, Waiting, WorkerSettings
from .handler import Handler, HandlerJobs
from .lanes import Lanes
from .policy import Slots
from .queues import QueueResolver
from .runner import STATS, Runner
from .schedule import Pick, Schedule
from .watch import Watcher

if TYPE_CHECKING:
    from ..dedup import RunClaims

__all__ = ["Worker"]

log = logging.getLogger(__name__)
CHECKERS = 2  # threads reading counts of idle queues
TICK = 0.5  # s: the longest a thread sleeps without looking at the time


class Worker:
    """Takes commands off queues and runs them; see the module docstring."""

    def __init__(
        self,
        broker: Broker,
        options: Options,
        settings: WorkerSettings,
        *,
        on_event: Callable[[Event], None] = lambda _e: None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        archive_to: Callable[[str], None] | None = None,
        handler: Handler | None = None,
        claims: RunClaims | None = None,
        counts: CountsSource | None = None,
        wakes: WakeSource | None = None,
    ) -> None:
        """``archive_to``: with ``--archive``, writes a command out (flushed), raising
        OSError when it cannot; the message is deleted only after it returned.
        ``handler``: run each message by calling it (see ``worker.handler``)
        instead of ``/bin/sh -c``.
        ``counts`` and ``wakes``: see ``checks`` (default: counts from the broker)."""
        self.broker = broker
        self.settings = settings
        self._on_event = on_event
        self._clock = clock
        rng = rng or random.Random()
        self._resolver = QueueResolver(
            broker,
            options,
            settings.queues,
            fifo=settings.fifo,
            include_failed=settings.include_failed,
            include_dead=settings.include_dead,
            clock=clock,
            interval=settings.refresh_interval,
        )
        self._acker = Acker(
            broker,
            clock=clock,
            margin=settings.visibility_margin,
            flush_interval=settings.flush_interval,
            on_error=lambda url, text: self._emit(BrokerTrouble(broker.queue_name(url), text, 0.0)),
            on_sent=self._activity,
            on_settled=lambda: self._slots.notify_all(),
        )
        self._slots = Slots(settings.concurrency)
        self._cond = self._slots.cond  # guards the slots, the schedule and the hand-offs
        self._runner = Runner(
            settings,
            self._acker,
            self._slots,
            emit=self._emit,
            on_activity=self._activity,
            clock=clock,
            rng=rng,
            archive_to=archive_to,
            on_stop=self.stop,
            new_job=None if handler is None else HandlerJobs(handler, settings, self._emit),
            claims=claims,
        )
        self._schedule = Schedule.for_worker(settings, sqs=broker.service == "SQS", rng=rng)
        self._stopping = self._runner.stopping  # the runner's jobs see the stop
        # With jobs running, a change concerns the main loop only once stopping (no
        # drain can end), and the checkers only if a check can come due.
        self._slots.watched = lambda: self._stopping.is_set() or self._schedule.checks_possible()
        self._watcher = Watcher(
            self._schedule,
            self._slots,
            # Draining decides on fresh counts: a shared one may predate a send.
            counts if counts is not None and not settings.drain else BrokerCounts(broker),
            emit=self._emit,
            clock=clock,
            stopping=self._stopping,
        )
        self._wakes = wakes
        self._lanes = Lanes(
            broker,
            settings,
            self._slots,
            self._schedule,
            self._runner,
            self._acker,
            self._watcher,
            clock=clock,
            stopping=self._stopping,
            emit=self._emit,
            refresh=self._refresh,
            describe=self._resolver.describe,
            nice=handler is None,  # a handler runs in the worker, at its priority
            fatal=self._fatal,
        )
        self._fatal_error: BrokerError | None = None
        self._emit_lock = threading.Lock()
        self._signalled = False  # stopped by stop(), not by the end of a drain
        self._missing_reported: set[str] = set()

    def stop(self) -> None:
        """Take no new work; let running jobs finish (first SIGTERM/SIGINT)."""
        self._signalled = True
        self._end()

    def kill(self) -> None:
        """Kill every running job's process group now (second signal)."""
        self._runner.kill()
        self.stop()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def _fatal(self, exc: BrokerError) -> None:
        """An error no retry mends (a damaged store): stop as at a first signal, and
        ``run()`` raises it once running jobs have ended."""
        self._fatal_error = exc
        self._end()

    def _end(self) -> None:
        self._stopping.set()
        if self._wakes is not None:
            self._wakes.close()
        self._slots.wake()

    def run(self) -> Summary:
        """Listen until stopped (or drained); the summary of what ran."""
        self._refresh(first=True)
        self._acker.start()
        threads = [
            self._thread(self._lanes.lane, f"qdone-lane-{i}")
            for i in range(self.settings.concurrency)
        ]
        threads += [
            self._thread(self._watcher.checker, f"qdone-check-{i}") for i in range(CHECKERS)
        ]
        if self._wakes is not None:
            wakes = self._wakes
            threads.append(self._thread(lambda: self._watcher.wake_loop(wakes), "qdone-wake"))
        try:
            self._main_loop()
        finally:
            self._end()
            self._join(threads)
            self._runner.close()
            self._acker.stop()
        summary = self._summary()
        if self._fatal_error is not None:
            raise self._fatal_error
        return summary

    def _join(self, threads: list[threading.Thread]) -> None:
        """Wait for the lanes; killed, only for the jobs' reports (killed jobs end at
        once; a receive in flight is not waited for)."""
        if not self._runner.killed.is_set():
            for t in threads:
                t.join()
            return
        with self._cond:
            self._cond.wait_for(lambda: not (self._slots.running() or self._lanes.handoff), 10)

    def _thread(self, target: Callable[[], None], name: str) -> threading.Thread:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        return thread

    def _main_loop(self) -> None:
        waiting: Waiting | None = None
        while not self._runner.killed.is_set():
            if self._stopping.is_set():
                now = self._waiting()
                if now.jobs == 0 and now.receives == 0 and not self._lanes.handoff:
                    return
                if self._signalled and now != waiting:
                    self._emit(now)
                waiting = now
            elif self.settings.drain and self._drained():
                self._end()
                continue
            elif self._resolver.due():
                self._refresh()
            with self._cond:
                self._slots.watch.wait(TICK)

    def _waiting(self) -> Waiting:
        with self._cond:
            return Waiting(jobs=self._slots.running(), receives=self._lanes.inflight)

    def _drained(self) -> bool:
        """No job runs and every queue was seen empty since the last one ended (a
        receive still in flight is waited for by the shutdown, and its messages run)."""
        with self._cond:
            if self._slots.running() or self._lanes.handoff:
                return False
            due = self._runner.retry_due
            if due:
                if self._clock() < due:
                    return False
                self._runner.retry_due = 0.0
                self._schedule.epoch += 1
            if not self._schedule.all_empty():
                return False
        if self._acker.pending():
            self._acker.flush_soon()  # nothing runs: no batch to wait for
            return False
        return True

    def _refresh(self, first: bool = False) -> None:
        try:
            resolution = self._resolver.resolve()
        except BrokerError as exc:
            if first:
                raise
            if isinstance(exc, StoreDamaged):
                self._fatal(exc)
                return
            self._emit(BrokerTrouble("", f"listing queues failed: {exc}", 0.0))
            return
        for given, full in resolution.missing:
            if given not in self._missing_reported:
                self._missing_reported.add(given)
                self._emit(QueueMissing(given, full))
        with self._cond:
            changed = self._schedule.set_queues(resolution.queues, self._clock())
            self._watcher.names = {q.name: q.url for q in resolution.queues}
            self._slots.wake()
        if changed or first:
            self._emit(Listening(tuple(q.name for q in resolution.queues)))

    def poll_once(self, wait_time: int = 0) -> int:
        """List queues if due, receive once from each (up to the free slots), run
        the jobs to their end, send every delete and visibility change. Returns the
        number of messages received."""
        if self._resolver.due():
            self._refresh()
        received = 0
        threads: list[threading.Thread] = []
        with self._cond:
            queues = self._schedule.refs()
        for q in queues:
            with self._cond:
                n = self._slots.reserve(MAX_BATCH)
                if not n:
                    break
                self._lanes.inflight += 1
                self._schedule.mark_inflight(q.url)
            runs = self._lanes.receive(Pick(q, n, wait_time, True), run_first=False)
            received += sum(len(r.chain) for r in runs)
            for r in runs:
                args = (r.queue, r.chain, r.received_at)
                threads.append(threading.Thread(target=self._runner.run_chain, args=args))
                threads[-1].start()
        for t in threads:
            t.join()
        self._acker.tick()
        return received

    def _activity(self) -> None:
        """A job ended or its message was deleted or let go: queues seen empty
        before may hold messages again (a job may enqueue; a FIFO group is free)."""
        with self._cond:
            self._schedule.epoch += 1
            self._slots.notify_all()

    def _emit(self, event: Event) -> None:
        """Report ``event``. Reporting never changes what happens to a job: a
        reporter that raises is logged, and the worker goes on."""
        with self._emit_lock:
            try:
                self._on_event(event)
            except Exception as exc:
                log.warning("reporting %s failed: %s", type(event).__name__, exc)

    def _summary(self) -> Summary:
        stats = self._runner.stats()
        summary = Summary(**{k: stats[k] for k in STATS}, killed=self._runner.killed.is_set())
        self._emit(summary)
        return summary

    def close(self) -> None:
        """Send what is pending (after ``poll_once`` use)."""
        self._runner.close()
        self._acker.flush()
