"""``qdone worker``: the click command and signal handling; its events are
rendered by ``worker_view`` (where their JSON lines are described)."""

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
from ..log import Output
from .archive import ArchiveWriter
from .common import client_for, global_options, options_from
from .limits import concurrency_within, open_files_shortfall
from .worker_view import WorkerView

if TYPE_CHECKING:
    from ..api import Client
    from ..dedup import RunClaims

__all__ = ["WorkerView", "worker_command"]

KILL_EXIT_WITHIN = 5.0  # s from the second signal to the end of the process, at most


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
    "once per --wait-time), so a new job on any of them starts within about this. At "
    "start, each is read once as soon as 20 reads a second allow, so work already "
    "waiting is found sooner.",
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
    a second kills them (exit 130) and sends their messages back, no attempt
    used.

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
