"""Where the worker learns, without receiving, that a queue holds work.

A *counts source* reads a queue's approximate counts (visible, delayed): from the
broker (one GetQueueAttributes), or through a cache a fleet of workers shares. A
*wake-up source* yields the names of queues that producers just sent to. Both
consume nothing, so neither needs a job slot. The worker takes them as
arguments; a cache that fails falls back to the broker (it never decides
correctness).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Protocol

from ..broker.base import Broker
from .queues import QueueRef

__all__ = [
    "BrokerCounts",
    "CacheWakes",
    "CachedCounts",
    "Counts",
    "CountsSource",
    "SharedCache",
    "WakeSource",
]

COUNT_ATTRIBUTES = ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesDelayed")
# Read for a shared check: Node qdone's workers also want NotVisible (its "idle").
SHARED_ATTRIBUTES = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
)
WAKE_WAIT = 1.0  # s: the longest a wake-up read blocks, so a stop is seen soon

#: (visible, delayed) messages of a queue, approximate.
Counts = tuple[int, int]


class CountsSource(Protocol):
    def counts(self, queue: QueueRef) -> Counts:
        """The queue's counts; raises ``BrokerError`` (``QueueNotFound``)."""


class WakeSource(Protocol):
    def wakes(self) -> Iterator[str]:
        """Full names of queues that just got work, as they come; ends when closed."""

    def close(self) -> None:
        """Stop ``wakes`` (called from another thread)."""


class BrokerCounts:
    """Counts from the broker itself: one GetQueueAttributes a check."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def counts(self, queue: QueueRef) -> Counts:
        return parse_counts(self.broker.get_queue_attributes(queue.url, COUNT_ATTRIBUTES))


def parse_counts(attributes: dict[str, str]) -> Counts:
    """(visible, delayed) from GetQueueAttributes' answer."""
    return (
        int(attributes.get("ApproximateNumberOfMessages", "0")),
        int(attributes.get("ApproximateNumberOfMessagesDelayed", "0")),
    )


class SharedCache(Protocol):
    """The fleet's cache as the worker uses it (``qdone.cache.Cache``): fail-soft,
    each call returns its "no answer" value when Redis does not answer."""

    def get_counts(self, queues: Iterable[str]) -> dict[str, dict[str, str]]: ...
    def put_counts(
        self, queue: str, attributes: Mapping[str, str], *, name: str | None = None
    ) -> bool: ...
    def subscribe(self) -> _Subscription: ...


class _Subscription(Protocol):
    def wakeups(self, timeout: float) -> list[str]: ...
    def close(self) -> None: ...


class CachedCounts:
    """Counts shared by a fleet: a check another worker made within the cache's TTL
    serves this one; otherwise one GetQueueAttributes, shared in turn. With Redis
    down, every check goes to the broker, as without a cache."""

    def __init__(self, cache: SharedCache, broker: Broker) -> None:
        self.cache = cache
        self.broker = broker

    def counts(self, queue: QueueRef) -> Counts:
        cached = self.cache.get_counts([queue.url]).get(queue.url)
        if cached is not None:
            return parse_counts(cached)
        attributes = self.broker.get_queue_attributes(queue.url, SHARED_ATTRIBUTES)
        self.cache.put_counts(queue.url, attributes)
        return parse_counts(attributes)


class CacheWakes:
    """Wake-ups from the fleet's cache: the names producers published. While Redis
    is down it yields nothing (the rotation over idle queues still finds work)."""

    def __init__(self, cache: SharedCache) -> None:
        self.cache = cache
        self._closed = threading.Event()
        self._subscription: _Subscription | None = None

    def wakes(self) -> Iterator[str]:
        subscription = self._subscription = self.cache.subscribe()
        try:
            while not self._closed.is_set():
                yield from subscription.wakeups(WAKE_WAIT)
        finally:
            subscription.close()

    def close(self) -> None:
        self._closed.set()
        subscription = self._subscription
        if subscription is not None:
            subscription.close()
