"""``qdone worker``: the click command, signal handling and the rendering of the
worker's events.

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
    A job ended by the service's stop signal while the worker stops, which is
    no failure: ``queue``, ``job``, ``command``, ``attempt``, ``exitCode`` or
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
    stop), ``killed`` (a second signal).

With ``--archive`` stdout holds the commands only, one per line, and no JSON.
The closing line ``Ran N jobs: S succeeded, F failed`` is always on stderr.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from ..config import DEFAULTS
from ..errors import ExitCode
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
from .archive import ArchiveWriter
from .common import client_for, global_options, options_from
from .limits import concurrency_within, open_files_shortfall

if TYPE_CHECKING:
    from ..api import Client
    from ..dedup import RunClaims

__all__ = ["WorkerView", "worker_command"]

TAIL_LINES = 20  # of each stream, in human output
KILL_EXIT_WITHIN = 5.0  # s from the second signal to the end of the process, at most


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
        how = f"killed by {r.signal_name}" if r.signal_name else f"exit code {r.exit_code}"
        self._job_line(e.job, self.out.style("INTERRUPTED", "yellow") + f": {how}, by the stop")
        self._human_output(e.job, r)
        if e.sent_back_as:
            back = f"sent back as job {e.sent_back_as}, no attempt used"
        else:
            back = "made visible again, for another worker"
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
            line += f"; {e.interrupted} interrupted by the stop, given back"
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


def _exit_within(seconds: float) -> None:
    """After a second signal: if the worker has not ended ``seconds`` from now (a
    broker call hangs on the network, a flush of deletes with it), end the process.
    Messages whose delete was not sent come back: their jobs run again."""

    def deadline() -> None:
        time.sleep(seconds)
        with contextlib.suppress(OSError):
            os.write(
                2,
                b"qdone: error: stopped by a second signal; a broker call did not return "
                b"in time: deletes not yet sent are lost, and their jobs will run again\n",
            )
        os._exit(int(ExitCode.INTERRUPTED))

    threading.Thread(target=deadline, name="qdone-exit-deadline", daemon=True).start()


def _install_signals(client: Client, output: Output) -> None:
    """First SIGINT/SIGTERM: stop taking work; second: kill the jobs, and exit within
    ``KILL_EXIT_WITHIN`` s whatever the network does. The handler only starts a
    thread: it must not take locks the interrupted code may hold."""
    received: list[int] = []

    def act(signum: int) -> None:
        name = signal.Signals(signum).name
        if len(received) == 1:
            output.info(f"Received {name}: finishing running jobs, taking no new ones")
            client.stop()
        elif len(received) == 2:
            _exit_within(KILL_EXIT_WITHIN)
            output.info(f"Received {name} again: killing running jobs")
            client.kill()

    def handler(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        threading.Thread(target=act, args=(signum,), daemon=True).start()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


@click.command("worker")
@click.argument("queues", nargs=-1, required=True, metavar="QUEUE...")
@click.option(
    "-f", "--fifo", is_flag=True, help="FIFO queues: add .fifo; wildcards match only FIFO queues."
)
@click.option(
    "-k",
    "--kill-after",
    type=click.IntRange(1, 43_200),
    default=DEFAULTS.kill_after,
    show_default=True,
    help="Kill a job (its whole process group) after this many seconds; it counts as failed.",
)
@click.option(
    "-w",
    "--wait-time",
    type=click.IntRange(0, 20),
    default=DEFAULTS.wait_time,
    show_default=True,
    help="Seconds a receive waits for a message (long poll).",
)
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(1, 1000),
    default=1,
    show_default=True,
    help="Jobs run at once.",
)
@click.option(
    "--active-only",
    is_flag=True,
    help="Receive only from queues whose approximate counts show messages; every queue's "
    "counts are read once per --wait-time (one GetQueueAttributes each, never back to back).",
)
@click.option(
    "--idle-check-seconds",
    "idle_check",
    type=click.IntRange(1, 3600),
    default=60,
    show_default=True,
    help="With more queues than --concurrency, idle queues are not long-polled but their "
    "counts read in turn: each at least once per this many seconds (and no more often than "
    "once per --wait-time), so a new job on any of them starts within about this.",
)
@click.option(
    "--drain",
    is_flag=True,
    help="Stop once no job runs and every queue is empty: each has answered a receive "
    "with nothing, and shown no delayed message, after the last job ended. Draining, "
    "receives wait at most 1 s on SQS (still a long poll, which asks every server; "
    "none on SQLite), so the worker exits about a second after its last job; an empty "
    "queue is polled again only after a job ends, at most once per --wait-time while "
    "jobs run. A job that failed on a queue without a redrive policy (a failed queue) "
    "is not waited for: it comes back after the queue's visibility timeout.",
)
@click.option(
    "--archive",
    is_flag=True,
    help="Print each command on stdout and delete it, without running it.",
)
@click.option(
    "--retry-delay",
    type=click.IntRange(0, 43_200),
    default=DEFAULTS.retry_delay,
    show_default=True,
    help="First backoff of a failed job with attempts left (queues made with --retries); "
    "doubled each attempt, with jitter.",
)
@click.option("--include-failed", is_flag=True, help="Wildcards also match failed queues.")
@click.option("--include-dead", is_flag=True, help="Wildcards also match dead queues.")
@click.option(
    "--dlq-suffix", default=DEFAULTS.dlq_suffix, show_default=True, help="Suffix of dead queues."
)
@click.option(
    "--dedup-period",
    type=click.IntRange(1, 1_209_600),
    default=DEFAULTS.dedup_period,
    show_default=True,
    metavar="SECONDS",
    help="Jobs enqueued with --external-dedup: how long after a job succeeded copies of "
    "its message are still deleted unrun.",
)
@click.option(
    "--dedup-stats",
    is_flag=True,
    help="Now and then drop ended windows from the --dedup-stats sets in Redis.",
)
@global_options()
@click.pass_context
def worker_command(ctx: click.Context, /, queues: tuple[str, ...], **kw: Any) -> None:
    """Take jobs off QUEUEs and run them with /bin/sh -c.

    A QUEUE ending in '*' is a wildcard: every queue whose name starts with the
    rest ('test*'), listed again every minute. A job that exits 0 is deleted; one
    that fails, or runs past --kill-after, goes to the failed queue once its
    attempts are used up. Jobs see QDONE_QUEUE (full name), QDONE_JOB_ID and
    QDONE_RECEIVE_COUNT (the attempt) in their environment.

    The first SIGINT/SIGTERM stops taking work and lets running jobs finish;
    a second kills them (exit 130).

    \b
    Exit status:
      0    no job failed for good (--drain); without --drain, always, once
           stopped by a signal
      1    --drain: a job of the run failed for good (no attempt left: it
           is, or will be, in the failed queue; a job failing on a queue
           without a redrive policy, such as a failed queue, stays there
           and does not count); a broker error
      2, 3 bad options; broker unreachable (see 'qdone --help')
      130  stopped by a second signal

    \b
    Example:
      qdone worker --concurrency 8 'render*'
      qdone worker build --drain && deploy
    """
    dlq_suffix = kw.pop("dlq_suffix")
    options = dataclasses.replace(options_from(ctx), dlq_suffix=dlq_suffix)
    dedup_period, dedup_stats = kw.pop("dedup_period"), kw.pop("dedup_stats")
    from . import CLOSED_AT_START

    archive = ArchiveWriter(closed=1 in CLOSED_AT_START) if kw["archive"] else None
    output = Output(
        verbose=options.verbose,
        json_lines=not kw["archive"] and not _stderr_tty(),
        keep_going=True,  # a report that cannot be written changes no job
    )
    short = open_files_shortfall(kw["concurrency"])
    if short is not None:
        fits = concurrency_within(short[0])
        output.warn(
            f"the limit of open files (ulimit -n) is {short[0]}; -c {kw['concurrency']} "
            f"needs about {short[1]}: running at most {fits} jobs at once (a job that "
            "still cannot start goes back, no attempt used, and fewer run)"
        )
        kw["concurrency"] = fits
    with client_for(options, output) as client:
        view = WorkerView(output, kw["kill_after"], kw["concurrency"])
        claims = _run_claims(client, dedup_period, dedup_stats)
        _install_signals(client, output)
        summary = client.work(
            queues, dlq_suffix=dlq_suffix, on_event=view, archive_to=archive, claims=claims, **kw
        )
    if archive is not None:
        archive.check()
    if summary.killed:
        raise SystemExit(int(ExitCode.INTERRUPTED))
    if kw["drain"] and summary.gave_up:  # some failed for good
        raise SystemExit(int(ExitCode.FAILURE))


def _run_claims(client: Client, dedup_period: int, dedup_stats: bool) -> RunClaims | None:
    """Claims for messages sent with --external-dedup: in the SQLite store, or in
    the fleet's Redis; None with neither (such messages then simply run)."""
    cache = client.cache
    store = client.dedup_store()
    if store is None:
        return None
    from ..dedup import RunClaims

    prune = None
    if dedup_stats and cache is not None:
        from ..cache.dedup import RedisDedup

        prune = store.stat_maintenance if isinstance(store, RedisDedup) else None
    return RunClaims(store, dedup_period, prune_stats=prune)


def _stderr_tty() -> bool:
    return sys.stderr.isatty()
