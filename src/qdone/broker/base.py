"""The Broker interface: the semantics of a qdone queue service, documented once.

qdone speaks to queues through this interface only. It mirrors Amazon SQS, so
``broker/sqs.py`` is a thin mapping and ``broker/sqlite.py`` emulates the same
contract on one machine. This module imports neither implementation;
``qdone.broker.open_broker(url)`` picks one.

Queues
    A queue has a full name (prefix and suffixes included) and a *url*, an
    opaque handle returned by ``create_queue`` and ``get_queue_url``; every
    other call takes the url. Attributes are SQS's, as strings:
    ``DelaySeconds``, ``MessageRetentionPeriod``, ``MaximumMessageSize``,
    ``VisibilityTimeout``, ``RedrivePolicy`` (JSON ``{"deadLetterTargetArn",
    "maxReceiveCount"}``), ``FifoQueue``, ``QueueArn`` and the approximate
    counts ``ApproximateNumberOfMessages``, ``…NotVisible``, ``…Delayed``.
    ``create_queue`` of an existing queue with the same attributes returns its
    url; with different attributes it raises ``BrokerError``.

Messages
    ``send_batch`` takes up to 10 entries; FIFO queues need a group id and a
    deduplication id on each, and a dedup id seen in the last 5 minutes is
    accepted but not enqueued again. ``receive`` returns up to 10 messages and
    hides them for ``visibility_timeout`` seconds; it waits up to ``wait_time``
    seconds for the first one. Each receive adds one to a message's receive
    count. A message whose receive count has reached the queue's
    ``maxReceiveCount`` is, on its next receive, moved to the dead-letter
    target instead of being returned (redrive); a broker may move it as soon as
    its visibility is changed to 0 (the SQLite store does: no receive can tell the
    difference). On a FIFO queue a group with a
    message in flight yields nothing more until that message is deleted or
    visible again, and messages of a group come in the order sent.
    ``delete_batch`` and ``change_visibility_batch`` take up to 10 receipts.
    ``send_batches`` and ``delete_batches`` take up to ``batches_per_send``
    batches in one call: one transaction on SQLite, one batch on SQS.

Calls
    Every broker counts the calls it makes, by service and action, in ``calls``.
"""

from __future__ import annotations

import abc
import functools
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple, Protocol, runtime_checkable

from ..errors import FailedEntry, QueueDeletedRecently, QueueNotFound

__all__ = [
    "MAX_BATCH",
    "ApiCalls",
    "BatchResult",
    "Broker",
    "ChangeVisibility",
    "EmptyDelete",
    "Message",
    "MessageStore",
    "Receipt",
    "SendEntry",
    "SendResult",
    "StoredMessage",
    "invalid_character",
]

MAX_BATCH = 10  # entries per batch call, SQS's limit
# Characters SQS refuses in a message body: those outside XML 1.0's character set.
_INVALID_CHARACTER = "[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"


@functools.cache
def _invalid_characters() -> re.Pattern[str]:
    # Compiled on first need (a few ms): most bodies are printable ASCII and never need it.
    return re.compile(_INVALID_CHARACTER)


def invalid_character(body: str) -> str | None:
    """The first character of ``body`` that SQS refuses in a message, or None."""
    if body.isascii() and body.isprintable():
        return None
    found = _invalid_characters().search(body)
    return found.group() if found else None


class ApiCalls:
    """Calls made, counted by service (``SQS``, ``CloudWatch``, ``SQLite``) and action."""

    def __init__(self) -> None:
        self._counts: dict[str, Counter[str]] = {}

    def count(self, service: str, action: str, n: int = 1) -> None:
        self._counts.setdefault(service, Counter())[action] += n

    def total(self, service: str | None = None) -> int:
        if service is not None:
            return sum(self._counts.get(service, Counter()).values())
        return sum(sum(c.values()) for c in self._counts.values())

    def by_action(self, service: str) -> dict[str, int]:
        return dict(sorted(self._counts.get(service, Counter()).items()))

    def services(self) -> list[str]:
        return sorted(self._counts)

    def snapshot(self) -> dict[str, dict[str, int]]:
        return {s: self.by_action(s) for s in self.services()}


_NO_ATTRIBUTES: Mapping[str, str] = MappingProxyType({})


