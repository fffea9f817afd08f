"""The listen/run loop of ``qdone worker``.

One poller thread per queue long-polls it, after reserving job slots, so a
receive asks for at most ``min(10, free slots)`` messages and no queue waits for
another's long poll. Received messages run on a pool of ``concurrency`` threads
(FIFO: the messages of one group in order, one at a time). Deletes and
visibility changes go through the ``Acker``, batched across jobs.

A failed job with attempts left (``receive count < maxReceiveCount``) is made
visible again after an exponential backoff; on its last attempt it is made
visible at once, so the redrive moves it to the failed queue without waiting.

Draining (``--drain``), the worker stops once no job runs and every queue has,
since the last job ended, answered a receive with nothing and shown no delayed
message in its approximate counts. A receive that is in flight must be waited
for (its messages are run, never dropped), so while draining no receive waits
longer than ``SQS_DRAIN_WAIT`` (1 s: still a long poll, which asks every SQS
server) and the worker ends about a second after its last job. An empty queue is
polled again only after a job ended (a job may enqueue), no more often than once
per wait time while jobs run: the cost of one long poll.

``stop()`` (first signal): no new receive; a receive in flight is waited for and
its messages are run; running jobs finish; deletes are flushed. ``kill()``
(second signal): every job's process group is killed and ``run()`` returns.
The core never prints: it calls ``on_event`` with the dataclasses of
``worker_events``. Time (``clock``) and randomness (``rng``) are injected.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_all
from typing import TYPE_CHECKING

from ..broker.base import MAX_BATCH, Broker, Message
from ..config import Options
from ..errors import BrokerError, QueueNotFound
from ..job import nice_this_thread
from .acker import Acker
from .events import (
    BrokerTrouble,
    Event,
    Listening,
    QueueMissing,
    Summary,
    Waiting,
    WorkerSettings,
)
from .handler import Handler, HandlerJobs
from .policy import Slots, poll_wait
from .queues import QueueRef, QueueResolver
from .runner import Runner, chains

if TYPE_CHECKING:
    from ..dedup import RunClaims

__all__ = ["Worker"]

log = logging.getLogger(__name__)
SQS_LINGER = 0.2  # s to wait for more free slots, so receives and deletes fill batches
SQLITE_LINGER = 0.0  # receives are cheap there; waiting for a second slot costs more
# Draining: the longest receive wait. On SQS 1 s is still a long poll (it asks every
# server, unlike a short poll); a SQLite receive is exact without waiting.
SQS_DRAIN_WAIT, SQLITE_DRAIN_WAIT = 1, 0


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
    ) -> None:
        """``archive_to``: with ``--archive``, writes a command out (flushed), raising
        OSError when it cannot; the message is deleted only after it returned.
        ``handler``: run each message by calling it (see ``worker.handler``)
        instead of ``/bin/sh -c``."""
        self.broker = broker
        self.settings = settings
        self._on_event = on_event
        self._clock = clock
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
        )
        self._slots = Slots(settings.concurrency)
        self._runner = Runner(
            settings,
            self._acker,
            self._slots,
            emit=self._emit,
            on_activity=self._activity,
            clock=clock,
            rng=rng or random.Random(),
            archive_to=archive_to,
            on_stop=self.stop,
            new_job=None if handler is None else HandlerJobs(handler, settings, self._emit),
            claims=claims,
        )
        # Job threads run at the jobs' niceness (Linux): the jobs inherit it. A
        # handler runs in the worker's own process, at its priority.
        self._pool = ThreadPoolExecutor(
            settings.concurrency,
            thread_name_prefix="qdone-job",
            initializer=nice_this_thread if handler is None else None,
        )
        self._lock = threading.Lock()
        self._emit_lock = threading.Lock()
        self._changed = threading.Event()
        self._stopping = self._runner.stopping  # the runner's jobs see the stop
        self._queues: dict[str, QueueRef] = {}
        self._pollers: dict[str, threading.Thread] = {}
        self._missing_reported: set[str] = set()
        self._inflight = 0
        self._futures: list[Future[None]] | None = None  # collected by poll_once
        self._epoch = 0  # bumped when a job ends: queues must be seen empty after it
        self._empty_epoch: dict[str, int] = {}
        self._checked_at: dict[str, float] = {}  # draining: last receive of an empty queue
        self._delayed: set[str] = set()  # draining: queues holding delayed messages
        self._busy: dict[str, bool] = {}  # the last receive got all it asked for
        sqs = broker.service == "SQS"
        linger = settings.receive_linger
        self._linger = linger if linger is not None else (SQS_LINGER if sqs else SQLITE_LINGER)
        self._drain_wait = SQS_DRAIN_WAIT if sqs else SQLITE_DRAIN_WAIT

    # -- control -----------------------------------------------------------------

    def stop(self) -> None:
        """Take no new work; let running jobs finish (first SIGTERM/SIGINT)."""
        self._stopping.set()
        self._slots.wake()
        self._changed.set()

    def kill(self) -> None:
        """Kill every running job's process group now (second signal)."""
        self._runner.kill()
        self.stop()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    # -- the threaded loop -------------------------------------------------------

    def run(self) -> Summary:
        """Listen until stopped (or drained); the summary of what ran."""
        self._refresh(first=True)
        self._acker.start()
        try:
            self._main_loop()
        finally:
            self.stop()
            # Killed jobs end at once: wait for their reports, so the summary counts them.
            self._pool.shutdown(wait=True)
            self._runner.close()
            self._acker.stop()
        return self._summary()

    def _main_loop(self) -> None:
        waiting: Waiting | None = None
        while not self._runner.killed.is_set():
            if self._stopping.is_set():
                now = self._waiting()
                if now.jobs == 0 and now.receives == 0:
                    return
                if now != waiting:
                    self._emit(now)
                waiting = now
            elif self.settings.drain and self._drained():
                self.stop()
                continue
            elif self._resolver.due():
                self._refresh()
            self._changed.wait(0.5)
            self._changed.clear()

    def _waiting(self) -> Waiting:
        with self._lock:
            return Waiting(jobs=self._slots.running(), receives=self._inflight)

    def _drained(self) -> bool:
        """No job runs and every queue was seen empty since the last one ended (a
        receive still in flight is waited for by the shutdown, and its messages run)."""
        with self._lock:
            if self._slots.running():
                return False
            due = self._runner.retry_due
            if due:
                if self._clock() < due:
                    return False
                self._runner.retry_due, self._epoch = 0.0, self._epoch + 1
            if not all(self._empty_epoch.get(url) == self._epoch for url in self._queues):
                return False
        if self._acker.pending():
            self._acker.flush_soon()  # nothing runs: no batch to wait for
            return False
        return True

    def _refresh(self, first: bool = False, threaded: bool = True) -> None:
        try:
            resolution = self._resolver.resolve()
        except BrokerError as exc:
            if first:
                raise
            self._emit(BrokerTrouble("", f"listing queues failed: {exc}", 0.0))
            return
        for given, full in resolution.missing:
            if given not in self._missing_reported:
                self._missing_reported.add(given)
                self._emit(QueueMissing(given, full))
        new = {q.url: q for q in resolution.queues}
        with self._lock:
            changed = new.keys() != self._queues.keys()
            self._queues = new
        if changed or first:
            self._emit(Listening(tuple(q.name for q in new.values())))
        if threaded:
            for q in new.values():
                self._start_poller(q)

    def _start_poller(self, q: QueueRef) -> None:
        current = self._pollers.get(q.url)
        if current is not None and current.is_alive():
            return
        thread = threading.Thread(
            target=self._poll_loop, args=(q,), name=f"qdone-poll-{q.name}", daemon=True
        )
        self._pollers[q.url] = thread
        thread.start()

    def _poll_loop(self, q: QueueRef) -> None:
        busy = min(MAX_BATCH, self.settings.concurrency)
        fair = max(1, busy // max(1, len(self._queues)))
        want = fair
        pause = 1.0
        while not self._stopping.is_set() and q.url in self._queues:
            if self.settings.active_only and not self._active(q):
                self._stopping.wait(max(1, self.settings.wait_time))
                continue
            if self._hold_off(q):
                self._changed.wait(0.1)
                continue
            n = self._slots.reserve(want, self._linger, self._stopping.is_set, queue=q.url)
            if n == 0:
                continue
            try:
                got = self._receive(q, n, self._receive_wait(q, n, fair))
            except QueueNotFound:
                with self._lock:
                    self._queues.pop(q.url, None)
                return
            except BrokerError as exc:
                self._emit(BrokerTrouble(q.name, str(exc), pause))
                self._stopping.wait(pause)
                pause = min(pause * 2, 30.0)
                continue
            pause = 1.0
            # A full receive: a busy queue. Otherwise ask for about what was there, so an
            # empty queue's long poll holds one slot, not the slots other queues need.
            want = busy if got == n else max(1, got)

    def _receive_wait(self, q: QueueRef, n: int, fair: int) -> int:
        # More than a fair share of slots is held for a short wait only: if the
        # queue has just run dry, other queues get them back within a second.
        wait = self._wait_time() if n <= fair else min(1, self._wait_time())
        if not self.settings.drain:
            return wait
        if q.url in self._delayed:  # a long poll returns as the message shows
            return max(1, self._wait_time())
        # Draining, no receive outlives the last job by more than this wait.
        return min(wait, self._drain_wait)

    def _hold_off(self, q: QueueRef) -> bool:
        """Draining, and ``q`` came back empty: poll it again only once something
        happened that may refill it (a job ended, a message was let go); while jobs
        still run, no more often than once per wait time (a long poll's cost)."""
        if not self.settings.drain:
            return False
        with self._lock:
            seen = self._empty_epoch.get(q.url)
            if seen is None:
                return False
            if seen == self._epoch:
                return True
            last = self._checked_at.get(q.url, 0.0)
        if not self._slots.running():
            return False
        return self._clock() - last < self.settings.wait_time

    def _saw_empty(self, q: QueueRef, epoch: int) -> None:
        """A receive started at ``epoch`` found ``q`` empty. Draining with no job left
        to end, the queue counts as empty only without delayed messages too."""
        if self.settings.drain and not self._slots.running():
            try:
                attributes = self.broker.get_queue_attributes(
                    q.url, ["ApproximateNumberOfMessagesDelayed"]
                )
            except BrokerError as exc:
                self._emit(BrokerTrouble(q.name, str(exc), 0.0))
                return
            if int(attributes.get("ApproximateNumberOfMessagesDelayed", "0")) > 0:
                with self._lock:
                    self._delayed.add(q.url)
                return
        with self._lock:
            self._delayed.discard(q.url)
            self._empty_epoch[q.url] = epoch
            self._checked_at[q.url] = self._clock()
        self._changed.set()

    def _wait_time(self) -> int:
        return poll_wait(self.settings.wait_time, len(self._queues), self.settings.concurrency)

    def _active(self, q: QueueRef) -> bool:
        with self._lock:
            epoch = self._epoch
        try:
            attributes = self.broker.get_queue_attributes(q.url, ["ApproximateNumberOfMessages"])
        except BrokerError as exc:
            self._emit(BrokerTrouble(q.name, str(exc), self.settings.wait_time))
            return False
        if int(attributes.get("ApproximateNumberOfMessages", "0")) > 0:
            return True
        with self._lock:
            self._empty_epoch[q.url] = epoch
        self._changed.set()
        return False

    # -- receiving ---------------------------------------------------------------

    def poll_once(self, wait_time: int = 0) -> int:
        """One synchronous round, for tests: list queues if due, receive once from
        each (up to the free slots), run the jobs to their end, send every delete
        and visibility change. Returns the number of messages received."""
        if self._resolver.due():
            self._refresh(threaded=False)
        self._futures = []
        received = 0
        for q in list(self._queues.values()):
            n = self._slots.reserve(MAX_BATCH, 0.0, lambda: False, timeout=0)
            if n:
                received += self._receive(q, n, wait_time)
        futures, self._futures = self._futures, None
        wait_all(futures)
        for f in futures:
            f.result()
        self._acker.tick()
        return received

    def _visibility(self) -> int:
        return min(self.settings.initial_visibility, self.settings.cover())

    def _receive(self, q: QueueRef, n: int, wait_time: int) -> int:
        """Receive up to ``n`` messages (``n`` slots are reserved) and start them."""
        messages, received_at = self._fetch(q, n, wait_time)
        follow = self._follow if self._futures is None else None  # poll_once: one round
        for chain in chains(q, messages):
            future = self._pool.submit(self._runner.run_chain, q, chain, received_at, follow)
            if self._futures is not None:
                self._futures.append(future)
        return len(messages)

    def _fetch(self, q: QueueRef, n: int, wait_time: int) -> tuple[list[Message], float]:
        """Receive up to ``n`` messages into ``n`` reserved slots; they are held."""
        with self._lock:
            self._inflight += 1
            epoch = self._epoch
        received_at = self._clock()
        messages: list[Message] | None = None
        try:
            messages = self.broker.receive(q.url, n, self._visibility(), wait_time)
        finally:
            self._slots.settle(n, len(messages or ()))
            with self._lock:
                self._inflight -= 1
                if messages is not None:
                    self._busy[q.url] = len(messages) == n
            self._nudge()
        if not messages:
            self._saw_empty(q, epoch)
        for m in messages:
            self._acker.hold(m, received_at, self._visibility())
        return messages, received_at

    def _follow(self, q: QueueRef) -> tuple[list[Message], float]:
        """A job of ``q`` ended and its thread still holds the slot: receive the next
        message for that slot here and now, sparing the hand-over to the poller and
        back (the cost of a short job). Only where receives do not wait to fill
        batches (SQLite), on a standard queue that was busy, when no other queue
        waits for a slot. Otherwise, and on any trouble, the slot is given back."""
        if (
            self._linger > 0
            or q.fifo
            or self._stopping.is_set()
            or not self._busy.get(q.url)
            or q.url not in self._queues
            or self._slots.others_waiting(q.url)
        ):
            self._slots.release(1)
            return [], 0.0
        self._slots.repoll()
        try:
            return self._fetch(q, 1, 0)
        except BrokerError:  # the poller meets it too, and reports it
            return [], 0.0

    def _activity(self) -> None:
        """A job ended or its message was deleted or let go: queues seen empty
        before may hold messages again (a job may enqueue; a FIFO group is free)."""
        with self._lock:
            self._epoch += 1
        self._nudge()

    def _nudge(self) -> None:
        """Wake the main loop when it may have something to do: stopping, or draining
        with no job running (it would otherwise wake for every job, to no end)."""
        if self._stopping.is_set() or (self.settings.drain and not self._slots.running()):
            self._changed.set()

    # -- bookkeeping -------------------------------------------------------------

    def _emit(self, event: Event) -> None:
        """Report ``event``. Reporting never changes what happens to a job: a
        reporter that raises is logged, and the worker goes on."""
        with self._emit_lock:
            try:
                self._on_event(event)
            except Exception as exc:
                log.warning("reporting %s failed: %s", type(event).__name__, exc)

    def _summary(self) -> Summary:
        s = self._runner.stats()
        summary = Summary(
            ran=s["ran"],
            succeeded=s["succeeded"],
            failed=s["failed"],
            retried=s["retried"],
            archived=s["archived"],
            interrupted=s["interrupted"],
            killed=self._runner.killed.is_set(),
        )
        self._emit(summary)
        return summary

    def close(self) -> None:
        """End the pool and send what is pending (after ``poll_once`` use)."""
        self._pool.shutdown(wait=True)
        self._runner.close()
        self._acker.flush()
