"""``qdone requeue``: move jobs from failed (or dead) queues back to their queue, so
that the normal workers run them again.

The SQLite store moves up to ten messages per transaction (``MessageStore.move``):
each job moves exactly once, with a fresh receive count.

On SQS a job is copied, then deleted: receive up to ten from the failed queue
(hidden for ``REQUEUE_HOLD`` s), send them to the queue in one
``SendMessageBatch`` (body, message attributes and, on FIFO queues, the group id,
with the failed message's id as deduplication id), and delete from the failed
queue only those whose copy was accepted, in one ``DeleteMessageBatch``: three
calls per ten jobs, nothing lost. A job can be requeued twice: when the answer to
a send is lost after SQS took it (botocore sends it again: a standard queue keeps
both; a FIFO queue drops the second within its 5-minute deduplication window), or
when a delete fails after its retries (the job stays in the failed queue too; a
message received again in the same run is deleted, not copied again).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from .broker.base import (
    MAX_BATCH,
    Broker,
    ChangeVisibility,
    Message,
    MessageStore,
    Receipt,
    SendEntry,
)
from .config import Options
from .errors import BrokerError
from .failed import SQS_WAIT, Pair, find_pairs
from .matching import read_counts

__all__ = ["REQUEUE_HOLD", "Moved", "RequeueResult", "requeue"]

#: Seconds a message being requeued on SQS stays hidden: long enough for its copy
#: and delete, short enough that one left behind by a crash comes back soon.
REQUEUE_HOLD = 60
_TRIES = 3  # sends of one message in a run before it is left in the failed queue


@dataclass
class Moved:
    """What requeue did (or, dry, would do) for one pair."""

    pair: Pair
    requeued: int = 0  # copies accepted by the queue (SQLite: moved)
    planned: int = 0  # dry run: jobs it would requeue (SQS: from the approximate count)
    not_sent: int = 0  # left in the failed queue: the queue refused them, or calls failed
    not_deleted: int = 0  # requeued, but also still in the failed queue (a delete failed)
    remaining: int | None = None  # SQS, no --limit: messages left in the failed queue
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RequeueResult:
    moved: list[Moved]
    skipped: list[str]  # wildcard matches that are not failed queues
    dry_run: bool

    @property
    def ok(self) -> bool:
        return not any(m.not_sent or m.not_deleted or m.errors for m in self.moved)


def requeue(
    broker: Broker,
    options: Options,
    specs: Iterable[str],
    *,
    limit: int | None = None,
    dry_run: bool = False,
    fifo: bool = False,
    dead: bool = False,
    hold: int = REQUEUE_HOLD,
) -> RequeueResult:
    """Move up to ``limit`` jobs (in all) from the failed (``dead``: dead) queues of
    ``specs`` to their queues. ``dry_run`` changes nothing and receives nothing."""
    pairs, skipped = find_pairs(broker, options, specs, fifo=fifo, dead=dead)
    moved: list[Moved] = []
    left = limit
    for pair in pairs:
        if left == 0:
            break
        outcome = Moved(pair)
        if dry_run:
            count = read_counts(broker, pair.source_url).visible
            outcome.planned = count if left is None else min(left, count)
            done = outcome.planned
        elif isinstance(broker, MessageStore):
            done = _move(broker, pair, left, outcome)
        else:
            done = _copy_then_delete(broker, pair, left, outcome, hold)
            if left is None:
                counts = read_counts(broker, pair.source_url)
                outcome.remaining = counts.visible + counts.in_flight
        moved.append(outcome)
        left = None if left is None else left - done
    return RequeueResult(moved, skipped, dry_run)


def _move(store: MessageStore, pair: Pair, limit: int | None, outcome: Moved) -> int:
    while limit is None or outcome.requeued < limit:
        want = MAX_BATCH if limit is None else min(MAX_BATCH, limit - outcome.requeued)
        got = store.move(pair.source_url, pair.target_url, want)
        if not got:
            break
        outcome.requeued += len(got)
    return outcome.requeued


class _Copier:
    """The SQS way for one pair: copy, then delete what was copied."""

    def __init__(self, broker: Broker, pair: Pair, outcome: Moved) -> None:
        self.broker = broker
        self.pair = pair
        self.outcome = outcome
        self.copied: set[str] = set()  # message ids whose copy the queue accepted
        self.tries: dict[str, int] = {}
        self.undeleted: dict[str, Message] = {}  # copied, delete failed: tried again at the end

    def batch(self, messages: list[Message]) -> None:
        fresh = [m for m in messages if m.message_id not in self.copied]
        unsent = self._send(fresh) if fresh else []
        self._delete([m for m in messages if m.message_id in self.copied])
        if unsent:
            self._release(unsent)

    def _send(self, messages: list[Message]) -> list[Message]:
        """Copy ``messages`` to the queue; those not accepted."""
        entries = [
            SendEntry(
                id=str(n),
                body=m.body,
                group_id=m.group_id if self.pair.fifo else None,
                dedup_id=m.message_id if self.pair.fifo else None,
                attributes=m.attributes,
            )
            for n, m in enumerate(messages)
        ]
        try:
            result = self.broker.send_batch(self.pair.target_url, entries)
        except BrokerError as exc:
            self.outcome.errors.append(f"sending {len(messages)} to {self.pair.target}: {exc}")
            return messages
        for n, m in enumerate(messages):
            if str(n) in result.sent:
                self.copied.add(m.message_id)
                self.outcome.requeued += 1
        for failed in result.failed:
            self.outcome.errors.append(f"{self.pair.target} refused a job: {failed.message}")
        return [m for n, m in enumerate(messages) if str(n) not in result.sent]

    def _delete(self, messages: list[Message]) -> None:
        if not messages:
            return
        entries = [Receipt(str(n), m.receipt) for n, m in enumerate(messages)]
        try:
            result = self.broker.delete_batch(self.pair.source_url, entries)
        except BrokerError:
            failed = {str(n) for n in range(len(messages))}
        else:
            failed = {f.id for f in result.failed}
        for n, m in enumerate(messages):
            if str(n) in failed:
                self.undeleted[m.message_id] = m
            else:
                self.undeleted.pop(m.message_id, None)

    def _release(self, unsent: list[Message]) -> None:
        """Let messages not copied be received again in this run, up to ``_TRIES``."""
        again = []
        for m in unsent:
            self.tries[m.message_id] = self.tries.get(m.message_id, 0) + 1
            if self.tries[m.message_id] < _TRIES:
                again.append(m)
        entries = [ChangeVisibility(str(n), m.receipt, 0) for n, m in enumerate(again)]
        if entries:
            # If this fails they come back when the hold ends; counted as not sent.
            with contextlib.suppress(BrokerError):
                self.broker.change_visibility_batch(self.pair.source_url, entries)

    def finish(self) -> None:
        """Try the failed deletes once more; count what is left."""
        left = list(self.undeleted.values())
        for i in range(0, len(left), MAX_BATCH):
            self._delete(left[i : i + MAX_BATCH])
        self.outcome.not_deleted = len(self.undeleted)
        self.outcome.not_sent = len(set(self.tries) - self.copied)


def _copy_then_delete(
    broker: Broker, pair: Pair, limit: int | None, outcome: Moved, hold: int
) -> int:
    copier = _Copier(broker, pair, outcome)
    try:
        while limit is None or outcome.requeued < limit:
            want = MAX_BATCH if limit is None else min(MAX_BATCH, limit - outcome.requeued)
            try:
                got = broker.receive(pair.source_url, want, hold, SQS_WAIT)
            except BrokerError as exc:
                outcome.errors.append(f"receiving from {pair.source}: {exc}")
                break
            if not got:
                break
            copier.batch(got)
    finally:
        copier.finish()
    return outcome.requeued
