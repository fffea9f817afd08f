"""Where the worker learns, without receiving, that a queue holds work.

A *counts source* reads a queue's approximate counts (visible, delayed): from the
broker (one GetQueueAttributes), or through a cache a fleet of workers shares. A
*wake-up source* yields the names of queues that producers just sent to. Both
consume nothing, so neither needs a job slot. The worker takes them as
arguments; a cache that fails falls back to the broker (it never decides
correctness).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from ..broker.base import Broker
from .queues import QueueRef

__all__ = ["BrokerCounts", "Counts", "CountsSource", "WakeSource"]

COUNT_ATTRIBUTES = ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesDelayed")

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
