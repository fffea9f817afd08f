"""Putting commands on queues: ``enqueue`` (one) and ``enqueue_batch`` (many)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import NamedTuple

from .batchfile import BATCH_BYTES, MAX_MESSAGE_BYTES, BatchLine, batch_spans
from .broker.base import MAX_BATCH, Broker, SendEntry, SendResult, invalid_character
from .config import Options, QueueOptions
from .errors import BrokerError, BrokerUnavailable, MessageTooLarge, UsageError
from .queues import EnsuredQueue, ensure_queue, names_for, validate_queue_options

__all__ = [
    "BatchOutcome",
    "EnqueueResult",
    "FailedLine",
    "SendSettings",
    "enqueue",
    "enqueue_batch",
]

MAX_DELAY = 900
# Queues made before SQS allowed 1 MiB hold at most 256 KiB; a command larger than
# this makes qdone read the queue's MaximumMessageSize before sending.
OLD_DEFAULT_SIZE = 262_144
SEND_ROUNDS = 4  # one try and three retries of the entries a batch reports failed


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class SendSettings:
    """How messages are sent: FIFO group ids, deduplication ids and delay."""

    group_id: str | None = None  # FIFO: None gives one id per invocation
    group_per_message: bool = False
    dedup_id: str | None = None  # FIFO, single enqueue only
    delay: int | None = None

    def check(self, fifo: bool) -> None:
        if self.delay is not None and not 0 <= self.delay <= MAX_DELAY:
            raise UsageError(f"--delay must be 0 to {MAX_DELAY} seconds, not {self.delay}")
        if fifo and self.delay:
            raise UsageError(
                "--delay cannot be used with FIFO queues: SQS allows only a queue-wide delay there"
            )
        if not fifo and (self.group_id or self.group_per_message or self.dedup_id):
            raise UsageError(
                "--group-id, --group-id-per-message and --deduplication-id need --fifo"
            )


@dataclass(frozen=True)
class EnqueueResult:
    queue: str
    message_id: str
    created: list[str]


def _check_command(command: str, where: str) -> int:
    size = len(command.encode())
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


def enqueue(
    broker: Broker,
    options: Options,
    q: QueueOptions,
    queue: str,
    command: str,
    settings: SendSettings | None = None,
    *,
    on_create: Callable[[str], None] | None = None,
    on_sent: Callable[[str], object] | None = None,
    ids: Callable[[], str] = new_id,
) -> EnqueueResult:
    """Put ``command`` on ``queue``, creating the queue pair on first use;
    ``on_sent`` gets the full queue name once the message is on it."""
    settings = settings or SendSettings()
    validate_queue_options(q)
    settings.check(q.fifo or queue.endswith(".fifo"))
    _check_command(command, "enqueue")
    target = ensure_queue(broker, options, q, queue, on_create)  # checks names before a call
    fifo = target.names.fifo
    entry = SendEntry(
        id="0",
        body=command,
        group_id=(settings.group_id or ids()) if fifo else None,
        dedup_id=(settings.dedup_id or ids()) if fifo else None,
        delay=settings.delay,
    )
    message_id = broker.send(target.url, entry)
    if on_sent is not None:
        on_sent(target.names.main)
    return EnqueueResult(queue, message_id, target.created)


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
    failed: list[FailedLine] = field(default_factory=list)
    fatal: BrokerError | None = None


class _Lines(NamedTuple):
    """The lines of one queue, in input order, with their commands and their sizes in bytes."""

    lines: list[BatchLine]
    commands: list[str]
    sizes: list[int]


class _Batch(NamedTuple):
    """Lines and their entries, to send in one batch (entry ids are unique in it)."""

    lines: Sequence[BatchLine]
    entries: Sequence[SendEntry]

    @property
    def ids(self) -> list[str]:
        return [entry.id for entry in self.entries]


_ENTRY_IDS = tuple(str(n) for n in range(MAX_BATCH))
_NOTHING = _Batch((), ())


def _check_lines(options: Options, q: QueueOptions, lines: Sequence[BatchLine]) -> list[int]:
    """Check each line in order (queue name on first use, then command); the sizes of
    the commands in bytes."""
    seen: set[str] = set()
    sizes = []
    for line in lines:
        if line.queue not in seen:
            try:
                names_for(options, line.queue, q.fifo)
            except UsageError as exc:
                raise type(exc)(f"{line.where}: {exc}") from exc
            seen.add(line.queue)
        command = line.command
        size = len(command.encode())
        if size > MAX_MESSAGE_BYTES or not command.strip() or not command.isprintable():
            _check_command(command, line.where)
        sizes.append(size)
    return sizes


def _group_by_queue(
    options: Options, q: QueueOptions, lines: Sequence[BatchLine], names: Iterable[str]
) -> dict[str, _Lines]:
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
                names_for(options, name, q.fifo)
            except UsageError as exc:
                where = next(line.where for line in lines if line.queue == name)
                raise type(exc)(f"{where}: {exc}") from exc
    else:
        sizes = _check_lines(options, q, lines)
    queues = {name: _Lines([], [], []) for name in names}
    if len(queues) == 1:
        return {name: _Lines(list(lines), commands, sizes) for name in queues}
    for line, command, size in zip(lines, commands, sizes, strict=True):
        queue = queues[line.queue]
        queue.lines.append(line)
        queue.commands.append(command)
        queue.sizes.append(size)
    return queues


def _size_limit(broker: Broker, target: EnsuredQueue, sizes: list[int]) -> int:
    if target.created or max(sizes) <= OLD_DEFAULT_SIZE:
        return MAX_MESSAGE_BYTES  # new queues take 1 MiB; small commands fit any queue
    return int(
        broker.get_queue_attributes(target.url, ["MaximumMessageSize"])["MaximumMessageSize"]
    )


@dataclass
class _Plan:
    """One queue's lines and their split into batches, as spans of its lines."""

    target: EnsuredQueue
    queue: _Lines
    spans: list[range]
    group_id: str | None  # FIFO: every message's group, unless each has its own


