"""``qdone monitor``: a thin command over ``monitor.py``, and how its snapshots are
shown (a table on a terminal, JSON lines otherwise)."""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from typing import Any

import click

from ..errors import UsageError
from ..log import Output
from ..monitor import NAMESPACE, Snapshot, require_sink, watch
from .common import client_for, global_options, options_from

__all__ = ["CLEAR_SCREEN", "monitor_command", "render_table"]

CLEAR_SCREEN = "\033[H\033[2J"


def _cells(counts: Any) -> list[str]:
    if counts is None:
        return ["-", "-", "-"]
    return [str(counts.visible), str(counts.in_flight), str(counts.delayed)]


def render_table(snapshot: Snapshot) -> str:
    """The snapshot as a table: each queue with its failed queue, then totals."""
    rows = [["QUEUE", "VISIBLE", "IN FLIGHT", "DELAYED", "FAILED", "IN FLIGHT", "DELAYED"]]
    for row in snapshot.rows:
        rows.append([row.name, *_cells(row.counts), *_cells(row.failed)])
    rows.append(["TOTAL", *_cells(snapshot.totals), *_cells(snapshot.failed_totals)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)]
        )
        for r in rows
    ]
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(snapshot.taken_at))
    return "\n".join([f"{len(snapshot.rows)} queues at {stamp}", *lines])


def _emit_json(output: Output, snapshot: Snapshot) -> None:
    for row in snapshot.rows:
        failed = row.failed
        output.event(
            "QUEUE_COUNTS",
            {
                "queue": row.full_name,
                "visible": row.counts.visible,
                "in_flight": row.counts.in_flight,
                "delayed": row.counts.delayed,
                "failed_visible": failed.visible if failed else None,
                "failed_in_flight": failed.in_flight if failed else None,
                "failed_delayed": failed.delayed if failed else None,
            },
        )
    totals, failed_totals = snapshot.totals, snapshot.failed_totals
    output.event(
        "TOTAL_COUNTS",
        {
            "queues": len(snapshot.rows),
            "visible": totals.visible,
            "in_flight": totals.in_flight,
            "delayed": totals.delayed,
            "failed_visible": failed_totals.visible,
            "failed_in_flight": failed_totals.in_flight,
            "failed_delayed": failed_totals.delayed,
        },
    )


@dataclasses.dataclass
class _Screen:
    """Shows each snapshot: JSON lines, or a table (cleared between refreshes)."""

    output: Output
    as_json: bool
    clear: bool
    shown: int = 0

    def show(self, snapshot: Snapshot) -> None:
        if self.shown == 0:
            for name in snapshot.missing:
                self.output.warn(f"queue {name} does not exist")
        self.shown += 1
        if self.as_json:
            _emit_json(self.output, snapshot)
            return
        if self.clear and self.output.out is not None:  # clear: stdout is a terminal
            self.output.out.write(CLEAR_SCREEN)
        self.output.result(render_table(snapshot))


@click.command("monitor")
@click.argument("patterns", nargs=-1, required=True, metavar="PATTERN...")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.5, max=86_400),
    default=5.0,
    show_default=True,
    metavar="SECONDS",
    help="Seconds between refreshes.",
)
@click.option("--once", is_flag=True, help="Show one snapshot and exit.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines even on a TTY.")
@click.option(
    "--save",
    is_flag=True,
    help=f"SQS only: publish totals to CloudWatch, namespace {NAMESPACE}, dimension "
    "queueName = the pattern with prefix (e.g. qdone_jobs*); metrics "
    "ApproximateNumberOfMessages[NotVisible|Delayed] (queues and failed queues), "
    "FailedApproximateNumberOfMessages[NotVisible|Delayed], totalQueues, "
    "contributingQueueCount.",
)
@global_options()
@click.pass_context
def monitor_command(ctx: click.Context, /, patterns: tuple[str, ...], **kwargs: Any) -> None:
    """Show visible, in-flight and delayed counts of the queues matching PATTERNs
    (names or wildcards like 'jobs-*') and of their failed queues, with totals.

    On a terminal: a table refreshed every --interval seconds until Ctrl-C.
    Otherwise, or with --json: one JSON line per queue per refresh
    (QUEUE_COUNTS), then one with the totals (TOTAL_COUNTS).

    \b
    Example:
      qdone --broker sqs monitor 'render-*' --save --interval 60
    """
    if not math.isfinite(kwargs["interval"]):  # FloatRange lets NaN through
        raise UsageError(f"--interval must be 0.5 to 86400 seconds, not {kwargs['interval']}")
    options = options_from(ctx)
    as_json = kwargs["as_json"] or not sys.stdout.isatty()
    output = Output(verbose=options.verbose, json_lines=as_json)
    screen = _Screen(output, as_json, clear=not as_json and not kwargs["once"])
    with client_for(options, output, reads_only=True, deduplicates=False) as client:
        if kwargs["save"]:
            require_sink(client.broker)

        def show(snapshot: Snapshot) -> None:
            screen.show(snapshot)
            if kwargs["save"]:
                n = client.save_counts(snapshot, patterns)
                output.info(f"Saved {n} metrics to CloudWatch namespace {NAMESPACE}")

        try:
            watch(
                lambda: client.counts(patterns),
                show,
                interval=kwargs["interval"],
                once=kwargs["once"],
            )
        except KeyboardInterrupt:
            output.info("Stopped")
