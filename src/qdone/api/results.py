"""What ``Client.enqueue_batch`` returns, and how its input is read."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ..batchfile import BatchLine
from ..enqueue import BatchOutcome
from ..errors import BrokerError, UsageError

__all__ = ["EnqueueBatchResult", "NotEnqueued", "batch_lines"]


@dataclass(frozen=True)
class NotEnqueued:
    """One job of a batch that was not enqueued, and why."""

    index: int  #: its position in the input (0 for the first)
    where: str  #: ``jobs[index]``, or ``file:line`` for lines of a batch file
    queue: str
    command: str
    reason: str


@dataclass(frozen=True)
class EnqueueBatchResult:
    """What ``enqueue_batch`` did. Every job of the input is either counted in
    ``enqueued`` or listed in ``failed``."""

    enqueued: int
    failed: list[NotEnqueued]
    queues: dict[str, int]  #: jobs enqueued, by full queue name
    created: list[str]  #: full names of the queues created
    #: What stopped the sending part-way (the broker became unreachable), if anything;
    #: the jobs it left unsent are in ``failed``.
    error: BrokerError | None = None
    skipped: int = 0  #: duplicates not sent (``external_dedup``)
    skipped_queues: dict[str, int] = field(default_factory=dict)  #: by full queue name
    notes: list[str] = field(default_factory=list)  #: options a queue does not have

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass(frozen=True)
class _Item(BatchLine):
    """A ``(queue, command)`` pair given to ``enqueue_batch``: errors name it
    ``jobs[index]``."""

    @property
    def where(self) -> str:
        return f"{self.source}[{self.lineno}]"


def batch_lines(jobs: Iterable[tuple[str, str] | BatchLine]) -> list[BatchLine]:
    """The input of ``enqueue_batch`` as batch lines; pairs are checked to be pairs
    of strings, so that a wrong item is named rather than a ``TypeError`` raised."""
    lines: list[BatchLine] = []
    for index, job in enumerate(jobs):
        if isinstance(job, BatchLine):
            lines.append(job)
            continue
        if (
            not isinstance(job, tuple)
            or len(job) != 2
            or not all(isinstance(part, str) for part in job)
        ):
            raise UsageError(f"jobs[{index}]: {job!r} is not a (queue, command) pair of strings")
        lines.append(_Item("jobs", index, job[0], job[1]))
    return lines


def batch_result(lines: Sequence[BatchLine], outcome: BatchOutcome) -> EnqueueBatchResult:
    index = {id(line): n for n, line in enumerate(lines)}
    failed = [
        NotEnqueued(index[id(f.line)], f.line.where, f.line.queue, f.line.command, f.reason)
        for f in outcome.failed
    ]
    failed.sort(key=lambda f: f.index)
    return EnqueueBatchResult(
        enqueued=outcome.sent,
        failed=failed,
        queues=dict(outcome.per_queue),
        created=list(outcome.created),
        error=outcome.fatal,
        skipped=outcome.skipped,
        skipped_queues=dict(outcome.skipped_per_queue),
        notes=list(outcome.notes),
    )
