"""Putting commands on queues: ``enqueue`` (one) and ``enqueue_batch`` (many).

The checks and result types are in ``enqueue_checks.py``; enqueue-batch's batching,
retries and concurrency in ``enqueue_send.py``.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .batchfile import BatchLine
from .broker.base import Broker, SendEntry
from .config import Options, QueueOptions
from .enqueue_checks import (
    BatchOutcome,
    EnqueueResult,
    FailedLine,
    SendSettings,
    check_command,
    group_by_queue,
)
from .errors import BrokerError, BrokerUnavailable, CacheUnavailable
from .queues import ensure_queue, validate_queue_options

if TYPE_CHECKING:
    from .dedup import Deduper

__all__ = [
    "BatchOutcome",
    "EnqueueResult",
    "FailedLine",
    "SendSettings",
    "enqueue",
    "enqueue_batch",
]


def new_id() -> str:
    return uuid.uuid4().hex


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
    deduper: Deduper | None = None,
) -> EnqueueResult:
    """Put ``command`` on ``queue``, creating the queue pair on first use;
    ``on_sent`` gets the full queue name once the message is on it. With a
    ``deduper``, a duplicate inside its window is not sent (``skipped``)."""
    settings = settings or SendSettings()
    validate_queue_options(q)
    settings.check(q.fifo or queue.endswith(".fifo"), deduper is not None)
    check_command(command, "enqueue")
    target = ensure_queue(broker, options, q, queue, on_create)  # checks names before a call
    fifo = target.names.fifo
    entry = SendEntry(
        id="0",
        body=command,
        group_id=(settings.group_id or ids()) if fifo else None,
        dedup_id=(settings.dedup_id or ids()) if fifo else None,
        delay=settings.delay,
    )
    if deduper is None:
        message_id = broker.send(target.url, entry)
    else:
        admission = deduper.admit([entry], fifo)
        if admission.failed:
            raise CacheUnavailable(
                "not enqueued: duplicates could not be checked (the deduplication store "
                "did not answer) and --dedup-on-error is fail"
            )
        if admission.skipped:
            return EnqueueResult(
                queue, "", target.created, target.names.main, True, admission.ids[0]
            )
        message_id = _send_admitted(broker, target.url, admission.entries[0], deduper)
    if on_sent is not None:
        on_sent(target.names.main)
    ident = None if deduper is None else admission.ids[0]
    return EnqueueResult(
        queue, message_id, target.created, target.names.main, dedup_id=ident, notes=target.notes
    )


def _send_admitted(broker: Broker, url: str, entry: SendEntry, deduper: Deduper) -> str:
    """Send a message that opened its window; a refusal closes the window again (a
    failure that leaves it unknown whether the message arrived keeps it)."""
    try:
        return broker.send(url, entry)
    except BrokerUnavailable:
        raise
    except BrokerError:
        deduper.release([entry])
        raise


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
    deduper: Deduper | None = None,
) -> BatchOutcome:
    """Enqueue every line, in batches of up to 10, several batches at once where the
    broker gains from it. FIFO queues keep their order: their batches go one by one.
    ``on_sent`` gets each queue's full name once, as soon as lines are on it.
    With a ``deduper``, duplicates inside their window are not sent (``skipped``).
    Returns what was sent and exactly which lines were not."""
    from .enqueue_send import Sender, plan_sends, run_all  # threads: enqueue-batch only

    settings = settings or SendSettings()
    validate_queue_options(q)
    names = dict.fromkeys(line.queue for line in lines)  # in order of first use
    settings.check(q.fifo or any(name.endswith(".fifo") for name in names), deduper is not None)
    queues = group_by_queue(options, q, lines, names)
    outcome = BatchOutcome()
    plans = plan_sends(broker, options, q, queues, settings, on_create, ids)
    outcome.created = [name for plan in plans for name in plan.target.created]
    outcome.notes = [note for plan in plans for note in plan.target.notes]
    lock = threading.Lock()
    finished: set[int] = set()
    told: set[str] = set()

    def run(sender: Sender, groups: list[list[range]]) -> None:
        for spans in groups:
            failed, skipped = sender.send(spans)
            count = sum(map(len, spans))
            name = sender.target.names.main
            sent = count - len(failed) - skipped
            with lock:
                outcome.per_queue[name] = outcome.per_queue.get(name, 0) + sent
                outcome.sent += sent
                outcome.failed += failed
                if skipped:
                    outcome.skipped += skipped
                    per_queue = outcome.skipped_per_queue
                    per_queue[name] = per_queue.get(name, 0) + skipped
                finished.update(map(id, spans))
                if progress is not None:
                    progress(count)
                tell = on_sent is not None and sent > 0 and name not in told
                if tell:
                    told.add(name)
            if tell and on_sent is not None:
                on_sent(name)

    tasks: list[tuple[Sender, list[list[range]]]] = []
    per_call = max(1, broker.batches_per_send)
    for plan in plans:
        sender = Sender(broker, plan, settings, ids, sleep, deduper)
        groups = [plan.spans[i : i + per_call] for i in range(0, len(plan.spans), per_call)]
        if plan.target.names.fifo and not settings.group_per_message:
            tasks.append((sender, groups))  # one group: order matters
        else:
            tasks.extend((sender, [group]) for group in groups)
    run_all(tasks, run, broker.send_concurrency, outcome, finished)
    outcome.failed.sort(key=lambda f: (f.line.source, f.line.lineno))
    return outcome
