"""Putting commands on queues: ``enqueue`` (one) and ``enqueue_batch`` (many)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import NamedTuple

from .batchfile import BATCH_BYTES, MAX_MESSAGE_BYTES, BatchLine, split_batches
from .broker.base import Broker, SendEntry, SendResult, invalid_character
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
    ids: Callable[[], str] = new_id,
) -> EnqueueResult:
    """Put ``command`` on ``queue``, creating the queue pair on first use."""
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


class _Job(NamedTuple):
    line: BatchLine
    entry: SendEntry
    size: int


def _group_by_queue(
    options: Options, q: QueueOptions, lines: Sequence[BatchLine]
) -> dict[str, list[tuple[BatchLine, int]]]:
    """Each queue's lines with their commands' sizes in bytes, in input order. The
    whole input is checked before anything is sent: names, empty or huge commands."""
    queues: dict[str, list[tuple[BatchLine, int]]] = {}
    for line in lines:
        queue_lines = queues.get(line.queue)
        if queue_lines is None:
            try:
                names_for(options, line.queue, q.fifo)
            except UsageError as exc:
                raise type(exc)(f"{line.where}: {exc}") from exc
            queue_lines = queues[line.queue] = []
        command = line.command
        size = len(command.encode())
        if size > MAX_MESSAGE_BYTES or not command.strip() or not command.isprintable():
            _check_command(command, line.where)
        queue_lines.append((line, size))
    return queues


def _jobs_for(
    lines: list[tuple[BatchLine, int]],
    fifo: bool,
    settings: SendSettings,
    ids: Callable[[], str],
) -> list[_Job]:
    if not fifo:
        delay = settings.delay
        return [
            _Job(line, SendEntry(str(n), line.command, None, None, delay), size)
            for n, (line, size) in enumerate(lines)
        ]
    group = settings.group_id or ids()
    jobs = []
    for n, (line, size) in enumerate(lines):
        group_id = ids() if settings.group_per_message else group
        entry = SendEntry(str(n), line.command, group_id, ids(), settings.delay)
        jobs.append(_Job(line, entry, size))
    return jobs


def _size_limit(broker: Broker, target: EnsuredQueue, jobs: list[_Job]) -> int:
    if target.created or max(j.size for j in jobs) <= OLD_DEFAULT_SIZE:
        return MAX_MESSAGE_BYTES  # new queues take 1 MiB; small commands fit any queue
    return int(
        broker.get_queue_attributes(target.url, ["MaximumMessageSize"])["MaximumMessageSize"]
    )


class _Sender:
    """Sends batches to one queue, retrying refused entries with the same ids
    (FIFO deduplication ids make a retry exact)."""

    def __init__(self, broker: Broker, target: EnsuredQueue, sleep: Callable[[float], None]):
        self.broker = broker
        self.target = target
        self.sleep = sleep

    def send(self, batches: list[list[_Job]]) -> list[FailedLine]:
        """Send ``batches`` (at most ``broker.batches_per_send``); return the lines
        that were not enqueued, with why."""
        pending = [{job.entry.id: job for job in batch} for batch in batches]
        reasons: list[dict[str, str]] = [{} for _ in batches]
        refused: list[FailedLine] = []
        for attempt in range(SEND_ROUNDS):
            active = [n for n, jobs in enumerate(pending) if jobs]
            if not active:
                break
            if attempt:
                self.sleep(0.1 * 2**attempt)
            try:
                results = self.broker.send_batches(
                    self.target.url, [[j.entry for j in pending[n].values()] for n in active]
                )
            except BrokerUnavailable:
                raise
            except BrokerError as exc:
                if not self.target.names.fifo:
                    # The call may have reached the queue: sending again could duplicate.
                    reason = f"not confirmed, may or may not be enqueued: {exc}"
                    for n in active:
                        refused += [FailedLine(job.line, reason) for job in pending[n].values()]
                        pending[n] = {}
                    break
                for n in active:
                    reasons[n].update(dict.fromkeys(pending[n], str(exc)))
                continue
            for n, result in zip(active, results, strict=True):
                refused += self._settle(pending[n], reasons[n], result)
        for jobs, why in zip(pending, reasons, strict=True):
            refused += [FailedLine(job.line, why.get(i, "not sent")) for i, job in jobs.items()]
        return refused

    @staticmethod
    def _settle(
        pending: dict[str, _Job], reasons: dict[str, str], result: SendResult
    ) -> list[FailedLine]:
        """Drop what was sent from ``pending``; return entries refused for good."""
        for entry_id in result.sent:
            pending.pop(entry_id, None)
        refused = []
        for failure in result.failed:
            reasons[failure.id] = f"{failure.code}: {failure.message}"
            if failure.sender_fault and failure.id in pending:
                refused.append(FailedLine(pending.pop(failure.id).line, reasons[failure.id]))
        return refused


@dataclass
class _Plan:
    target: EnsuredQueue
    batches: list[list[_Job]]


def _plan(
    broker: Broker,
    options: Options,
    q: QueueOptions,
    queues: dict[str, list[tuple[BatchLine, int]]],
    settings: SendSettings,
    on_create: Callable[[str], None] | None,
    ids: Callable[[], str],
) -> list[_Plan]:
    """Make sure every queue exists (its creation calls spent once) and split its
    lines into batches; an oversized command stops everything before a send."""
    plans = []
    for queue, queue_lines in queues.items():
        target = ensure_queue(broker, options, q, queue, on_create)
        jobs = _jobs_for(queue_lines, target.names.fifo, settings, ids)
        limit = _size_limit(broker, target, jobs)
        for job in jobs:
            if job.size > limit:
                raise MessageTooLarge(
                    f"{job.line.where}: the command is {job.size:,} bytes; queue "
                    f"{target.names.main} takes at most {limit:,} (its MaximumMessageSize)"
                )
        plans.append(_Plan(target, split_batches(jobs, lambda j: j.size, 10, BATCH_BYTES)))
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
    ids: Callable[[], str] = new_id,
    sleep: Callable[[float], None] = time.sleep,
) -> BatchOutcome:
    """Enqueue every line, in batches of up to 10, several batches at once where the
    broker gains from it. FIFO queues keep their order: their batches go one by one.
    Returns what was sent and exactly which lines were not."""
    settings = settings or SendSettings()
    validate_queue_options(q)
    settings.check(q.fifo or any(line.queue.endswith(".fifo") for line in lines))
    queues = _group_by_queue(options, q, lines)
    outcome = BatchOutcome()
    plans = _plan(broker, options, q, queues, settings, on_create, ids)
    outcome.created = [name for plan in plans for name in plan.target.created]
    lock = threading.Lock()
    finished: set[int] = set()

    def run(sender: _Sender, groups: list[list[list[_Job]]]) -> None:
        for batches in groups:
            failed = sender.send(batches)
            count = sum(len(batch) for batch in batches)
            with lock:
                name = sender.target.names.main
                outcome.per_queue[name] = outcome.per_queue.get(name, 0) + count - len(failed)
                outcome.sent += count - len(failed)
                outcome.failed += failed
                finished.update(id(batch) for batch in batches)
                if progress is not None:
                    progress(count)

    tasks: list[tuple[_Sender, list[list[list[_Job]]]]] = []
    per_call = max(1, broker.batches_per_send)
    for plan in plans:
        sender = _Sender(broker, plan.target, sleep)
        groups = [plan.batches[i : i + per_call] for i in range(0, len(plan.batches), per_call)]
        if plan.target.names.fifo and not settings.group_per_message:
            tasks.append((sender, groups))  # one group: order matters
        else:
            tasks.extend((sender, [group]) for group in groups)
    _run_all(tasks, run, broker.send_concurrency, outcome, finished)
    outcome.failed.sort(key=lambda f: (f.line.source, f.line.lineno))
    return outcome


def _run_all(
    tasks: list[tuple[_Sender, list[list[list[_Job]]]]],
    run: Callable[[_Sender, list[list[list[_Job]]]], None],
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
    for _, groups in tasks:
        for batch in (batch for batches in groups for batch in batches):
            if id(batch) not in finished:
                reason = f"not enqueued: {outcome.fatal}"
                outcome.failed += [FailedLine(job.line, reason) for job in batch]
