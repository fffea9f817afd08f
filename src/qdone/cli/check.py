"""``qdone check``: a thin command over ``check.py``, and how its differences are shown."""

from __future__ import annotations

import dataclasses
from typing import Any

import click

from ..check import CheckResult, Fix, QueueCheck, check_queues
from ..errors import ExitCode
from ..log import Output
from .common import (
    global_options,
    open_for,
    options_from,
    queue_options,
    quiet_stdout_output,
    with_queue_options,
)

__all__ = ["check_command"]


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
    output = quiet_stdout_output(options.verbose)
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
