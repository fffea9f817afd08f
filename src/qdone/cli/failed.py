"""``qdone failed`` and ``qdone requeue``: thin commands over ``failed.py`` and
``requeue.py``, and how their results are shown.

On a terminal (stderr a TTY) ``failed`` prints one line per job on stdout;
otherwise one JSON line per job (``FAILED_JOB``). ``requeue`` always ends with one
summary line per queue on stderr (``Requeued 3 jobs from qdone_q_failed to
qdone_q``), and writes ``REQUEUED`` JSON lines on stdout when stderr is not a TTY.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import click

from ..config import DEFAULTS
from ..errors import ExitCode
from ..failed import LIST_HOLD, FailedJob, Listing, list_failed
from ..log import Output
from ..requeue import REQUEUE_HOLD, Moved, RequeueResult, requeue
from .common import global_options, make_output, open_for, options_from

__all__ = ["failed_command", "requeue_command"]


def _when(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def _jobs(n: int) -> str:
    return "1 job" if n == 1 else f"{n} jobs"


def _show_job(output: Output, job: FailedJob) -> None:
    if output.json_lines:
        output.event(
            "FAILED_JOB",
            {
                "queue": job.queue,
                "job": job.job,
                "command": job.command,
                "group": job.group,
                "enqueued": _iso(job.enqueued_at),
                "failed": _iso(job.failed_at),
                "firstReceived": _iso(job.first_received_at),
                "receives": job.receives,
            },
        )
        return
    when = (
        f"failed {_when(job.failed_at)}"
        if job.first_received_at is None
        else f"first run {_when(job.first_received_at)}"
    )
    group = f"  group {job.group}" if job.group else ""
    output.result(
        f"{job.queue}  {job.job}  enqueued {_when(job.enqueued_at)}  {when}  "
        f"received {job.receives}{group}  {job.command}"
    )


def _show_listing(output: Output, listing: Listing) -> None:
    for note in listing.skipped:
        output.warn(f"skipped: {note}")
    for job in listing.jobs:
        _show_job(output, job)
    queues = ", ".join(p.source for p in listing.pairs)
    output.info(f"{_jobs(len(listing.jobs))} in {queues}")
    if listing.received:
        output.info(
            "Listing received each job once: its receive count went up by one (SQS has no "
            "other way to read a message)"
        )
    if listing.unreleased:
        back = f"back within {LIST_HOLD} s"
        output.warn(f"{_jobs(listing.unreleased)} could not be made visible again: {back}")


def _common_options(f: Any) -> Any:
    for decorate in reversed(
        [
            click.argument("queues", nargs=-1, required=True, metavar="QUEUE..."),
            click.option(
                "--limit", type=click.IntRange(min=1), metavar="N", help="At most N jobs in all."
            ),
            click.option(
                "-f",
                "--fifo",
                is_flag=True,
                help="FIFO queues: add .fifo; wildcards match only FIFO.",
            ),
            click.option(
                "--dlq-suffix",
                default=DEFAULTS.dlq_suffix,
                show_default=True,
                help="Suffix of dead queues.",
            ),
        ]
    ):
        f = decorate(f)
    return f


@click.command("failed")
@_common_options
@click.option("--dlq", "dead", is_flag=True, help="The dead queues (--dlq) instead of the failed.")
@global_options()
@click.pass_context
def failed_command(ctx: click.Context, /, queues: tuple[str, ...], **kw: Any) -> None:
    """List the jobs in the failed queues of QUEUEs (names as given to enqueue, or
    wildcards like 'render*'): queue, job id, when first enqueued, when it failed
    (SQLite) or first ran (SQS), receives, command.

    The SQLite store reads them and changes nothing. SQS can only show a message
    by receiving it: each listed job is received once (hidden while the listing
    runs, then visible again), so its receive count goes up by one, which counts
    toward --dlq-after on a failed queue with a dead queue.

    \b
    Example:
      qdone failed 'render*' --limit 20
    """
    options = dataclasses.replace(options_from(ctx), dlq_suffix=kw["dlq_suffix"])
    output = make_output(options)
    with open_for(options, output) as broker:
        listing = list_failed(
            broker, options, queues, limit=kw["limit"], fifo=kw["fifo"], dead=kw["dead"]
        )
        _show_listing(output, listing)


def _show_moved(output: Output, result: RequeueResult) -> None:
    for note in result.skipped:
        output.warn(f"skipped: {note}")
    for m in result.moved:
        src, dst = m.pair.source, m.pair.target
        if result.dry_run:
            output.note(f"Would requeue {_jobs(m.planned)} from {src} to {dst}")
        else:
            output.note(f"Requeued {_jobs(m.requeued)} from {src} to {dst}")
        for error in m.errors:
            output.warn(error)
        if m.not_sent:
            output.warn(f"{_jobs(m.not_sent)} not requeued: still in {src}")
        if m.not_deleted:
            output.warn(
                f"{_jobs(m.not_deleted)} requeued but not deleted from {src}: "
                "they will run from both queues unless deleted"
            )
        if m.remaining:
            output.warn(
                f"{_jobs(m.remaining)} still in {src} (arrived meanwhile, or hidden by a lost "
                f"answer: back within {REQUEUE_HOLD} s; run requeue again)"
            )
        output.event("REQUEUED", _moved_fields(m, result.dry_run))


def _moved_fields(m: Moved, dry_run: bool) -> dict[str, Any]:
    return {
        "from": m.pair.source,
        "to": m.pair.target,
        "requeued": None if dry_run else m.requeued,
        "wouldRequeue": m.planned if dry_run else None,
        "notSent": m.not_sent or None,
        "notDeleted": m.not_deleted or None,
        "remaining": m.remaining or None,
        "dryRun": dry_run or None,
    }


@click.command("requeue")
@_common_options
@click.option(
    "--from-dead", "dead", is_flag=True, help="Move jobs from the dead queues (--dlq) instead."
)
@click.option("--dry-run", is_flag=True, help="Say what would move; change nothing.")
@global_options()
@click.pass_context
def requeue_command(ctx: click.Context, /, queues: tuple[str, ...], **kw: Any) -> None:
    """Move the jobs in the failed queues of QUEUEs (names as given to enqueue, or
    wildcards) back to their queues, so workers run them again with a fresh
    receive count.

    SQLite moves ten jobs per transaction, each exactly once. SQS copies ten at
    a time (body, attributes, FIFO group) and deletes from the failed queue only
    what the queue accepted: three calls per ten jobs. Under network faults a job
    may be requeued twice, never lost. --dry-run reads only the queues' counts
    (approximate on SQS).

    \b
    Example:
      qdone requeue render --limit 100
    """
    options = dataclasses.replace(options_from(ctx), dlq_suffix=kw["dlq_suffix"])
    output = make_output(options)
    with open_for(options, output) as broker:
        result = requeue(
            broker,
            options,
            queues,
            limit=kw["limit"],
            dry_run=kw["dry_run"],
            fifo=kw["fifo"],
            dead=kw["dead"],
        )
        _show_moved(output, result)
    if not result.ok:
        ctx.exit(int(ExitCode.FAILURE))