class SendEntry(NamedTuple):
    """One message to send. ``id`` is unique within its batch. (A named tuple: a
    batch of 100,000 lines builds 100,000 of them.)"""

    id: str
    body: str
    group_id: str | None = None
    dedup_id: str | None = None
    delay: int | None = None  # seconds; None: the queue's DelaySeconds
    attributes: Mapping[str, str] = _NO_ATTRIBUTES


@dataclass(frozen=True)
class SendResult:
    """What a ``send_batch`` did: message ids by entry id, and the entries refused."""

    sent: dict[str, str]
    failed: list[FailedEntry]


@dataclass(frozen=True)
class Message:
    """A received message. ``receipt`` is needed to delete it or change its visibility."""

    queue_url: str
    message_id: str
    receipt: str
    body: str
    receive_count: int
    sent_at: float  # seconds since the epoch
    group_id: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)
    first_received_at: float | None = None  # SQS: its first receive ever (any queue)


@dataclass(frozen=True)
class Receipt:
    """An entry of ``delete_batch``: ``id`` is unique within the batch."""

    id: str
    receipt: str


@dataclass(frozen=True)
class ChangeVisibility:
    """An entry of ``change_visibility_batch``: hide the message ``timeout`` s from now."""

    id: str
    receipt: str
    timeout: int


@dataclass(frozen=True)
class BatchResult:
    """Entry ids that succeeded and the entries that failed."""

    ok: list[str]
    failed: list[FailedEntry]


@dataclass
class EmptyDelete:
    """What ``delete_if_empty`` did: the queues deleted, those already gone, and the
    name of the first that held messages (nothing after it was deleted)."""

    deleted: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)
    busy: str | None = None


COUNT_NAMES = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
)


@dataclass(frozen=True)
class StoredMessage:
    """A message as a store keeps it, read or moved without a receive."""

    message_id: str
    body: str
    group_id: str | None
    sent_at: float  # seconds since the epoch: when it was first sent
    receive_count: int  # receives in the queue it is in
    moved_at: float | None  # when the redrive moved it into this queue; None: sent here
    attributes: Mapping[str, str] = field(default_factory=dict)


@runtime_checkable
class MessageStore(Protocol):
    """A broker that can read and move messages without receiving them (the SQLite
    store; SQS cannot: any look at a message is a receive, and counts as one)."""

    def peek(self, url: str, limit: int) -> list[StoredMessage]:
        """Up to ``limit`` messages of the queue, in the order sent; changes nothing."""
        ...

    def move(self, source: str, target: str, limit: int) -> list[StoredMessage]:
        """Move up to ``limit`` (1-10) visible messages from queue ``source`` to queue
        ``target`` in one transaction, as SQS would a copy sent there: body, group
        and attributes kept, a receive count of 0, a fresh retention and the
        target's delay. Returns them as they were in ``source``."""
        ...


