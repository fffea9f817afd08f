"""Failed queues as operators see them: which failed (or dead) queue belongs to which
queue, and what jobs they hold (``qdone failed``). Moving them back is ``requeue.py``.

A *pair* is a failed queue and the queue whose redrive policy points at it
(``qdone_q_failed`` → ``qdone_q``); with ``dead``, a dead queue and the queue
whose failed queue redrives into it (``qdone_q_dead`` → ``qdone_q``). Names are
given as to ``enqueue`` (``q``, or ``q_failed``: the same pair) or as ``*``
wildcards. Every pair is checked before anything is read or moved: a missing
queue, a wildcard matching nothing, or a queue that no redrive policy points at
is a ``UsageError`` and changes nothing.

Listing changes nothing on the SQLite store (one read). On SQS there is no way to
look at a message but to receive it: each listed message is received once, hidden
while the listing runs (so that no message is received twice by one listing), then
made visible again. Each listing so adds exactly one to each listed message's
receive count; on a failed queue with a dead queue behind it (``--dlq``), that
receive counts toward ``--dlq-after`` like a worker's.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from .broker.base import MAX_BATCH, Broker, ChangeVisibility, Message, MessageStore
from .config import Options
from .errors import BrokerError, QueueNotFound, UsageError
from .naming import FIFO_SUFFIX, is_wildcard, strip_fifo, wildcard_prefix
from .queues import names_for

__all__ = [
    "LIST_HOLD",
    "FailedJob",
    "Listing",
    "Pair",
    "find_pairs",
    "list_failed",
]

#: Seconds a listed SQS message stays hidden: the listing must end within it, or a
#: message may be received (and counted) twice.
LIST_HOLD = 60
SQS_WAIT = 1  # a receive's wait: a long poll asks every SQS server


@dataclass(frozen=True)
class Pair:
    """A failed (or dead) queue and the queue its jobs came from."""

    source: str  # full name of the failed or dead queue
    source_url: str
    target: str  # full name of the queue
    target_url: str
    fifo: bool


def _base(name: str, options: Options, dead: bool) -> str | None:
    """The queue of failed (or dead) queue ``name``; None if ``name`` is not one."""
    suffix = options.dlq_suffix if dead else options.fail_suffix
    end = FIFO_SUFFIX if name.endswith(FIFO_SUFFIX) else ""
    stem = strip_fifo(name)
    return stem[: -len(suffix)] + end if stem.endswith(suffix) else None


def _redrive_target(broker: Broker, url: str) -> str | None:
    policy = broker.get_queue_attributes(url, ["RedrivePolicy"]).get("RedrivePolicy")
    try:
        return str(json.loads(policy)["deadLetterTargetArn"]) if policy else None
    except (ValueError, KeyError, TypeError):
        return None


def _check_pair(broker: Broker, options: Options, pair: Pair, dead: bool) -> str | None:
    """Why ``pair.source`` is not the failed (dead) queue of ``pair.target``, or None."""
    via = pair.target_url
    if dead:
        failed = names_for(options, pair.target, pair.fifo).failed
        try:
            via = broker.get_queue_url(failed)
        except QueueNotFound:
            return f"{pair.source} is not a dead queue: {failed} does not exist"
    arn = broker.queue_arn(pair.source_url)
    if _redrive_target(broker, via) != arn:
        return (
            f"{pair.source} is not the {'dead' if dead else 'failed'} queue of {pair.target}: "
            f"{broker.queue_name(via)} has no redrive policy pointing at it"
        )
    return None


def _named(broker: Broker, options: Options, given: str, fifo: bool, dead: bool) -> Pair:
    names = names_for(options, given, fifo)
    main = _base(names.main, options, dead) or names.main
    names = names_for(options, main, fifo)
    source = names.dead if dead else names.failed
    urls = []
    for name in (source, names.main):
        try:
            urls.append(broker.get_queue_url(name))
        except QueueNotFound as exc:
            raise UsageError(f"queue {name} does not exist (from {given!r})") from exc
    return Pair(source, urls[0], names.main, urls[1], names.fifo)


def _matched(broker: Broker, options: Options, pattern: str, fifo: bool, dead: bool) -> list[Pair]:
    urls = {
        broker.queue_name(u): u
        for u in broker.list_queues(wildcard_prefix(pattern, options.prefix))
    }
    pairs = []
    for name, url in sorted(urls.items()):
        main = _base(name, options, dead)
        if main is None or main not in urls or (fifo and not name.endswith(FIFO_SUFFIX)):
            continue
        pairs.append(Pair(name, url, main, urls[main], name.endswith(FIFO_SUFFIX)))
    return pairs


def _add_matched(
    broker: Broker,
    options: Options,
    spec: str,
    fifo: bool,
    dead: bool,
    found: dict[str, Pair],
    skipped: list[str],
) -> None:
    """Add to ``found`` the checked pairs that wildcard ``spec`` matches; those that
    fail the check go to ``skipped``. None at all is a ``UsageError``."""
    kept = 0
    for pair in _matched(broker, options, spec, fifo, dead):
        why = None if pair.source in found else _check_pair(broker, options, pair, dead)
        if why is None:
            found.setdefault(pair.source, pair)
            kept += 1
        else:
            skipped.append(why)
    if not kept:
        kind = "dead" if dead else "failed"
        why = f": {skipped[-1]}" if skipped else ""
        raise UsageError(f"no {kind} queue matches {spec!r} (with its queue){why}")


def find_pairs(
    broker: Broker,
    options: Options,
    specs: Iterable[str],
    *,
    fifo: bool = False,
    dead: bool = False,
) -> tuple[list[Pair], list[str]]:
    """The pairs that ``specs`` name, each checked, and warnings about wildcard
    matches left out (not a failed queue of its queue). Raises ``UsageError`` for a
    missing queue, a wildcard matching nothing or a named queue that is no failed
    (dead) queue: nothing has been read or changed then."""
    found: dict[str, Pair] = {}
    skipped: list[str] = []
    for spec in specs:
        if is_wildcard(spec):
            _add_matched(broker, options, spec, fifo, dead, found, skipped)
            continue
        pair = _named(broker, options, spec, fifo, dead)
        why = _check_pair(broker, options, pair, dead)
        if why is not None:
            raise UsageError(why)
        found.setdefault(pair.source, pair)
    return list(found.values()), skipped


# -- listing -----------------------------------------------------------------------


@dataclass(frozen=True)
class FailedJob:
    """A job in a failed (or dead) queue."""

    queue: str  # the failed queue's full name
    job: str  # message id
    command: str
    group: str | None
    enqueued_at: float  # first sent
    receives: int  # receives before this listing (SQLite: in this queue)
    failed_at: float | None  # SQLite: when the redrive moved it here; SQS does not say
    first_received_at: float | None  # SQS: its first receive (its first run started)


@dataclass(frozen=True)
class Listing:
    pairs: list[Pair]  # those read (--limit may stop before the last)
    jobs: list[FailedJob]
    skipped: list[str]  # wildcard matches that are not failed queues
    received: bool  # SQS: listing received each job once
    unreleased: int = 0  # SQS: listed jobs left hidden until LIST_HOLD ends (a call failed)


def list_failed(
    broker: Broker,
    options: Options,
    specs: Iterable[str],
    *,
    limit: int | None = None,
    fifo: bool = False,
    dead: bool = False,
) -> Listing:
    """The jobs in the failed (with ``dead``: dead) queues of ``specs``, at most
    ``limit`` in all; see the module docstring for what it costs and changes."""
    pairs, skipped = find_pairs(broker, options, specs, fifo=fifo, dead=dead)
    jobs: list[FailedJob] = []
    unreleased = 0
    read: list[Pair] = []
    for pair in pairs:
        left = None if limit is None else limit - len(jobs)
        if left == 0:
            break
        read.append(pair)
        if isinstance(broker, MessageStore):
            jobs += _peeked(broker, pair, left)
            continue
        received, kept = _receive_all(broker, pair.source_url, left)
        unreleased += kept
        jobs += [_received(pair, m) for m in received]
    received_any = not isinstance(broker, MessageStore)
    return Listing(read, jobs, skipped, received_any, unreleased)


def _peeked(store: MessageStore, pair: Pair, limit: int | None) -> list[FailedJob]:
    stored = store.peek(pair.source_url, limit if limit is not None else 2**62)
    return [
        FailedJob(
            queue=pair.source,
            job=m.message_id,
            command=m.body,
            group=m.group_id,
            enqueued_at=m.sent_at,
            receives=m.receive_count,
            failed_at=m.moved_at,
            first_received_at=None,
        )
        for m in stored
    ]


def _received(pair: Pair, m: Message) -> FailedJob:
    return FailedJob(
        queue=pair.source,
        job=m.message_id,
        command=m.body,
        group=m.group_id,
        enqueued_at=m.sent_at,
        receives=m.receive_count - 1,  # without the listing's own
        failed_at=None,
        first_received_at=m.first_received_at,
    )


def _receive_all(broker: Broker, url: str, limit: int | None) -> tuple[list[Message], int]:
    """Receive every visible message once (up to ``limit``), holding each hidden
    until all are read, then make them all visible again; and how many could not
    be (they come back when ``LIST_HOLD`` ends)."""
    held: dict[str, Message] = {}
    try:
        while limit is None or len(held) < limit:
            want = MAX_BATCH if limit is None else min(MAX_BATCH, limit - len(held))
            got = broker.receive(url, want, LIST_HOLD, SQS_WAIT)
            # Only messages already read: the listing outlived LIST_HOLD; it is done.
            if all(m.message_id in held for m in got):
                break
            held.update((m.message_id, m) for m in got)  # the latest receipt counts
    finally:
        kept = _release(broker, url, list(held.values()))
    return list(held.values()), kept


def _release(broker: Broker, url: str, messages: list[Message]) -> int:
    """Make ``messages`` visible at once; the number left hidden."""
    kept = 0
    for i in range(0, len(messages), MAX_BATCH):
        batch = messages[i : i + MAX_BATCH]
        entries = [ChangeVisibility(str(n), m.receipt, 0) for n, m in enumerate(batch)]
        try:
            kept += len(broker.change_visibility_batch(url, entries).failed)
        except BrokerError:
            kept += len(batch)
    return kept
