"""Which queue a worker polls next, and how: the polling policy, without threads.

A queue is *known* to hold work when its counts showed messages, a wake-up
named it, or its last receive returned some; *hot* (busy) for a check period
(at least ``--wait-time``) after a receive returned messages. Receives need job
slots (a receive is an attempt on qdone's layout), so they go, in turn, to known
queues first, then hot ones, then (when every queue can long-poll at once:
``n <= concurrency`` and not ``--active-only``) to the idle ones, which are
otherwise checked once per check period. A queue's turn comes after every other
waiting queue of its class: never back to the queue that just polled.

A receive waits the full ``wait_time`` only if, after it, every queue without a
receive in flight could still get a slot; otherwise at most ``short_wait`` (1 s,
still a long poll on SQS), so no slot is held for long by an empty queue.

Idle queues that are not long-polled are *checked*: their approximate counts,
which consume nothing and need no slot, once per ``check_period``. Each queue's
checks fall at fixed phases of wall-clock time (from a hash of its url), so that
workers sharing a cache of counts check a queue at about the same moment and
the first one's answer serves the others; ``jitter`` orders the workers.

A queue new to the worker (at start, or found by a re-listing of wildcards) is
not left to its phase, which may be a period away: the ``Sweep`` checks each
once as soon as its rate allows (``sweep``), so work already waiting is found
within seconds. After a check, the next comes at the queue's phase but never
sooner than a period less ``REPHASE``: a queue swept off its phase is seen again
within a period, its checks coming ``REPHASE`` seconds nearer its phase each
period until they are on it (the sweep costs one check a queue in all, spread
over those periods); one checked at its phase stays on it.

Draining, a queue counts as empty once, after the last job ended (``epoch``), a
receive found it empty or its counts showed nothing visible; a queue whose
counts show delayed messages is checked again every second until they show.
"""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

from ..broker.base import MAX_BATCH
from .events import WorkerSettings
from .queues import QueueRef
from .sweep import SWEEP_RATE, Sweep

__all__ = ["Pick", "Schedule", "check_period"]

KNOWN, HOT, IDLE = 0, 1, 2  # classes of receivable queues, served in this order
SHORT_WAIT = 1  # s: a receive that could keep another queue from a slot waits no longer
SQS_DRAIN_WAIT, SQLITE_DRAIN_WAIT = 1, 0  # draining: the longest receive wait
JITTER = 2.0  # s: the most a worker's checks come after a queue's phase
CHECK_SLACK = 2  # s: a check, a receive and a job's start, within --idle-check-seconds
MAX_PAUSE = 30.0  # s: the longest backoff after failed receives
REPHASE = 2.0  # s: how much earlier each period an off-phase queue's checks come


def check_period(*, queues: int, wait_time: int, idle_check: int, active_only: bool) -> float:
    """Seconds between two checks of an idle queue: ``--wait-time`` with
    ``--active-only``; otherwise about one check a second across all queues, but
    never more often than once per ``--wait-time`` (so a queue never costs more
    than a long-polled one) nor less than once per ``--idle-check`` less the
    ``CHECK_SLACK`` a found job needs to start."""
    if active_only:
        return float(max(1, wait_time))
    return float(max(1, wait_time, min(idle_check - CHECK_SLACK, queues)))


@dataclass(frozen=True)
class Pick:
    """A receive to make: ``n`` slots are reserved for it."""

    queue: QueueRef
    n: int
    wait: int
    known: bool


@dataclass
class _State:
    ref: QueueRef
    phase: float
    inflight: bool = False
    checking: bool = False
    known: bool = False
    expect: int = MAX_BATCH  # messages a receive may find: the last count or receive
    hot_until: float = 0.0
    next_check: float = 0.0
    turn: int = 0
    empty_epoch: int = -1  # draining: the epoch at which it was last seen empty
    empty_at: float = 0.0
    paused_until: float = 0.0  # a receive failed: not polled again before
    pause: float = 0.0  # the last backoff
    failing: bool = False  # the last receive failed
    delayed: bool = False  # draining: its counts showed delayed messages


