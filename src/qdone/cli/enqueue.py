"""``qdone enqueue`` and ``qdone enqueue-batch``."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from ..batchfile import BatchLine, read_sources
from ..config import DEFAULTS
from ..errors import ExitCode, QdoneError, UsageError
from ..log import Output
from .common import (
    client_for,
    global_options,
    make_output,
    options_from,
    queue_kwargs,
    with_queue_options,
)

if TYPE_CHECKING:
    from ..api import EnqueueBatchResult, NotEnqueued

__all__ = ["enqueue_batch_command", "enqueue_command"]

PROGRESS_MIN_LINES = 2_000  # below this, a batch ends before a bar would help


def _group_id_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "-g",
        "--group-id",
        metavar="ID",
        help="FIFO message group. [default: one new id per invocation]",
    )(f)


def _delay_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--delay",
        type=int,
        metavar="SECONDS",
        help="Seconds before the job can be received, 0-900 (not for FIFO queues). "
        "[default: the queue's DelaySeconds]",
    )(f)


def _dedup_options(f: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--external-dedup",
            is_flag=True,
            help="Send a command at most once per window: a duplicate of a command already "
            "enqueued and not yet run is skipped. Windows live in --cache-uri's Redis (Node "
            "qdone 2.x's keys) or, on the SQLite broker, in the store.",
        ),
        click.option(
            "--dedup-period",
            type=click.IntRange(1, 1_209_600),
            default=DEFAULTS.dedup_period,
            show_default=True,
            metavar="SECONDS",
            help="How long a window stays open if its job does not run first.",
        ),
        click.option(
            "--dedup-id-per-message",
            is_flag=True,
            help="A new deduplication id per message, instead of one derived from the command.",
        ),
        click.option(
            "--dedup-stats",
            is_flag=True,
            help="Count the duplicates of each window in Redis (Node qdone's dedup-stats sets).",
        ),
        click.option(
            "--dedup-on-error",
            type=click.Choice(["send", "fail"]),
            default="send",
            show_default=True,
            help="When the windows cannot be checked: send anyway (with a warning), or "
            "enqueue nothing (exit 3).",
        ),
    ]
    for decorate in reversed(options):
        f = decorate(f)
    return f


@click.command("enqueue")
@click.argument("queue")
@click.argument("command")
@_group_id_option
@click.option(
    "--deduplication-id",
    metavar="ID",
    help="Deduplication id: SQS's on a FIFO queue; with --external-dedup, the window's. "
    "[default: FIFO: a new id per message; --external-dedup: derived from the command]",
)
@_delay_option
@_dedup_options
@with_queue_options
@global_options()
@click.pass_context
def enqueue_command(ctx: click.Context, /, queue: str, command: str, **kwargs: Any) -> None:
    """Put COMMAND on QUEUE, creating QUEUE and its failed queue on first use.

    COMMAND is run by a worker with /bin/sh -c; quote it as one argument.

    \b
    Example:
      qdone enqueue thumbnails "convert big.png -resize 10% small.png"
    """
    options = options_from(ctx)
    output = make_output(options)
    queue_settings = queue_kwargs(kwargs)
    with client_for(options, output, deduplicates=kwargs["external_dedup"]) as client:
        result = client.send(queue, command, **queue_settings, **kwargs)
        for note in result.notes:
            output.warn(note)
        if result.skipped:
            output.info(f"Skipped 1 duplicate (deduplication id {result.dedup_id})")
            output.event(
                "DUPLICATE_SKIPPED",
                {"queue": result.full_name, "skipped": 1, "deduplicationId": result.dedup_id},
            )
            return
        try:
            output.info(f"Enqueued job {result.message_id}")
            output.event(
                "ENQUEUED",
                {
                    "queue": result.full_name,
                    "job": result.message_id,
                    "deduplicationId": result.dedup_id,
                },
            )
        except OSError as exc:  # e.g. stdout on a full disk: the job is on the queue
            raise QdoneError(
                f"job {result.message_id} was enqueued to {queue}, but reporting it "
                f"failed: {exc.strerror or exc}"
            ) from exc


@click.command("enqueue-batch")
@click.argument("files", nargs=-1, required=True, metavar="FILE... | -")
@_group_id_option
@click.option(
    "--group-id-per-message",
    is_flag=True,
    help="FIFO: give every message its own group, so they may run in parallel.",
)
@_delay_option
@_dedup_options
@with_queue_options
@global_options()
@click.pass_context
def enqueue_batch_command(ctx: click.Context, /, files: tuple[str, ...], **kwargs: Any) -> None:
    """Enqueue every line of FILEs ('-' reads standard input), in order.

    Each line is QUEUE COMMAND...: the queue name, whitespace, then the command,
    kept as written. Blank lines and lines starting with '#' are skipped. Lines
    are sent in batches of up to 10 per queue; a queue that does not exist is
    created once. If any line cannot be enqueued, qdone says exactly which
    (file:line) and exits 1; every other line was enqueued.

    \b
    Example:
      printf 'render frame-1.sh\\nrender frame-2.sh\\n' | qdone enqueue-batch -
    """
    options = options_from(ctx)
    output = make_output(options)
    from . import CLOSED_AT_START

    if "-" in files and 0 in CLOSED_AT_START:
        raise UsageError("cannot read <stdin>: standard input is closed")
    lines = read_sources(files)
    with client_for(options, output, deduplicates=kwargs["external_dedup"]) as client:
        with _progress(output, len(lines)) as progress:
            outcome = client.enqueue_batch(
                lines, progress=progress, **queue_kwargs(kwargs), **kwargs
            )
        for note in outcome.notes:
            output.warn(note)
        _report(output, outcome, lines)


RANGE_AFTER = 10  # a longer run of failed lines is reported as one range


def _runs(failed: list[NotEnqueued], lines: list[BatchLine]) -> list[list[NotEnqueued]]:
    """The failed lines in runs that share a file and a reason, with no enqueued line
    between them (a full store fails every line after the first that did not fit:
    one report, not thousands)."""
    runs: list[list[NotEnqueued]] = []
    for f in sorted(failed, key=lambda f: f.index):
        last = runs[-1][-1] if runs else None
        if (
            last is not None
            and f.index == last.index + 1
            and (lines[f.index].source, f.reason) == (lines[last.index].source, last.reason)
        ):
            runs[-1].append(f)
        else:
            runs.append([f])
    return runs


@contextmanager
def _progress(output: Output, total: int) -> Iterator[Callable[[int], None] | None]:
    if not (output.verbose and sys.stderr.isatty() and total >= PROGRESS_MIN_LINES):
        yield None
        return
    with click.progressbar(length=total, label="Enqueueing", file=sys.stderr) as bar:
        yield bar.update


def _report(output: Output, outcome: EnqueueBatchResult, lines: list[BatchLine]) -> None:
    total = len(lines)
    for run in _runs(outcome.failed, lines):
        first, last = run[0], run[-1]
        if len(run) <= RANGE_AFTER:
            for f in run:
                output.error(f"{f.where}: not enqueued to {f.queue}: {f.reason}")
            continue
        queues = sorted({f.queue for f in run})
        to = queues[0] if len(queues) == 1 else f"{len(queues)} queues"
        output.error(
            f"{first.where}-{lines[last.index].lineno}: none of these {len(run):,} lines was "
            f"enqueued (to {to}): {first.reason}"
        )
    if outcome.skipped:
        noun = "duplicate" if outcome.skipped == 1 else "duplicates"
        output.info(f"Skipped {outcome.skipped} {noun}")
        output.event(
            "DUPLICATE_SKIPPED",
            {"skipped": outcome.skipped, "queues": outcome.skipped_queues},
        )
    output.info(f"Enqueued {outcome.enqueued} jobs")
    output.event(
        "BATCH_ENQUEUED",
        {"enqueued": outcome.enqueued, "failed": len(outcome.failed), "queues": outcome.queues},
    )
    if outcome.failed:
        error = outcome.error
        summary = (
            f"{len(outcome.failed)} of {total} lines were not enqueued (listed above); "
            f"the other {outcome.enqueued} were"
        )
        if outcome.skipped:
            summary += f" ({outcome.skipped} duplicates skipped)"
        output.error(summary)
        code = error.exit_code if error is not None else ExitCode.FAILURE
        raise SystemExit(int(code))