class _Sender:
    """Sends batches to one queue, retrying refused entries with the same ids
    (FIFO deduplication ids make a retry exact)."""

    def __init__(
        self,
        broker: Broker,
        plan: _Plan,
        settings: SendSettings,
        ids: Callable[[], str],
        sleep: Callable[[float], None],
    ):
        self.broker = broker
        self.plan = plan
        self.target = plan.target
        self.settings = settings
        self.ids = ids
        self.sleep = sleep

    def batches(self, spans: list[range]) -> list[_Batch]:
        """The batches of consecutive ``spans``, each entry's id its place in its batch.
        (Made just before they are sent: a long input does not hold them all at once.)"""
        queue, first = self.plan.queue, spans[0].start
        commands = queue.commands[first : spans[-1].stop]
        entry_ids = [entry_id for span in spans for entry_id in _ENTRY_IDS[: len(span)]]
        delay = self.settings.delay
        if not self.target.names.fifo:
            entries = [
                SendEntry(entry_id, command, None, None, delay)
                for entry_id, command in zip(entry_ids, commands, strict=True)
            ]
        else:
            entries = []
            group = self.plan.group_id
            for entry_id, command in zip(entry_ids, commands, strict=True):
                group_id = self.ids() if group is None else group
                entries.append(SendEntry(entry_id, command, group_id, self.ids(), delay))
        return [
            _Batch(
                queue.lines[span.start : span.stop], entries[span.start - first : span.stop - first]
            )
            for span in spans
        ]

    def send(self, spans: list[range]) -> list[FailedLine]:
        """Send the batches of ``spans`` (at most ``broker.batches_per_send``); return
        the lines that were not enqueued, with why."""
        batches = self.batches(spans)
        pending = list(batches)  # what is left of each batch
        reasons: list[dict[str, str]] = [{} for _ in batches]
        refused: list[FailedLine] = []
        for attempt in range(SEND_ROUNDS):
            active = [n for n, batch in enumerate(pending) if batch.entries]
            if not active:
                break
            if attempt:
                self.sleep(0.1 * 2**attempt)
            try:
                results = self.broker.send_batches(
                    self.target.url, [pending[n].entries for n in active]
                )
            except BrokerUnavailable:
                raise
            except BrokerError as exc:
                if not self.target.names.fifo:
                    # The call may have reached the queue: sending again could duplicate.
                    reason = f"not confirmed, may or may not be enqueued: {exc}"
                    for n in active:
                        refused += [FailedLine(line, reason) for line in pending[n].lines]
                        pending[n] = _NOTHING
                    break
                for n in active:
                    reasons[n].update(dict.fromkeys(pending[n].ids, str(exc)))
                continue
            for n, result in zip(active, results, strict=True):
                pending[n] = self._settle(pending[n], reasons[n], result, refused)
        for batch, why in zip(pending, reasons, strict=True):
            refused += [
                FailedLine(line, why.get(entry.id, "not sent"))
                for line, entry in zip(batch.lines, batch.entries, strict=True)
            ]
        return refused

    @staticmethod
    def _settle(
        batch: _Batch, reasons: dict[str, str], result: SendResult, refused: list[FailedLine]
    ) -> _Batch:
        """What is left of ``batch`` to send; adds entries refused for good to ``refused``."""
        if not result.failed and result.sent.keys() >= set(batch.ids):
            return _NOTHING  # all sent: the usual case
        left = dict(zip(batch.ids, zip(batch.lines, batch.entries, strict=True), strict=True))
        for entry_id in result.sent:
            left.pop(entry_id, None)
        for failure in result.failed:
            reasons[failure.id] = f"{failure.code}: {failure.message}"
            if failure.sender_fault and failure.id in left:
                refused.append(FailedLine(left.pop(failure.id)[0], reasons[failure.id]))
        return _Batch([line for line, _ in left.values()], [entry for _, entry in left.values()])


