"""``qdone idle-queues``: a thin command over ``idle.py``, and how its verdicts and
deletes are shown."""

from __future__ import annotations

from typing import Any

import click

from ..config import DEFAULTS
from ..idle import DeleteOutcome, IdleResult, IdleSettings, delete_idle, find_idle
from ..log import Output
from .common import global_options, open_for, options_from, quiet_stdout_output

__all__ = ["idle_queues_command"]


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
    output = quiet_stdout_output(options.verbose)
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
