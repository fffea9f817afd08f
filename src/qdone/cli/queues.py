"""``qdone idle-queues``, ``qdone check`` and ``qdone monitor``: thin commands over
``idle.py``, ``check.py`` and ``monitor.py``, and how their results are shown."""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import Any

import click

from ..check import CheckResult, Fix, QueueCheck, check_queues
from ..config import DEFAULTS
from ..errors import ExitCode
from ..idle import DeleteOutcome, IdleResult, IdleSettings, delete_idle, find_idle
from ..log import Output
from ..monitor import NAMESPACE, Snapshot, require_sink, save, take_snapshot, watch
from .common import global_options, open_for, options_from, queue_options, with_queue_options

__all__ = ["COMMANDS", "render_table"]

CLEAR_SCREEN = "\033[H\033[2J"


def _quiet_stdout_output(verbose: bool) -> Output:
    """Output whose stdout holds only results; notes and warnings go to stderr."""
    return Output(verbose=verbose, json_lines=False)


# -- idle-queues ----------------------------------------------------------------


def _show_verdicts(output: Output, result: IdleResult) -> None:
    for name in result.matched.missing:
        output.warn(f"queue {name} does not exist")
    for name in result.matched.excluded:
        output.warn(f"skipping {name}: a failed queue (check it with --unpair --include-failed)")
    if not result.pairs:
        output.warn("no queue matches")
    for pair in result.pairs:
        for verdict in pair.verdicts():
            output.info(f"{verdict.queue}: {verdict.state.value} ({verdict.reason})")


def _show_deletes(output: Output, outcomes: list[DeleteOutcome], service: str) -> None:
    for outcome in outcomes:
        if outcome.skipped:
            output.warn(f"not deleting {outcome.pair.name}: {outcome.skipped}")
        for note in outcome.notes:
            output.warn(note)
        for name in outcome.deleted:
            output.info(f"Deleted {name}")
    if service == "SQS" and any(o.deleted for o in outcomes):
        output.info(
            "Note: SQS refuses to re-create a deleted queue for 60 seconds; "
            "an enqueue to one of these queues in that time fails (QueueDeletedRecently)."
        )


@click.command("idle-queues")
@click.argument("queues", nargs=-1, required=True, metavar="QUEUE...")
@click.option(
    "-o",
    "--idle-for",
    type=int,
    default=DEFAULTS.idle_for,
    show_default=True,
    metavar="MINUTES",
    help="Minutes without activity that make a queue idle (SQS: at least 5).",
)
@click.option("--delete", is_flag=True, help="Delete the idle queues (and their failed queues).")
@click.option("--unpair", is_flag=True, help="Treat each queue alone, not with its failed queue.")
@click.option(
    "--include-failed",
    is_flag=True,
    help="With --unpair: also check failed queues that a wildcard matches.",
)
@global_options()
@click.pass_context
def idle_queues_command(ctx: click.Context, /, queues: tuple[str, ...], **kwargs: Any) -> None:
    """Print the queues (names or wildcards like 'jobs-*') unused for --idle-for minutes.

    A queue and its failed queue are idle only if both are (a missing failed
    queue counts as idle). A queue holding any message is active. Otherwise SQS
    asks CloudWatch, in a few GetMetricData calls for all queues together;
    the SQLite store answers from its own records. With --delete, each idle
    queue and its failed queue are deleted, after checking again that they
    hold no message.

    \b
    Example:
      qdone idle-queues 'render-*' --idle-for 120 --delete
    """
    options = options_from(ctx)
    output = _quiet_stdout_output(options.verbose)
    settings = IdleSettings(
        idle_for=kwargs["idle_for"],
        unpair=kwargs["unpair"],
        include_failed=kwargs["include_failed"],
    )
    with open_for(options, output) as broker:
        result = find_idle(broker, options, queues, settings)
        _show_verdicts(output, result)
        for pair in result.idle:
            output.result(pair.name)
        if kwargs["delete"]:
            _show_deletes(output, delete_idle(broker, result.idle), broker.service)


# -- check ----------------------------------------------------------------------


def _check_lines(check: QueueCheck) -> list[str]:
    label = f"{check.name} ({check.role})"
    if check.missing:
        return [f"{label}: missing" + (", created" if check.created else "")]
    fixed = {d.attribute for d in check.fixed}
    return [
        f"{label}: {d.attribute} is {d.actual or 'absent'}, qdone expects {d.expected or 'none'}"
        + (", set" if d.attribute in fixed else "")
        for d in check.differences
    ]


def _show_check(output: Output, result: CheckResult) -> None:
    for pattern in result.unmatched:
        output.warn(f"no queue matches {pattern}")
    for check in result.queues:
        lines = _check_lines(check)
        if not lines:
            output.info(f"{check.name} ({check.role}): as qdone would create it")
        for line in lines:
            output.result(line)


@click.command("check")
@click.argument("queues", nargs=-1, required=True, metavar="QUEUE...")
@click.option("--create", is_flag=True, help="Create the queues that are missing.")
@click.option("--overwrite", is_flag=True, help="Set the attributes and tags that differ.")
@with_queue_options
@global_options()
@click.pass_context
def check_command(ctx: click.Context, /, queues: tuple[str, ...], **kwargs: Any) -> None:
    """Compare QUEUEs, their failed queues (and with --dlq dead queues) with what
    qdone would create with these options; print each difference.

    Compared: RedrivePolicy (target and maxReceiveCount = --retries + 1; on the
    failed queue --dlq-after), FifoQueue, MessageRetentionPeriod, DelaySeconds
    (--fail-delay) and --tag tags. A missing queue is a difference. Wildcards
    match existing queues. Exits 1 if a difference is left unfixed.

    \b
    Example:
      qdone check jobs --retries 2 --dlq --create --overwrite
    """
    q, dlq_suffix = queue_options(kwargs)
    options = dataclasses.replace(options_from(ctx), dlq_suffix=dlq_suffix)
    output = _quiet_stdout_output(options.verbose)
    fix = Fix(create=kwargs["create"], overwrite=kwargs["overwrite"])
    with open_for(options, output) as broker:
        result = check_queues(broker, options, q, queues, fix)
        _show_check(output, result)
    if not result.ok:
        left = sum(1 for c in result.queues if not c.ok)
        output.error(
            f"{left} queue(s) differ from what qdone would create "
            "(--create and --overwrite fix them)"
        )
        ctx.exit(int(ExitCode.FAILURE))


# -- monitor --------------------------------------------------------------------


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
                "queue": row.name,
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
        if self.clear:
            self.output.out.write(CLEAR_SCREEN)
        self.output.result(render_table(snapshot))


@click.command("monitor")
@click.argument("patterns", nargs=-1, required=True, metavar="PATTERN...")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.5),
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
    options = options_from(ctx)
    as_json = kwargs["as_json"] or not sys.stdout.isatty()
    output = Output(verbose=options.verbose, json_lines=as_json)
    screen = _Screen(output, as_json, clear=not as_json and not kwargs["once"])
    with open_for(options, output) as broker:
        if kwargs["save"]:
            require_sink(broker)

        def show(snapshot: Snapshot) -> None:
            screen.show(snapshot)
            if kwargs["save"]:
                n = save(broker, snapshot, options, patterns)
                output.info(f"Saved {n} metrics to CloudWatch namespace {NAMESPACE}")

        try:
            watch(
                lambda: take_snapshot(broker, options, patterns),
                show,
                interval=kwargs["interval"],
                once=kwargs["once"],
            )
        except KeyboardInterrupt:
            output.info("Stopped")


COMMANDS = [idle_queues_command, check_command, monitor_command]
