"""What an enqueue sends and how its input is checked: the send settings, the result
types, the checks of commands and batch lines, and batch lines grouped by queue.

Used by ``enqueue.py`` (the two public calls) and ``enqueue_send.py`` (sending batches).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from .batchfile import MAX_MESSAGE_BYTES, BatchLine
from .broker.base import invalid_character
from .config import Options, QueueOptions
from .errors import BrokerError, MessageTooLarge, UsageError
from .queues import checked_names

__all__ = [
    "MAX_DELAY",
    "BatchOutcome",
    "EnqueueResult",
    "FailedLine",
    "QueueLines",
    "SendSettings",
    "check_command",
    "group_by_queue",
]

MAX_DELAY = 900
# SQS's MessageGroupId and MessageDeduplicationId: printable ASCII but space.
_FIFO_ID = re.compile(r"[!-~]{1,128}")


@dataclass(frozen=True)
class SendSettings:
    """How messages are sent: FIFO group ids, deduplication ids and delay."""

    group_id: str | None = None  # FIFO: None gives one id per invocation
    group_per_message: bool = False
    dedup_id: str | None = None  # FIFO, single enqueue only
    delay: int | None = None

    def check(self, fifo: bool, external_dedup: bool = False) -> None:
        if self.delay is not None and not 0 <= self.delay <= MAX_DELAY:
            raise UsageError(f"--delay must be 0 to {MAX_DELAY} seconds, not {self.delay}")
        if fifo and self.delay:
            raise UsageError(
                "--delay cannot be used with FIFO queues: SQS allows only a queue-wide delay there"
            )
        if not fifo and (self.group_id or self.group_per_message):
            raise UsageError("--group-id and --group-id-per-message need --fifo")
        if not fifo and self.dedup_id and not external_dedup:
            raise UsageError("--deduplication-id needs --fifo or --external-dedup")
        # With --external-dedup the id travels in a message attribute, not to SQS.
        sqs_dedup_id = None if external_dedup else self.dedup_id
        for flag, value in (("--group-id", self.group_id), ("--deduplication-id", sqs_dedup_id)):
            if value is not None and not _FIFO_ID.fullmatch(value):
                raise UsageError(
                    f"{flag} {value!r} cannot be used: SQS takes 1 to 128 characters, "
                    "letters, digits and punctuation, no space"
                )


@dataclass(frozen=True)
class EnqueueResult:
    queue: str  # as given
    message_id: str  # "" when skipped
    created: list[str]
    full_name: str = ""  # with prefix and suffixes
    skipped: bool = False  # a duplicate inside its deduplication window: not sent
    dedup_id: str | None = None  # QdoneDeduplicationId, with --external-dedup
    notes: list[str] = field(default_factory=list)  # options the queue does not have


def check_command(command: str, where: str) -> int:
    try:
        size = len(command.encode())
    except UnicodeEncodeError as exc:  # bytes of an argument that are not UTF-8
        raise UsageError(
            f"{where}: the command is not valid UTF-8 (character {exc.start + 1})"
        ) from exc
    if not command.strip():
        raise UsageError(f"{where}: the command is empty")
    bad = invalid_character(command)
    if bad is not None:
        raise UsageError(
            f"{where}: the command holds character U+{ord(bad):04X}, which SQS does not "
            "accept in a message"
        )
    if size > MAX_MESSAGE_BYTES:
        raise MessageTooLarge(
            f"{where}: the command is {size:,} bytes; SQS takes at most {MAX_MESSAGE_BYTES:,}"
        )
    return size


@dataclass(frozen=True)
class FailedLine:
    line: BatchLine
    reason: str


@dataclass
class BatchOutcome:
    """What ``enqueue_batch`` did: how many lines were enqueued (per queue), and
    exactly which lines were not, with why."""

    sent: int = 0
    per_queue: dict[str, int] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # options a queue does not have
    failed: list[FailedLine] = field(default_factory=list)
    fatal: BrokerError | None = None
    skipped: int = 0  # duplicates inside their deduplication window: not sent
    skipped_per_queue: dict[str, int] = field(default_factory=dict)


class QueueLines(NamedTuple):
    """The lines of one queue, in input order, with their commands and their sizes in bytes."""

    lines: list[BatchLine]
    commands: list[str]
    sizes: list[int]


def _check_lines(options: Options, q: QueueOptions, lines: Sequence[BatchLine]) -> list[int]:
    """Check each line in order (queue name on first use, then command); the sizes of
    the commands in bytes."""
    seen: set[str] = set()
    sizes = []
    for line in lines:
        if line.queue not in seen:
            try:
                checked_names(options, q, line.queue)
            except UsageError as exc:
                raise type(exc)(f"{line.where}: {exc}") from exc
            seen.add(line.queue)
        command = line.command
        size = len(command.encode())
        if size > MAX_MESSAGE_BYTES or not command.strip() or not command.isprintable():
            check_command(command, line.where)
        sizes.append(size)
    return sizes


def group_by_queue(
    options: Options, q: QueueOptions, lines: Sequence[BatchLine], names: Iterable[str]
) -> dict[str, QueueLines]:
    """Each queue's lines (``names``: the queues in order of first use). The whole input
    is checked before anything is sent: names, empty or huge commands; an error names
    the first bad line."""
    commands = [line.command for line in lines]
    # Printable ASCII, none blank or too long: only a queue name can be wrong.
    plain = all(map(str.isascii, commands)) and all(map(str.isprintable, commands))
    plain = plain and all(map(str.strip, commands))
    sizes = list(map(len, commands)) if plain else []
    if plain and max(sizes, default=0) <= MAX_MESSAGE_BYTES:
        for name in names:
            try:
                checked_names(options, q, name)
            except UsageError as exc:
                where = next(line.where for line in lines if line.queue == name)
                raise type(exc)(f"{where}: {exc}") from exc
    else:
        sizes = _check_lines(options, q, lines)
    queues = {name: QueueLines([], [], []) for name in names}
    if len(queues) == 1:
        return {name: QueueLines(list(lines), commands, sizes) for name in queues}
    for line, command, size in zip(lines, commands, sizes, strict=True):
        queue = queues[line.queue]
        queue.lines.append(line)
        queue.commands.append(command)
        queue.sizes.append(size)
    return queues
