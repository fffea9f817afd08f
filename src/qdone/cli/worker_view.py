"""Rendering of the worker's events: the ``WorkerView`` that ``qdone worker`` hands
them to, as human lines and JSON lines.

Human lines (stderr, when verbose: the default on a TTY) follow Node qdone:
``Looking for work on …``, ``Found job …``, ``SUCCESS`` / ``FAILED`` with the
exit code, signal and the tail of the job's output.

JSON lines (stdout, when stderr is not a TTY), one object per event, each with
``event`` and ``timestamp`` (ISO 8601, UTC, milliseconds); a field is present
only when it has data:

``LISTENING``
    ``queues``: full names of the queues polled (on start and when a wildcard
    listing changes).
``JOB_SUCCEEDED``
    ``queue``, ``job`` (message id), ``command``, ``attempt`` (receive count),
    ``duration`` (seconds), ``stdout``, ``stderr`` (tails, up to 64 KiB each),
    ``stdoutDropped``, ``stderrDropped`` (bytes before the tails, when cut; also
    in ``JOB_FAILED`` and ``JOB_INTERRUPTED``).
``JOB_FAILED``
    Node qdone's fields ``job``, ``command``, ``exitCode``, ``killSignal``
    (e.g. ``SIGTERM``), ``stdout``, ``stderr``, ``errorMessage``; and ``queue``,
    ``attempt``, ``maxAttempts`` (the queue's maxReceiveCount), ``willRetry``
    (false: the redrive moves it to the failed queue), ``timedOut``,
    ``duration``.
``JOB_INTERRUPTED``
    A job ended by the service's stop signal while the worker stops, or killed
    by the worker's second signal (``killed``: true), which is no failure:
    ``queue``, ``job``, ``command``, ``attempt``, ``exitCode`` or
    ``killSignal``, ``duration``, ``stdout``, ``stderr``, ``sentBackAs`` (the
    message id of the copy sent in its place, when one was).
``JOB_RETRY``
    ``queue``, ``job``, ``command``, ``attempt`` (the one that failed),
    ``delay`` (seconds until the message is visible again).
``WORKER_WAITING``
    Shutting down: ``jobs`` still running, ``receives`` still in flight.
``WARNING``
    ``message``: a named queue that does not exist, a broker call that failed
    (the worker goes on, retrying with backoff).
``WORKER_SUMMARY``
    At the end: ``ran``, ``succeeded``, ``failed``, ``retried`` (of the failed,
    how many will run again), ``archived``, ``interrupted`` (given back at a
    stop or a second signal), ``killed`` (a second signal).

With ``--archive`` stdout holds the commands only, one per line, and no JSON.
The closing line ``Ran N jobs: S succeeded, F failed`` is always on stderr.
"""

from __future__ import annotations

from typing import Any

from ..job import JobResult
from ..log import Output
from ..worker.events import (
    BrokerTrouble,
    DuplicateSkipped,
    Event,
    JobArchived,
    JobFailed,
    JobInterrupted,
    JobNotStarted,
    JobOverdue,
    JobRetry,
    JobStarted,
    JobSucceeded,
    Listening,
    QueueMissing,
    Summary,
    Waiting,
)

__all__ = ["WorkerView"]

TAIL_LINES = 20  # of each stream, in human output


def _tail(text: str) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-TAIL_LINES:])


def _error_message(result: JobResult, kill_after: int) -> str:
    if result.error:
        return f"cannot start: {result.error}"
    if result.handler and result.timed_out:
        return (
            f"the handler ran past {kill_after} s (--kill-after); a thread cannot be killed, "
            "so it ran to its end and counts as failed"
        )
    if result.exception is not None:
        return f"raised {result.exception}"
    if result.timed_out:
        return f"killed after {kill_after} s (--kill-after)"
    if result.killed:
        return "killed: the worker was stopped by a second signal"
    if result.signal is not None:
        return f"killed by {result.signal_name}"
    return f"exit code {result.exit_code}"


