"""Running received messages: one job each (or, with ``--archive``, printing it),
then a delete, a retry after a backoff, a hand-over to the redrive, or (a job
interrupted by the worker's shutdown) a fresh copy sent back."""

from __future__ import annotations

import errno
import itertools
import random
import threading
import time
from collections.abc import Callable
from typing import Protocol

from ..broker.base import Message
from ..dedup import ATTRIBUTE, RunClaims
from ..errors import BrokerError
from ..job import Job, JobResult
from ..keeper import Keeper
from ..spawn import environ
from .acker import Acker
from .events import (
    BrokerTrouble,
    DuplicateSkipped,
    Event,
    JobArchived,
    JobFailed,
    JobInterrupted,
    JobNotStarted,
    JobRetry,
    JobStarted,
    JobSucceeded,
    WorkerSettings,
)
from .interrupt import (
    KILL_GIVE_BACK,
    keeps_its_place,
    killed_by_worker,
    late,
    send_back,
    stopped_by_service,
)
from .policy import Slots, retry_delay
from .queues import QueueRef

__all__ = ["JobFactory", "Runner", "RunningJob", "chains"]

# Starting a job failed for want of the worker's resources, not through the job.
_NO_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.EAGAIN, errno.ENOMEM})
# With no job running, a job that cannot start is tried this often, this far apart
# (in seconds), before the worker stops.
NOT_STARTED_TRIES, NOT_STARTED_PAUSE = 3, 1.0


class _NotStarted(Exception):
    """A job the worker could not start for want of resources (see ``_NO_RESOURCES``)."""


STATS = ("ran", "succeeded", "failed", "retried", "archived", "interrupted", "gave_up")


class RunningJob(Protocol):
    """A job as the runner drives it: a shell command (``job.Job``) or a Python
    handler's call (``handler.HandlerRun``)."""

    def start(self) -> None: ...
    def wait(self) -> JobResult: ...
    def kill(self) -> None: ...


#: Makes the job of a message, when it is not a shell command (``handler.HandlerJobs``).
JobFactory = Callable[[QueueRef, Message], RunningJob]

#: What is left to do for jobs that ended well (delete, count, report): done once
#: the next job of the same thread has started, off the path between the two.
Pending = list[Callable[[], None]]