def _plan(
    broker: Broker,
    options: Options,
    q: QueueOptions,
    queues: dict[str, _Lines],
    settings: SendSettings,
    on_create: Callable[[str], None] | None,
    ids: Callable[[], str],
) -> list[_Plan]:
    """Make sure every queue exists (its creation calls spent once) and split its
    lines into batches; an oversized command stops everything before a send."""
    plans = []
    for queue, queue_lines in queues.items():
        target = ensure_queue(broker, options, q, queue, on_create)
        sizes = queue_lines.sizes
        limit = _size_limit(broker, target, sizes)
        if max(sizes) > limit:
            n = next(n for n, size in enumerate(sizes) if size > limit)
            raise MessageTooLarge(
                f"{queue_lines.lines[n].where}: the command is {sizes[n]:,} bytes; queue "
                f"{target.names.main} takes at most {limit:,} (its MaximumMessageSize)"
            )
        spans = batch_spans(sizes, MAX_BATCH, BATCH_BYTES)
        group_id = None
        if target.names.fifo and not settings.group_per_message:
            group_id = settings.group_id or ids()
        plans.append(_Plan(target, queue_lines, spans, group_id))
    return plans


def enqueue_batch(
    broker: Broker,
    options: Options,
    q: QueueOptions,
    lines: Sequence[BatchLine],
    settings: SendSettings | None = None,
    *,
    on_create: Callable[[str], None] | None = None,
    progress: Callable[[int], None] | None = None,
    on_sent: Callable[[str], object] | None = None,
    ids: Callable[[], str] = new_id,
    sleep: Callable[[float], None] = time.sleep,
) -> BatchOutcome:
    """Enqueue every line, in batches of up to 10, several batches at once where the
    broker gains from it. FIFO queues keep their order: their batches go one by one.
    ``on_sent`` gets each queue's full name once, as soon as lines are on it.
    Returns what was sent and exactly which lines were not."""
    settings = settings or SendSettings()
    validate_queue_options(q)
    names = dict.fromkeys(line.queue for line in lines)  # in order of first use
    settings.check(q.fifo or any(name.endswith(".fifo") for name in names))
    queues = _group_by_queue(options, q, lines, names)
    outcome = BatchOutcome()
    plans = _plan(broker, options, q, queues, settings, on_create, ids)
    outcome.created = [name for plan in plans for name in plan.target.created]
    lock = threading.Lock()
    finished: set[int] = set()
    told: set[str] = set()

    def run(sender: _Sender, groups: list[list[range]]) -> None:
        for spans in groups:
            failed = sender.send(spans)
            count = sum(map(len, spans))
            name = sender.target.names.main
            with lock:
                outcome.per_queue[name] = outcome.per_queue.get(name, 0) + count - len(failed)
                outcome.sent += count - len(failed)
                outcome.failed += failed
                finished.update(map(id, spans))
                if progress is not None:
                    progress(count)
                tell = on_sent is not None and count > len(failed) and name not in told
                if tell:
                    told.add(name)
            if tell and on_sent is not None:
                on_sent(name)

    tasks: list[tuple[_Sender, list[list[range]]]] = []
    per_call = max(1, broker.batches_per_send)
    for plan in plans:
        sender = _Sender(broker, plan, settings, ids, sleep)
        groups = [plan.spans[i : i + per_call] for i in range(0, len(plan.spans), per_call)]
        if plan.target.names.fifo and not settings.group_per_message:
            tasks.append((sender, groups))  # one group: order matters
        else:
            tasks.extend((sender, [group]) for group in groups)
    _run_all(tasks, run, broker.send_concurrency, outcome, finished)
    outcome.failed.sort(key=lambda f: (f.line.source, f.line.lineno))
    return outcome


def _run_all(
    tasks: list[tuple[_Sender, list[list[range]]]],
    run: Callable[[_Sender, list[list[range]]], None],
    concurrency: int,
    outcome: BatchOutcome,
    finished: set[int],
) -> None:
    """Run the send tasks. Once the broker is unreachable the rest are not tried,
    and the lines of every batch not finished are reported as not enqueued."""
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        futures = [pool.submit(run, sender, batches) for sender, batches in tasks]
        for future in as_completed(futures):
            if future.cancelled():
                continue  # not started: its batches are reported below
            try:
                future.result()
            except BrokerUnavailable as exc:
                outcome.fatal = exc
                for other in futures:
                    other.cancel()
    if outcome.fatal is None:
        return
    reason = f"not enqueued: {outcome.fatal}"
    for sender, groups in tasks:
        lines = sender.plan.queue.lines
        for span in (span for spans in groups for span in spans):
            if id(span) not in finished:
                outcome.failed += [
                    FailedLine(line, reason) for line in lines[span.start : span.stop]
                ]