class WorkerView:
    """Renders worker events: human lines and JSON lines (see the module docstring)."""

    def __init__(self, output: Output, kill_after: int, concurrency: int = 1) -> None:
        self.out = output
        self.kill_after = kill_after
        # Jobs running at once interleave their lines: each then names its job.
        self.label_jobs = concurrency > 1

    def _job_line(self, job: str, text: str, indent: int = 2) -> None:
        """A human line about ``job``, indented; led by the job's id when jobs run at once."""
        lead = f"  [{job}] " + " " * (indent - 2) if self.label_jobs else " " * indent
        self.out.info(lead + text)

    def __call__(self, event: Event) -> None:
        handler = getattr(self, f"_on_{type(event).__name__}")
        handler(event)

    def _on_Listening(self, e: Listening) -> None:
        where = ", ".join(e.queues) if e.queues else "no queue yet (listing again every minute)"
        self.out.info(f"Looking for work on {where}")
        self.out.event("LISTENING", {"queues": list(e.queues)})

    def _on_QueueMissing(self, e: QueueMissing) -> None:
        self.out.warn(f"queue {e.queue} ({e.full_name}) does not exist; going on without it")

    def _on_BrokerTrouble(self, e: BrokerTrouble) -> None:
        where = f"{e.queue}: " if e.queue else ""
        self.out.warn(f"{where}{e.message}")

    def _on_JobNotStarted(self, e: JobNotStarted) -> None:
        back = (
            f"sent back as job {e.sent_back_as}, no attempt used"
            if e.sent_back_as
            else "made visible again (no copy could be sent: this uses an attempt)"
        )
        then = (
            f"from now on at most {e.concurrency} jobs run at once"
            if e.concurrency
            else "no job runs to make room: the worker stops"
        )
        self.out.warn(
            f"job {e.job} on {e.queue} could not start ({e.error}), which is no failure of "
            f"the job: {back}; {then}"
        )

    def _on_JobStarted(self, e: JobStarted) -> None:
        attempt = f" (attempt {e.attempt})" if e.attempt > 1 else ""
        self.out.info(f"Found job {e.job} on {e.queue}{attempt}")
        self._job_line(e.job, self.out.style(f"executing: {e.command}", "dim"))

    def _on_DuplicateSkipped(self, e: DuplicateSkipped) -> None:
        self.out.info(f"Skipped job {e.job} on {e.queue}: a copy of it runs or ran")
        self.out.event(
            "DUPLICATE_SKIPPED",
            {"queue": e.queue, "job": e.job, "command": e.command, "deduplicationId": e.dedup_id},
        )

    def _on_JobArchived(self, e: JobArchived) -> None:
        pass  # written by ArchiveWriter, before the message is deleted

    def _on_JobSucceeded(self, e: JobSucceeded) -> None:
        r = e.result
        self._job_line(e.job, self.out.style("SUCCESS", "green") + f" in {r.duration:.3f} s")
        self._human_output(e.job, r)
        self.out.event(
            "JOB_SUCCEEDED",
            {
                "queue": e.queue,
                "job": e.job,
                "command": e.command,
                "attempt": e.attempt,
                "duration": round(r.duration, 3),
                **_output_fields(r),
            },
        )

    def _on_JobFailed(self, e: JobFailed) -> None:
        r = e.result
        message = _error_message(r, self.kill_after)
        self._job_line(e.job, self.out.style("FAILED", "red") + f": {message}")
        if r.exit_code is not None:
            self._job_line(e.job, f"code: {r.exit_code}")
        if r.signal_name:
            self._job_line(e.job, f"signal: {r.signal_name}")
        self._human_output(e.job, r)
        if e.returns_in is not None:
            self._job_line(
                e.job,
                f"{e.queue} has no redrive policy: the job is not retried here, and is "
                f"visible again in {e.returns_in} s (the queue's visibility timeout)",
            )
        elif e.final:
            self._job_line(e.job, "no attempt left: the redrive moves it to the failed queue")
        self.out.event("JOB_FAILED", _failed_fields(e, message))

    def _on_JobInterrupted(self, e: JobInterrupted) -> None:
        r = e.result
        if e.killed:
            how = "killed at the second signal"
        else:
            how = f"killed by {r.signal_name}" if r.signal_name else f"exit code {r.exit_code}"
            how += ", by the stop"
        self._job_line(e.job, self.out.style("INTERRUPTED", "yellow") + f": {how}")
        self._human_output(e.job, r)
        if e.sent_back_as:
            back = f"sent back as job {e.sent_back_as}, no attempt used"
        else:
            back = "not sent back: its message comes back with this attempt used"
        self._job_line(e.job, f"not a failure: {back}")
        self.out.event(
            "JOB_INTERRUPTED",
            {
                "queue": e.queue,
                "job": e.job,
                "command": e.command,
                "attempt": e.attempt,
                "exitCode": r.exit_code,
                "killSignal": r.signal_name,
                "duration": round(r.duration, 3),
                **_output_fields(r),
                "sentBackAs": e.sent_back_as,
                "killed": e.killed or None,
            },
        )

    def _on_JobOverdue(self, e: JobOverdue) -> None:
        self.out.warn(
            f"job {e.job} on {e.queue} still runs after {e.kill_after} s (--kill-after): "
            "a handler's thread cannot be killed; its message is no longer kept hidden"
        )

    def _on_JobRetry(self, e: JobRetry) -> None:
        self._job_line(e.job, self.out.style(f"retrying in {e.delay} s", "yellow"))
        self.out.event(
            "JOB_RETRY",
            {
                "queue": e.queue,
                "job": e.job,
                "command": e.command,
                "attempt": e.attempt,
                "delay": e.delay,
            },
        )

    def _on_Waiting(self, e: Waiting) -> None:
        self.out.info(
            f"Shutting down: waiting for {e.jobs} running job(s) and "
            f"{e.receives} receive(s) in flight (send the signal again to kill the jobs)"
        )
        self.out.event("WORKER_WAITING", {"jobs": e.jobs, "receives": e.receives})

    def _on_Summary(self, e: Summary) -> None:
        jobs = "1 job" if e.ran == 1 else f"{e.ran} jobs"
        line = f"Ran {jobs}: {e.succeeded} succeeded, {e.failed} failed"
        if e.retried:
            line += f" ({e.retried} will be retried)"
        if e.interrupted:
            line += f"; {e.interrupted} interrupted by the stop, not failed"
        if e.archived:
            line += f"; archived {e.archived}"
        self.out.note(line)
        self.out.event(
            "WORKER_SUMMARY",
            {
                "ran": e.ran,
                "succeeded": e.succeeded,
                "failed": e.failed,
                "retried": e.retried,
                "failedForGood": e.gave_up,
                "archived": e.archived,
                "interrupted": e.interrupted or None,
                "killed": e.killed or None,
            },
        )

    def _human_output(self, job: str, r: JobResult) -> None:
        for name, text, dropped in (
            ("stdout", r.stdout, r.stdout_dropped),
            ("stderr", r.stderr, r.stderr_dropped),
        ):
            if text.strip():
                kept = len(text.encode("utf-8", "surrogateescape"))
                cut = f" (the last {kept:,} of {kept + dropped:,} bytes)" if dropped else ""
                self._job_line(job, self.out.style(f"{name}{cut}:", "dim"))
                for line in _tail(text).splitlines():
                    self._job_line(job, line, indent=4)


def _output_fields(r: JobResult) -> dict[str, Any]:
    """A job's output tails, and how many bytes before each were dropped."""
    return {
        "stdout": r.stdout,
        "stderr": r.stderr,
        "stdoutDropped": r.stdout_dropped or None,
        "stderrDropped": r.stderr_dropped or None,
    }


def _failed_fields(e: JobFailed, message: str) -> dict[str, Any]:
    r = e.result
    return {
        "job": e.job,
        "command": e.command,
        "exitCode": r.exit_code,
        "killSignal": r.signal_name,
        **_output_fields(r),
        "errorMessage": message,
        "queue": e.queue,
        "attempt": e.attempt,
        "maxAttempts": e.max_attempts,
        "willRetry": not e.final,
        "returnsIn": e.returns_in,
        "timedOut": r.timed_out or None,
        "duration": round(r.duration, 3),
    }
