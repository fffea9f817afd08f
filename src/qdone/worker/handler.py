"""Python handler jobs: a message is given to a function in the worker's thread,
instead of being run by ``/bin/sh -c``.

Returning is success; raising is failure, exactly as a non-zero exit: the same
retries, the same redrive into the failed queue, a ``JobFailed`` event whose
result carries the exception's text (and the traceback as its stderr).

A handler still running at ``kill_after`` is reported (``JobOverdue``), but a
thread cannot be killed: it runs to its end, and then counts as failed whatever
it returned, as a shell job killed at ``kill_after`` does. Its message is kept
hidden no longer than a shell job's would be (``WorkerSettings.cover``), so it
may be received again, or redriven, while the handler still runs.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from ..broker.base import Message
from ..job import TAIL_BYTES, JobResult
from .events import Event, JobOverdue, WorkerSettings
from .queues import QueueRef

__all__ = ["Handler", "HandlerJobs", "HandlerRun", "Job", "Watchdog"]

IDLE_EXIT = 1.0  # seconds the watchdog's thread waits with nothing to watch, then ends


@dataclass(frozen=True)
class Job:
    """The message a handler is given."""

    queue: str  #: the queue's full name (``qdone_render``), as ``QDONE_QUEUE``
    id: str  #: the message id, as ``QDONE_JOB_ID``
    body: str  #: the command string enqueued
    attempt: int  #: the receive count: 1 on the first attempt
    max_attempts: int | None  #: the queue's maxReceiveCount; None without redrive
    group_id: str | None = None  #: FIFO message group


#: A function that runs a job: returning is success, raising is failure.
Handler = Callable[[Job], object]


class Watchdog:
    """Calls a function once its deadline passes, unless cancelled first. One thread
    for every job, started when needed and ended when idle. Deadlines must come in
    order (every job has the same ``kill_after``), so the first is always next."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._due: OrderedDict[int, tuple[float, Callable[[], None]]] = OrderedDict()
        self._next = 0
        self._running = False

    def watch(self, deadline: float, callback: Callable[[], None]) -> int:
        """Call ``callback`` at ``deadline`` (on ``clock``); a token for ``cancel``."""
        with self._cond:
            token = self._next
            self._next += 1
            self._due[token] = (deadline, callback)
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, name="qdone-watchdog", daemon=True).start()
            self._cond.notify()
            return token

    def cancel(self, token: int) -> None:
        with self._cond:
            self._due.pop(token, None)

    def _run(self) -> None:
        while True:
            callback = self._next_due()
            if callback is None:
                return
            callback()

    def _next_due(self) -> Callable[[], None] | None:
        """Wait for the first deadline and take its callback; None once idle."""
        with self._cond:
            while True:
                if not self._due:
                    self._cond.wait(IDLE_EXIT)
                    if not self._due:
                        self._running = False
                        return None
                    continue
                token, (deadline, callback) = next(iter(self._due.items()))
                left = deadline - self._clock()
                if left <= 0:
                    del self._due[token]
                    return callback
                self._cond.wait(left)


class HandlerRun:
    """One call of a handler, with the interface of a shell job (``start``,
    ``wait``, ``kill``); ``wait`` calls the handler on the caller's thread."""

    def __init__(self, jobs: HandlerJobs, job: Job) -> None:
        self._jobs = jobs
        self.job = job
        self._lock = threading.Lock()
        self._done = False
        self._late = False
        self._killed = False
        self._started = 0.0

    def start(self) -> None:
        self._started = time.monotonic()

    def kill(self) -> None:
        """A thread cannot be killed: the handler runs on; only noted."""
        self._killed = True

    def wait(self) -> JobResult:
        jobs = self._jobs
        token = jobs.watchdog.watch(self._started + jobs.kill_after, self._overdue)
        exception: str | None = None
        trace = ""
        try:
            jobs.handler(self.job)
        except BaseException as exc:  # the job's failure, whatever it raised
            exception = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            trace = traceback.format_exc()[-TAIL_BYTES:]
        finally:
            jobs.watchdog.cancel(token)
            with self._lock:
                self._done = True
                late = self._late
        return JobResult(
            exit_code=0 if exception is None and not late else None,
            signal=None,
            stdout="",
            stderr=trace,
            duration=time.monotonic() - self._started,
            timed_out=late,
            killed=self._killed,
            exception=exception,
            handler=True,
        )

    def _overdue(self) -> None:
        with self._lock:
            if self._done:
                return
            self._late = True
        job = self.job
        self._jobs.emit(JobOverdue(job.queue, job.id, job.body, job.attempt, self._jobs.kill_after))


class HandlerJobs:
    """Makes a ``HandlerRun`` for each message a worker runs with a handler."""

    def __init__(
        self, handler: Handler, settings: WorkerSettings, emit: Callable[[Event], None]
    ) -> None:
        self.handler = handler
        self.kill_after = settings.kill_after
        self.emit = emit
        self.watchdog = Watchdog()

    def __call__(self, q: QueueRef, m: Message) -> HandlerRun:
        job = Job(q.name, m.message_id, m.body, m.receive_count, q.max_receives, m.group_id)
        return HandlerRun(self, job)