class Runner:
    """Runs chains of messages on the caller's thread; thread-safe."""

    def __init__(
        self,
        settings: WorkerSettings,
        acker: Acker,
        slots: Slots,
        *,
        emit: Callable[[Event], None],
        on_activity: Callable[[], None],
        clock: Callable[[], float],
        rng: random.Random,
        archive_to: Callable[[str], None] | None = None,
        on_stop: Callable[[], None] = lambda: None,
        new_job: JobFactory | None = None,
        claims: RunClaims | None = None,
    ) -> None:
        self.settings = settings
        self._archive_to = archive_to  # writes a command, raising OSError when it cannot
        self._on_stop = on_stop
        self._stuck = 0  # jobs in a row that could not start with none running
        self._new_job = new_job
        self._claims = claims
        self._acker = acker
        self._slots = slots
        self._emit = emit
        self._on_activity = on_activity
        self._clock = clock
        self._rng = rng
        self._lock = threading.Lock()
        self._jobs: set[RunningJob] = set()
        self.killed = threading.Event()
        self._give_back_until = 0.0  # killed: when copies stop being waited for
        self.stopping = threading.Event()  # set by the worker's first signal
        self.retry_due = 0.0  # when the last retry this worker scheduled comes due
        self._stats = dict.fromkeys(STATS, 0)
        self._base_env = environ()  # read once: encoding it costs as much as a receive
        self._keeper = Keeper()  # jobs die with the worker

    def close(self) -> None:
        """No job runs any more: let the keeper go."""
        self._keeper.close()

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._stats)

    def kill(self) -> None:
        """SIGKILL every running job's process group; their messages go back (see
        ``worker/interrupt.py``) within ``KILL_GIVE_BACK`` s from now at most."""
        with self._lock:
            if not self.killed.is_set():
                self._give_back_until = time.monotonic() + KILL_GIVE_BACK
            self.killed.set()
            jobs = list(self._jobs)
        for job in jobs:
            job.kill()

    def run_chain(self, q: QueueRef, chain: list[Message], received_at: float) -> None:
        """Run messages in order on this thread; the chain holds one slot, given back
        at its end. A FIFO message that will be retried holds its group back, so the
        rest of the group is let go."""
        pending: Pending = []
        done = 0
        try:
            for m in chain:
                retried = self._run_message(q, m, received_at, pending)
                done += 1
                if retried or self.killed.is_set():
                    break
                if done < len(chain):
                    self._on_activity()  # a job ended (the last one's end is told below)
        finally:
            for m in chain[done:]:  # not run: made visible, or given back if killed
                if self.killed.is_set():
                    self._hand_back(q, m, self._give_back_until)
                else:
                    self._acker.change(m, 0)
            _flush(pending)
            self._slots.release(1)
            self._on_activity()

    def _run_message(self, q: QueueRef, m: Message, received_at: float, pending: Pending) -> bool:
        """Run (or archive) one message; True when it holds its FIFO group back
        (retried, or failed on a queue without redrive). A job that
        ends well leaves its delete and report in ``pending``."""
        if self.settings.archive:
            return not self._archive(q, m)
        if self._claims is not None and not self._claims.claim(m, self._claim_ttl()):
            self._emit(DuplicateSkipped(q.name, m.message_id, m.body, m.attributes[ATTRIBUTE]))
            self._acker.delete(m)
            return False
        try:
            result = self._execute(q, m, pending)
        except _NotStarted as exc:
            self._not_started(q, m, str(exc.__cause__))
            return False
        if result.ok:
            pending.append(lambda: self._succeeded(q, m, result))
            return False
        self._count("ran")
        if stopped_by_service(result, self.stopping):
            self._give_back(q, m, result)
            return False
        if killed_by_worker(result):
            self._give_back(q, m, result, self._give_back_until)
            return False
        return self._failed(q, m, result, received_at)

    def _archive(self, q: QueueRef, m: Message) -> bool:
        """Write the command out, then delete its message: only a command written
        (and flushed) is deleted. A write that fails lets the message go and stops
        the worker; False then."""
        if self._archive_to is not None:
            try:
                self._archive_to(m.body)
            except OSError:
                self._acker.change(m, 0)
                self._on_stop()
                return False
        self._emit(JobArchived(q.name, m.message_id, m.body))
        self._acker.delete(m)
        self._count("archived")
        return True

    def _claim_ttl(self) -> int:
        """How long a run claim holds: past the job's kill and its report."""
        return self.settings.cover() + 60

    def _succeeded(self, q: QueueRef, m: Message, result: JobResult) -> None:
        if self._claims is not None:
            self._claims.finish(m, succeeded=True)
        self._acker.delete(m, urgent=q.fifo)
        with self._lock:
            self._stats["ran"] += 1
            self._stats["succeeded"] += 1
        self._emit(JobSucceeded(q.name, m.message_id, m.body, m.receive_count, result))

    def _execute(self, q: QueueRef, m: Message, pending: Pending) -> JobResult:
        """Run the job of ``m``. What ``pending`` holds, and the report that this job
        started, are done once it has started (or could not start)."""
        self._acker.cover(m, self.settings.cover())
        started = JobStarted(q.name, m.message_id, m.body, m.receive_count)
        job = self._shell_job(q, m) if self._new_job is None else self._new_job(q, m)
        start = time.monotonic()
        try:
            job.start()
        except OSError as exc:
            _flush(pending)
            if exc.errno in _NO_RESOURCES:
                raise _NotStarted from exc
            self._emit(started)
            return JobResult(None, None, "", "", time.monotonic() - start, error=str(exc))
        self._stuck = 0
        if isinstance(job, Job):  # a handler has no process to keep
            self._keeper.add(job)
        with self._lock:
            self._jobs.add(job)
        if self.killed.is_set():
            job.kill()
        try:
            _flush(pending)
            self._emit(started)
        finally:
            try:
                result = job.wait()
            finally:
                with self._lock:
                    self._jobs.discard(job)
                if isinstance(job, Job):
                    self._keeper.remove(job)
        return result

    def _give_back(
        self, q: QueueRef, m: Message, result: JobResult, deadline: float | None = None
    ) -> None:
        """The job of ``m`` was ended by the service's stop or killed by the worker's
        second signal: its message goes back for another worker, without using an
        attempt where it can (see ``worker/interrupt.py``)."""
        copy = self._send_back(q, m, deadline)
        self._count("interrupted")
        self._emit(
            JobInterrupted(
                q.name, m.message_id, m.body, m.receive_count, result, copy, result.killed
            )
        )

    def _send_back(self, q: QueueRef, m: Message, deadline: float | None = None) -> str | None:
        """Give back ``m``, whose job ran or was to run: see ``_hand_back``."""
        if self._claims is not None:
            self._claims.finish(m, succeeded=False)  # the copy, or its next receive, runs
        return self._hand_back(q, m, deadline)

    def _hand_back(self, q: QueueRef, m: Message, deadline: float | None) -> str | None:
        """Give ``m`` back without using an attempt where it can: a fresh copy, then
        the delete of ``m`` (see ``worker/interrupt.py``). If the copy cannot be
        sent, ``m`` is made visible again; if it is not sent by ``deadline``
        (``time.monotonic``), ``m`` is left in flight. The copy's message id, or None."""
        copy: str | None = None
        if not keeps_its_place(q, m):
            try:
                copy = send_back(self._acker.broker, q, m, deadline)
            except BrokerError as exc:
                self._emit(BrokerTrouble(q.name, f"sending back job {m.message_id}: {exc}", 0.0))
            except TimeoutError:
                self._acker.release(m)  # no longer extended: back after its timeout
                self._emit(BrokerTrouble(q.name, late(m.message_id), 0.0))
                return None
        if copy is None:
            self._acker.change(m, 0)
        else:
            self._acker.delete(m, urgent=True)
        return copy

    def _not_started(self, q: QueueRef, m: Message, error: str) -> None:
        """The worker could not start the job of ``m``: not the job's fault. The
        message goes back, and the worker runs no more jobs at once than run now
        (reported once per lowering); with none running, no job can start: it stops."""
        copy = self._send_back(q, m)
        running = self._slots.running() - 1  # this message's slot is still held
        before = self._slots.total
        if running >= 1:
            if self._slots.lower(running) < before:
                self._emit(JobNotStarted(q.name, m.message_id, error, copy, self._slots.total))
            return
        # Nothing runs that could make room: wait a little (holding the slot), and
        # after a few such tries stop, since no job can start.
        self._stuck += 1
        if self._stuck >= NOT_STARTED_TRIES:
            self._on_stop()
            self._emit(JobNotStarted(q.name, m.message_id, error, copy, 0))
            return
        if self._slots.lower(1) < before:
            self._emit(JobNotStarted(q.name, m.message_id, error, copy, 1))
        self.killed.wait(NOT_STARTED_PAUSE)

    def _shell_job(self, q: QueueRef, m: Message) -> Job:
        env = {
            "QDONE_QUEUE": q.name,
            "QDONE_JOB_ID": m.message_id,
            "QDONE_RECEIVE_COUNT": str(m.receive_count),
        }
        return Job(
            m.body,
            env=env,
            kill_after=self.settings.kill_after,
            grace=self.settings.grace,
            base_env=self._base_env,
        )

    def _failed(self, q: QueueRef, m: Message, result: JobResult, received_at: float) -> bool:
        self._count("failed")
        if self._claims is not None:
            self._claims.finish(m, succeeded=False)
        attempts = q.max_receives
        if attempts is None:
            # No redrive policy (a failed queue): one attempt per visibility timeout,
            # as with Node qdone; the worker never retries it, and a drain ends. On
            # a FIFO queue it still holds its group back, so the rest is let go.
            self._emit(
                JobFailed(
                    q.name, m.message_id, m.body, m.receive_count, None, True, result, q.visibility
                )
            )
            self._acker.change(m, q.visibility)
            return q.fifo
        retry = m.receive_count < attempts
        self._emit(
            JobFailed(q.name, m.message_id, m.body, m.receive_count, attempts, not retry, result)
        )
        if not retry:
            self._count("gave_up")
            # Visible at once: the redrive moves it on its next receive (the SQLite
            # store moves it at once), no waiting.
            self._acker.change(m, 0)
            return False
        now = self._clock()
        delay = retry_delay(
            self.settings.retry_delay,
            m.receive_count,
            rng=self._rng,
            held_for=now - received_at,
            age=max(0.0, now - m.sent_at),
            retention=q.retention,
        )
        self._acker.change(m, delay)
        with self._lock:
            self._stats["retried"] += 1
            self.retry_due = max(self.retry_due, now + delay)
        self._emit(JobRetry(q.name, m.message_id, m.body, m.receive_count, delay))
        return True

    def _count(self, key: str) -> None:
        with self._lock:
            self._stats[key] += 1


def chains(q: QueueRef, messages: list[Message]) -> list[list[Message]]:
    """One chain per message; on a FIFO queue, one per group, in the order received."""
    if not q.fifo:
        return [[m] for m in messages]
    ordered = sorted(enumerate(messages), key=lambda im: (im[1].group_id or "", im[0]))
    return [
        [m for _, m in group]
        for _, group in itertools.groupby(ordered, key=lambda im: im[1].group_id or "")
    ]


def _flush(pending: Pending) -> None:
    """Do what ``pending`` holds, in order, and empty it."""
    while pending:
        pending.pop(0)()
