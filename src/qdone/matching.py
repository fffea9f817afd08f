"""Queues by pattern, and their counts: names and ``*`` wildcards resolved to urls
(failed queues left out unless asked for, a queue's failed queue found by name), and
a queue's approximate message counts. Shared by idle-queues, check and monitor.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .broker.base import Broker
from .config import Options
from .errors import QueueNotFound
from .naming import FIFO_SUFFIX, is_wildcard, strip_fifo, wildcard_prefix
from .queues import names_for, validate_patterns

__all__ = [
    "COUNT_ATTRIBUTES",
    "Counts",
    "Matched",
    "failed_name",
    "is_failed_name",
    "match_queues",
    "read_counts",
]

COUNT_ATTRIBUTES = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
)


# -- matching -------------------------------------------------------------------


@dataclass
class Matched:
    """Queues matching the patterns, in the order given, without duplicates.

    ``known`` maps every full name seen in a listing to its url, so that a
    pair's failed queue is found without another call. ``missing`` holds names
    given explicitly that do not exist; ``excluded`` failed (or dead) queues
    that a name given explicitly pointed at.
    """

    queues: list[tuple[str, str]] = field(default_factory=list)  # (full name, url)
    known: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)


def is_failed_name(name: str, options: Options) -> bool:
    """Whether ``name`` is a failed (or dead) queue by its suffix."""
    base = strip_fifo(name)
    return base.endswith(options.fail_suffix) or base.endswith(options.dlq_suffix)


def failed_name(main: str, options: Options) -> str:
    """The failed queue of queue ``main`` (``qdone_x.fifo`` -> ``qdone_x_failed.fifo``)."""
    end = FIFO_SUFFIX if main.endswith(FIFO_SUFFIX) else ""
    return strip_fifo(main) + options.fail_suffix + end


def match_queues(
    broker: Broker, options: Options, patterns: Iterable[str], *, include_failed: bool = False
) -> Matched:
    """Resolve names and ``*`` wildcards: a wildcard lists queues by prefix, a name is
    looked up. Failed and dead queues are left out unless ``include_failed``."""
    patterns = list(patterns)
    validate_patterns(options, patterns)
    matched = Matched()
    seen: set[str] = set()

    def add(name: str, url: str) -> None:
        if name not in seen:
            seen.add(name)
            matched.queues.append((name, url))

    for pattern in patterns:
        if is_wildcard(pattern):
            for url in broker.list_queues(wildcard_prefix(pattern, options.prefix)):
                name = broker.queue_name(url)
                matched.known[name] = url
                if include_failed or not is_failed_name(name, options):
                    add(name, url)
            continue
        name = names_for(options, pattern, fifo=False).main
        if not include_failed and is_failed_name(name, options):
            matched.excluded.append(name)
            continue
        try:
            url = broker.get_queue_url(name)
        except QueueNotFound:
            matched.missing.append(name)
            continue
        matched.known[name] = url
        add(name, url)
    return matched


# -- counts ---------------------------------------------------------------------


@dataclass(frozen=True)
class Counts:
    """A queue's approximate message counts."""

    visible: int = 0
    in_flight: int = 0
    delayed: int = 0

    @property
    def total(self) -> int:
        return self.visible + self.in_flight + self.delayed

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.visible + other.visible,
            self.in_flight + other.in_flight,
            self.delayed + other.delayed,
        )

    def describe(self) -> str:
        return f"{self.visible} visible, {self.in_flight} in flight, {self.delayed} delayed"


def read_counts(broker: Broker, url: str) -> Counts:
    """One ``GetQueueAttributes``; raises ``QueueNotFound``."""
    attributes = broker.get_queue_attributes(url, COUNT_ATTRIBUTES)
    visible, in_flight, delayed = (int(attributes.get(k, "0")) for k in COUNT_ATTRIBUTES)
    return Counts(visible, in_flight, delayed)