class Broker(abc.ABC):
    """A queue service with SQS semantics (see the module docstring)."""

    #: ``SQS`` or ``SQLite``: the service named in call counts and messages.
    service: str = ""
    #: How many batch sends gain from running at once (SQS: many; SQLite: one writer).
    send_concurrency: int = 1
    #: How many batches ``send_batches`` takes in one call.
    batches_per_send: int = 1

    def __init__(self) -> None:
        self.calls = ApiCalls()

    @abc.abstractmethod
    def describe(self) -> str:
        """One line naming the broker: the store's path, or SQS's region/endpoint."""

    @abc.abstractmethod
    def get_queue_url(self, name: str) -> str:
        """The url of queue ``name``; raises ``QueueNotFound``. Cached per process."""

    @abc.abstractmethod
    def create_queue(
        self, name: str, attributes: Mapping[str, str], tags: Mapping[str, str] | None = None
    ) -> str:
        """Create queue ``name`` (or return the url of an identical one)."""

    @abc.abstractmethod
    def queue_arn(self, url: str) -> str:
        """The ARN of the queue at ``url``, derived without a call."""

    @abc.abstractmethod
    def queue_name(self, url: str) -> str:
        """The full name of the queue at ``url``, derived without a call."""

    @abc.abstractmethod
    def get_queue_attributes(self, url: str, names: Sequence[str] = ("All",)) -> dict[str, str]:
        """Attributes of the queue; raises ``QueueNotFound``."""

    @abc.abstractmethod
    def set_queue_attributes(self, url: str, attributes: Mapping[str, str]) -> None:
        """Change attributes of the queue."""

    @abc.abstractmethod
    def list_queue_tags(self, url: str) -> dict[str, str]:
        """Tags of the queue."""

    @abc.abstractmethod
    def tag_queue(self, url: str, tags: Mapping[str, str]) -> None:
        """Add or replace tags on the queue."""

    @abc.abstractmethod
    def list_queues(self, prefix: str) -> list[str]:
        """Urls of every queue whose name starts with ``prefix`` (all pages)."""

    @abc.abstractmethod
    def delete_queue(self, url: str) -> None:
        """Delete the queue and its messages; raises ``QueueNotFound``."""

    def delete_if_empty(self, urls: Sequence[str]) -> EmptyDelete:
        """Delete the queues at ``urls``, in order, while they hold no message
        (visible, in flight or delayed); stop at the first that holds one. A queue
        already gone is skipped.

        Here (SQS), nothing makes a check and a delete one step: all are checked,
        then each is checked again right before its own delete, so a message sent
        in the round trip between the two is lost with its queue. A store that can
        (SQLite) checks and deletes all in one transaction, with no such window."""
        done = EmptyDelete()
        for again in (False, True):
            for url in urls:
                name = self.queue_name(url)
                if name in done.gone or name in done.deleted:
                    continue
                try:
                    if self._holds_messages(url):
                        done.busy = name
                        return done
                    if again:
                        self.delete_queue(url)
                        done.deleted.append(name)
                except (QueueNotFound, QueueDeletedRecently):
                    done.gone.append(name)
        return done

    def _holds_messages(self, url: str) -> bool:
        counts = self.get_queue_attributes(url, COUNT_NAMES)
        return any(int(counts.get(n, "0")) for n in COUNT_NAMES)

    @abc.abstractmethod
    def send(self, url: str, entry: SendEntry) -> str:
        """Send one message (one call); returns its message id."""

    @abc.abstractmethod
    def send_batch(self, url: str, entries: Sequence[SendEntry]) -> SendResult:
        """Send up to 10 messages in one call."""

    def send_batches(self, url: str, batches: Sequence[Sequence[SendEntry]]) -> list[SendResult]:
        """Send up to ``batches_per_send`` batches, a result for each. All or nothing:
        if it raises, none of them was sent. (SQLite commits them in one transaction;
        elsewhere it takes one batch, and is ``send_batch``.)"""
        self._check_batch_count(batches)
        return [self.send_batch(url, entries) for entries in batches]

    def _check_batch_count(self, batches: Sequence[Sequence[object]]) -> None:
        if not 1 <= len(batches) <= self.batches_per_send:
            raise ValueError(f"send_batches takes 1 to {self.batches_per_send} batches")

    @abc.abstractmethod
    def receive(
        self, url: str, max_messages: int, visibility_timeout: int, wait_time: float
    ) -> list[Message]:
        """Receive up to ``max_messages`` (1-10), waiting up to ``wait_time`` s for one."""

    @abc.abstractmethod
    def delete_batch(self, url: str, entries: Sequence[Receipt]) -> BatchResult:
        """Delete up to 10 received messages."""

    def delete_batches(self, url: str, batches: Sequence[Sequence[Receipt]]) -> list[BatchResult]:
        """Delete up to ``batches_per_send`` batches, a result for each. (SQLite
        deletes them in one transaction; elsewhere it takes one batch.)"""
        self._check_batch_count(batches)
        return [self.delete_batch(url, entries) for entries in batches]

    @abc.abstractmethod
    def change_visibility_batch(self, url: str, entries: Sequence[ChangeVisibility]) -> BatchResult:
        """Change the visibility timeout of up to 10 received messages."""

    @abc.abstractmethod
    def active_since(self, urls: Iterable[str], since: float) -> dict[str, bool]:
        """For each url: whether the queue saw a send, receive or delete at or after
        ``since`` (seconds since the epoch). SQLite answers from its own records;
        SQS asks CloudWatch, which lags by minutes."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and files."""
