"""``qdone monitor``: message counts of matching queues and their failed queues.

A snapshot reads, for each queue matching the patterns (names or ``*``
wildcards; failed and dead queues are shown with their queue, not on their
own), the approximate visible, in-flight and delayed counts of the queue and
of its failed queue: one ``GetQueueAttributes`` each, after one ``ListQueues``
per wildcard. A queue deleted during a scan is left out of that snapshot.

Saving to CloudWatch (SQS only) keeps Node qdone's layout, so existing alarms
keep working: namespace ``qmonitor``, one dimension ``queueName`` whose value is
the pattern with the prefix (``qdone_jobs*``, or ``qdone_jobs`` for a name),
unit Count. For each pattern:

- ``totalQueues``: queues matched, failed queues included;
- ``contributingQueueCount``: those holding at least one message;
- ``ApproximateNumberOfMessages``, ``ApproximateNumberOfMessagesNotVisible``,
  ``ApproximateNumberOfMessagesDelayed``: sums over the queues and their failed
  queues (as Node qdone, whose wildcards matched failed queues too);
- ``FailedApproximateNumberOfMessages``, ``FailedApproximateNumberOfMessagesNotVisible``,
  ``FailedApproximateNumberOfMessagesDelayed``: sums over the failed queues
  alone, to alarm on jobs that failed.

A queue matching two patterns is counted under the first.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from .broker.base import Broker
from .config import Options
from .errors import QueueNotFound, UsageError
from .matching import Counts, Matched, failed_name, match_queues, read_counts
from .naming import is_wildcard, short_name, wildcard_prefix
from .queues import names_for

__all__ = [
    "DIMENSION",
    "NAMESPACE",
    "MetricSink",
    "Row",
    "Snapshot",
    "metrics",
    "pattern_label",
    "require_sink",
    "save",
    "take_snapshot",
    "watch",
]

NAMESPACE = "qmonitor"
DIMENSION = "queueName"

Metric = tuple[str, float, dict[str, str]]


@runtime_checkable
class MetricSink(Protocol):
    """A broker that can publish metrics (the SQS broker, to CloudWatch)."""

    def put_metric_data(self, namespace: str, metrics: Sequence[Metric]) -> None: ...


@dataclass(frozen=True)
class Row:
    """One queue: its counts, and its failed queue's (None when it has none)."""

    name: str  # without prefix
    pattern: str  # the pattern that matched it, as given
    counts: Counts
    failed: Counts | None
    full_name: str = ""  # with the prefix


@dataclass(frozen=True)
class Snapshot:
    rows: list[Row]
    taken_at: float
    missing: list[str] = field(default_factory=list)  # names given that do not exist

    @property
    def totals(self) -> Counts:
        return sum((r.counts for r in self.rows), Counts())

    @property
    def failed_totals(self) -> Counts:
        return sum((r.failed for r in self.rows if r.failed is not None), Counts())


def _failed_counts(broker: Broker, name: str, matched: Matched) -> Counts | None:
    try:
        url = matched.known.get(name) or broker.get_queue_url(name)
        return read_counts(broker, url)
    except QueueNotFound:
        return None


def _rows(
    broker: Broker, options: Options, pattern: str, matched: Matched, seen: set[str]
) -> list[Row]:
    rows = []
    for name, url in matched.queues:
        if name in seen:
            continue
        seen.add(name)
        try:
            counts = read_counts(broker, url)
        except QueueNotFound:
            continue  # deleted since it was listed
        failed = _failed_counts(broker, failed_name(name, options), matched)
        rows.append(Row(short_name(name, options.prefix), pattern, counts, failed, name))
    return rows


def take_snapshot(
    broker: Broker,
    options: Options,
    patterns: Sequence[str],
    clock: Callable[[], float] = time.time,
) -> Snapshot:
    """The counts of every matching queue and its failed queue, now."""
    rows: list[Row] = []
    missing: list[str] = []
    seen: set[str] = set()
    for pattern in patterns:
        matched = match_queues(broker, options, [pattern])
        missing.extend(matched.missing)
        rows.extend(_rows(broker, options, pattern, matched, seen))
    return Snapshot(rows, clock(), missing)


def pattern_label(options: Options, pattern: str) -> str:
    """The ``queueName`` dimension of a pattern: with the prefix, as Node qdone."""
    if is_wildcard(pattern):
        return wildcard_prefix(pattern, options.prefix) + "*"
    return names_for(options, pattern, fifo=False).main


def _pattern_metrics(rows: Sequence[Row]) -> list[tuple[str, float]]:
    all_counts = [r.counts for r in rows] + [r.failed for r in rows if r.failed is not None]
    failed = sum((r.failed for r in rows if r.failed is not None), Counts())
    total = sum(all_counts, Counts())
    return [
        ("totalQueues", len(all_counts)),
        ("contributingQueueCount", sum(1 for c in all_counts if c.total)),
        ("ApproximateNumberOfMessages", total.visible),
        ("ApproximateNumberOfMessagesNotVisible", total.in_flight),
        ("ApproximateNumberOfMessagesDelayed", total.delayed),
        ("FailedApproximateNumberOfMessages", failed.visible),
        ("FailedApproximateNumberOfMessagesNotVisible", failed.in_flight),
        ("FailedApproximateNumberOfMessagesDelayed", failed.delayed),
    ]


def metrics(snapshot: Snapshot, options: Options, patterns: Sequence[str]) -> list[Metric]:
    """The metrics ``save`` publishes (see the module docstring), for every pattern."""
    result: list[Metric] = []
    for pattern in dict.fromkeys(patterns):
        rows = [r for r in snapshot.rows if r.pattern == pattern]
        dimensions = {DIMENSION: pattern_label(options, pattern)}
        result.extend((name, float(v), dimensions) for name, v in _pattern_metrics(rows))
    return result


def require_sink(broker: Broker) -> MetricSink:
    """The broker as a MetricSink; a UsageError if it cannot publish metrics."""
    if not isinstance(broker, MetricSink):
        raise UsageError(
            f"--save publishes to CloudWatch and needs --broker sqs; "
            f"the broker in use is {broker.describe()}"
        )
    return broker


def save(broker: Broker, snapshot: Snapshot, options: Options, patterns: Sequence[str]) -> int:
    """Publish the snapshot's totals to CloudWatch; returns how many metrics."""
    data = metrics(snapshot, options, patterns)
    require_sink(broker).put_metric_data(NAMESPACE, data)
    return len(data)


def watch(
    take: Callable[[], Snapshot],
    show: Callable[[Snapshot], None],
    *,
    interval: float,
    once: bool = False,
    sleep: Callable[[float], None] | None = None,
    limit: int | None = None,
) -> int:
    """Take and show snapshots every ``interval`` seconds: once, ``limit`` times, or
    until interrupted (KeyboardInterrupt propagates). Returns how many were shown."""
    pause = sleep or time.sleep  # looked up late, so tests can patch it
    shown = 0
    while True:
        show(take())
        shown += 1
        if once or (limit is not None and shown >= limit):
            return shown
        pause(interval)