class Schedule:
    """The polling state of every queue; not thread-safe (the worker locks it)."""

    def __init__(
        self,
        *,
        concurrency: int,
        wait_time: int,
        idle_check: int,
        active_only: bool,
        drain: bool,
        short_wait: int,
        drain_wait: int,
        jitter: float = 0.0,
        sweep_rate: float = SWEEP_RATE,
    ) -> None:
        self.concurrency = concurrency
        self.wait_time = wait_time
        self.idle_check = idle_check
        self.active_only = active_only
        self.drain = drain
        self.short_wait = short_wait
        self.drain_wait = drain_wait
        self.jitter = jitter
        self.epoch = 0
        self._queues: dict[str, _State] = {}
        self._turns = 0
        self._sweep = Sweep(sweep_rate)

    @classmethod
    def for_worker(cls, settings: WorkerSettings, *, sqs: bool, rng: random.Random) -> Schedule:
        return cls(
            concurrency=settings.concurrency,
            wait_time=settings.wait_time,
            idle_check=settings.idle_check,
            active_only=settings.active_only,
            drain=settings.drain,
            short_wait=SHORT_WAIT,
            drain_wait=SQS_DRAIN_WAIT if sqs else SQLITE_DRAIN_WAIT,
            jitter=rng.uniform(0.0, JITTER),
        )

    # -- the queues ------------------------------------------------------------------

    def set_queues(self, refs: Iterable[QueueRef], now: float) -> bool:
        """Poll these queues from now on; whether they changed."""
        old, self._queues = self._queues, {}
        for ref in refs:
            state = old.get(ref.url) or _State(ref, _phase(ref.url))
            state.ref = ref
            self._queues[ref.url] = state
        new: dict[str, float] = {}
        for url, state in self._queues.items():
            if state.next_check == 0.0:
                state.next_check = new[url] = self._next_slot(state, now)
        if not self.drain and not self.longpoll_all():
            self._sweep.add(new)  # each checked once soon, not at its phase only
        return old.keys() != self._queues.keys()

    def refs(self) -> list[QueueRef]:
        return [s.ref for s in self._queues.values()]

    def __len__(self) -> int:
        return len(self._queues)

    def longpoll_all(self) -> bool:
        """Every queue may be long-polled at once: idle queues are not checked."""
        return not self.active_only and len(self._queues) <= self.concurrency

    def checks_possible(self) -> bool:
        """Whether a check can come due at all: not while every queue is long-polled
        and none showed delayed messages (see ``_check_due``; no sweep then)."""
        return not self.longpoll_all() or any(s.delayed for s in self._queues.values())

    def period(self) -> float:
        return check_period(
            queues=len(self._queues),
            wait_time=self.wait_time,
            idle_check=self.idle_check,
            active_only=self.active_only,
        )

    # -- receives --------------------------------------------------------------------

    def pick(self, free: int, now: float, running: int, fill: int = 0) -> Pick | None:
        """The next receive to make with ``free`` slots, or None; it is in flight.
        ``fill``: if the next queue is known to hold work, wait for as many free slots
        (None) so the receive fills a batch."""
        if free <= 0:
            return None
        best: tuple[int, int, _State] | None = None
        waiting = 0
        for state in self._queues.values():
            if state.inflight:
                continue
            waiting += 1
            cls = self._class(state, now, running)
            if cls is not None and (best is None or (cls, state.turn) < best[:2]):
                best = (cls, state.turn, state)
        if best is None:
            return None
        cls, _, state = best
        if cls == KNOWN and free < fill:
            return None
        n = min(MAX_BATCH, free, state.expect) if cls == KNOWN else 1
        wait = self.wait_time if free - n >= waiting - 1 else min(self.short_wait, self.wait_time)
        if self.drain:
            wait = min(wait, self.drain_wait)
        self._turns += 1
        state.turn = self._turns
        state.inflight = True
        return Pick(state.ref, n, wait, cls == KNOWN)

    def _class(self, state: _State, now: float, running: int) -> int | None:
        if now < state.paused_until:
            return None
        if state.known:
            return KNOWN
        if now < state.hot_until:
            return HOT
        if not self.longpoll_all():
            return None  # idle queues are checked (``_check_due``)
        if self.drain and not self._needs_confirming(state, now, running):
            return None
        return IDLE

    def received(
        self, url: str, asked: int, got: int, now: float, epoch: int, empty: bool = True
    ) -> None:
        """A receive of ``url`` begun at ``epoch`` asked ``asked`` and returned ``got``
        messages; if none,
        draining, the queue was seen empty unless ``empty`` is False (its counts will
        say)."""
        state = self._queues.get(url)
        if state is None:
            return
        state.inflight = False
        state.known = got > 0
        self._sweep.drop(url)
        # All it asked for: there may be more. Fewer: about that many are left to come.
        state.expect = MAX_BATCH if got >= asked else max(1, got)
        state.failing = False
        if got:
            state.hot_until = now + self._hot_window()
        elif self.drain:
            if empty:
                self._seen_empty(state, epoch, now)
        else:
            state.next_check = self._after_check(state, now)

    def failed(self, url: str, now: float) -> float:
        """A receive of ``url`` failed: no receive nor check of it for a backoff,
        doubled at each failure in a row; returns it."""
        state = self._queues.get(url)
        if state is None:
            return 0.0
        state.pause = min(max(1.0, state.pause * 2), MAX_PAUSE) if state.failing else 1.0
        state.failing = True
        state.inflight = False
        state.paused_until = now + state.pause
        state.known = False
        state.next_check = max(state.next_check, state.paused_until)
        return state.pause

    def mark_inflight(self, url: str) -> None:
        """A receive of ``url`` was begun outside ``pick`` (a synchronous round)."""
        state = self._queues.get(url)
        if state is not None:
            state.inflight = True

    # -- checks ----------------------------------------------------------------------

    def due_checks(self, now: float, running: int, limit: int) -> list[QueueRef]:
        """Queues whose counts are to be read now (taken: ``checked`` gives them back)."""
        due: list[QueueRef] = []
        for state in self._queues.values():
            if len(due) >= limit:
                break
            if _free(state) and self._check_due(state, now, running):
                state.checking = True
                due.append(state.ref)
        while len(due) < limit and self._sweeping():
            url = self._sweep.take(now, lambda u: self._sweepable(u, now))
            if url is None:
                break
            self._queues[url].checking = True
            due.append(self._queues[url].ref)
        return due

    def _sweepable(self, url: str, now: float) -> bool:
        state = self._queues.get(url)
        return state is not None and _free(state) and now >= state.paused_until

    def _sweeping(self) -> bool:
        return len(self._sweep) > 0 and not self.drain and not self.longpoll_all()

    def _check_due(self, state: _State, now: float, running: int) -> bool:
        if self.drain and (state.delayed or not self.longpoll_all()):
            if state.delayed:
                return now >= state.next_check
            return self._needs_confirming(state, now, running)
        return not self.longpoll_all() and now >= state.next_check

    def checked(self, url: str, visible: int, delayed: int, now: float, epoch: int) -> None:
        """Counts of ``url`` read (begun at ``epoch``); -1: the check failed."""
        state = self._queues.get(url)
        if state is None:
            return
        state.checking = False
        self._sweep.drop(url)
        # A failed check saw nothing: the next comes at the queue's phase.
        seen = visible >= 0
        state.next_check = self._after_check(state, now) if seen else self._next_slot(state, now)
        if visible > 0:
            state.known = True
            state.expect = min(MAX_BATCH, visible)
        state.delayed = self.drain and delayed > 0
        if state.delayed:
            state.next_check = now + 1.0
        elif self.drain and visible == 0 and delayed == 0:
            self._seen_empty(state, epoch, now)

    def wake(self, url: str) -> bool:
        """A wake-up: ``url`` just got work. False if not one of the queues."""
        state = self._queues.get(url)
        if state is None:
            return False
        state.known = True
        state.expect = MAX_BATCH
        return True

    def next_check_at(self) -> float:
        """When the next check comes due (``math.inf``: none)."""
        times = [
            s.next_check for s in self._queues.values() if not (s.checking or s.inflight or s.known)
        ]
        sweep = self._sweep.next_at() if self._sweeping() else math.inf
        return min(min(times, default=math.inf), sweep)

    def _hot_window(self) -> float:
        """How long a queue counts as busy after a receive returned messages."""
        if self.active_only or self.drain:
            return 0.0
        return max(float(self.wait_time), self.period())

    def _after_check(self, state: _State, now: float) -> float:
        """When to check a queue seen empty (or busy: it is polled) at ``now`` next:
        at its next slot, but not before a period less ``REPHASE`` (see the module
        docstring: a queue swept off its phase drifts back to it)."""
        return max(self._next_slot(state, now), now + self.period() - REPHASE)

    def _next_slot(self, state: _State, now: float) -> float:
        """The first of the queue's check times after ``now``."""
        period = self.period()
        offset = state.phase * period + min(self.jitter, period / 4)
        k = math.floor((now - offset) / period) + 1
        return k * period + offset

    # -- draining --------------------------------------------------------------------

    def _needs_confirming(self, state: _State, now: float, running: int) -> bool:
        """Draining: whether ``state`` must be seen empty again. After a job ended it
        must; while jobs still run, no more often than once per wait time."""
        if state.empty_epoch < 0:
            return True
        if state.empty_epoch == self.epoch:
            return False
        return running == 0 or now - state.empty_at >= max(1, self.wait_time)

    def _seen_empty(self, state: _State, epoch: int, now: float) -> None:
        state.empty_epoch = epoch
        state.empty_at = now

    def all_empty(self) -> bool:
        """Draining: every queue seen empty since the last job ended."""
        return all(
            s.empty_epoch == self.epoch and not s.delayed and not s.known
            for s in self._queues.values()
        )


def _free(state: _State) -> bool:
    """Nothing looks at the queue now, nor needs to: no check nor receive in flight,
    no work known (it is received from)."""
    return not (state.checking or state.inflight or state.known)


def _phase(url: str) -> float:
    """A queue's fixed phase within the check period, in [0, 1)."""
    return (zlib.crc32(url.encode()) & 0xFFFFFFFF) / 2**32
