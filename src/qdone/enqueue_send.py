"""enqueue-batch's sending: each queue's lines split into batches (a plan), batches
sent with retries of the entries refused, and the sends run side by side, reporting
exactly which lines were not enqueued.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from .batchfile import BATCH_BYTES, MAX_MESSAGE_BYTES, BatchLine, batch_spans
from .broker.base import MAX_BATCH, Broker, SendEntry, SendResult
from .config import Options, QueueOptions
from .enqueue_checks import BatchOutcome, FailedLine, QueueLines, SendSettings
from .errors import BrokerError, BrokerUnavailable, MessageTooLarge
from .queues import EnsuredQueue, ensure_queue

if TYPE_CHECKING:
    from .dedup import Deduper

__all__ = ["Plan", "Sender", "plan_sends", "run_all"]

# Queues made before SQS allowed 1 MiB hold at most 256 KiB; a command larger than
# this makes qdone read the queue's MaximumMessageSize before sending.
OLD_DEFAULT_SIZE = 262_144
SEND_ROUNDS = 4  # one try and three retries of the entries a batch reports failed


class _Batch(NamedTuple):
    """Lines and their entries, to send in one batch (entry ids are unique in it)."""

    lines: Sequence[BatchLine]
    entries: Sequence[SendEntry]

    @property
    def ids(self) -> list[str]:
        return [entry.id for entry in self.entries]


_ENTRY_IDS = tuple(str(n) for n in range(MAX_BATCH))
_NOTHING = _Batch((), ())


def _size_limit(broker: Broker, target: EnsuredQueue, sizes: list[int]) -> int:
    if target.created or max(sizes) <= OLD_DEFAULT_SIZE:
        return MAX_MESSAGE_BYTES  # new queues take 1 MiB; small commands fit any queue
    return int(
        broker.get_queue_attributes(target.url, ["MaximumMessageSize"])["MaximumMessageSize"]
    )


@dataclass
class Plan:
    """One queue's lines and their split into batches, as spans of its lines."""

    target: EnsuredQueue
    queue: QueueLines
    spans: list[range]
    group_id: str | None  # FIFO: every message's group, unless each has its own


class Sender:
    """Sends batches to one queue, retrying refused entries with the same ids
    (FIFO deduplication ids make a retry exact)."""

    def __init__(
        self,
        broker: Broker,
        plan: Plan,
        settings: SendSettings,
        ids: Callable[[], str],
        sleep: Callable[[float], None],
        deduper: Deduper | None = None,
    ):
        self.broker = broker
        self.plan = plan
        self.target = plan.target
        self.settings = settings
        self.ids = ids
        self.sleep = sleep
        self.deduper = deduper

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

    def send(self, spans: list[range]) -> tuple[list[FailedLine], int]:
        """Send the batches of ``spans`` (at most ``broker.batches_per_send``); return
        the lines that were not enqueued, with why, and how many were duplicates."""
        batches = self.batches(spans)
        refused: list[FailedLine] = []
        skipped = 0
        if self.deduper is not None:
            batches, skipped = self._admit(batches, refused)
        unconfirmed: list[FailedLine] = []
        refused += self._send(batches, unconfirmed)
        if self.deduper is not None and refused:
            self._release(batches, refused)
        return refused + unconfirmed, skipped

    def _admit(self, batches: list[_Batch], refused: list[FailedLine]) -> tuple[list[_Batch], int]:
        """The first copy of each command inside its window, with its deduplication
        attributes; the rest skipped (or, when that cannot be told and the user said
        so, refused)."""
        assert self.deduper is not None
        admitted, skipped = [], 0
        reason = (
            "not enqueued: duplicates could not be checked (the deduplication store "
            "did not answer) and --dedup-on-error is fail"
        )
        for batch in batches:
            admission = self.deduper.admit(batch.entries, self.target.names.fifo)
            refused += [FailedLine(batch.lines[n], reason) for n in admission.failed]
            lines = [batch.lines[n] for n in admission.keep]
            admitted.append(_Batch(lines, admission.entries))
            skipped += admission.skipped
        return [batch for batch in admitted if batch.entries], skipped

    def _release(self, batches: list[_Batch], refused: list[FailedLine]) -> None:
        """Reopen the windows of lines refused for good, so they can be enqueued again."""
        assert self.deduper is not None
        lines = {id(failed.line) for failed in refused}
        self.deduper.release(
            [
                entry
                for batch in batches
                for line, entry in zip(batch.lines, batch.entries, strict=True)
                if id(line) in lines
            ]
        )

    def _send(self, batches: list[_Batch], unconfirmed: list[FailedLine]) -> list[FailedLine]:
        """Send ``batches``, retrying refused entries; the lines refused for good (and,
        in ``unconfirmed``, those that may or may not be on the queue)."""
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
                        unconfirmed += [FailedLine(line, reason) for line in pending[n].lines]
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


def plan_sends(
    broker: Broker,
    options: Options,
    q: QueueOptions,
    queues: dict[str, QueueLines],
    settings: SendSettings,
    on_create: Callable[[str], None] | None,
    ids: Callable[[], str],
) -> list[Plan]:
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
        plans.append(Plan(target, queue_lines, spans, group_id))
    return plans


def run_all(
    tasks: list[tuple[Sender, list[list[range]]]],
    run: Callable[[Sender, list[list[range]]], None],
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
