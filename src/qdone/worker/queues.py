"""Which queues a worker listens to: names and trailing-``*`` wildcards, resolved
to urls. A queue's redrive limit, retention and visibility timeout are read once
(``describe``), when its first messages arrive, and cached: a worker on a
thousand idle queues makes no call for them."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from ..broker.base import Broker
from ..config import DEFAULTS, Options
from ..errors import QueueNotFound
from ..naming import FIFO_SUFFIX, is_wildcard, strip_fifo, wildcard_prefix
from ..queues import names_for, validate_patterns

__all__ = ["QueueRef", "QueueResolver", "Resolution"]

DEFAULT_VISIBILITY = 30  # SQS's default VisibilityTimeout
_ATTRIBUTES = ("RedrivePolicy", "MessageRetentionPeriod", "VisibilityTimeout")


@dataclass(frozen=True)
class QueueRef:
    """A queue to poll."""

    url: str
    name: str  # full name
    fifo: bool
    max_receives: int | None  # the redrive policy's maxReceiveCount; None: no redrive
    retention: int  # seconds
    visibility: int = DEFAULT_VISIBILITY  # the queue's VisibilityTimeout, seconds
    described: bool = True  # False: the three above are not read yet (``describe``)


@dataclass(frozen=True)
class Resolution:
    queues: list[QueueRef]
    missing: list[tuple[str, str]]  # (as given, full name) of named queues not found


#: Seconds before named queues that did not exist are looked for again: a worker
#: started before its first enqueue sees the queue soon, at one ``GetQueueUrl`` per
#: missing name each time (wildcards alone wait for the full interval).
MISSING_INTERVAL = 5.0


class QueueResolver:
    """Resolves the worker's queue arguments; ``due()`` says when to list again:
    after ``interval``, or ``MISSING_INTERVAL`` while a named queue is missing."""

    def __init__(
        self,
        broker: Broker,
        options: Options,
        specs: tuple[str, ...],
        *,
        fifo: bool,
        include_failed: bool,
        include_dead: bool,
        clock: Callable[[], float],
        interval: float,
    ) -> None:
        validate_patterns(options, specs, fifo)  # before any call
        self.broker = broker
        self.options = options
        self.specs = specs
        self.fifo = fifo
        self.include_failed = include_failed
        self.include_dead = include_dead
        self._clock = clock
        self._interval = interval
        self._next = 0.0
        self._refs: dict[str, QueueRef] = {}

    def due(self) -> bool:
        return self._clock() >= self._next

    def resolve(self) -> Resolution:
        """Every queue the arguments name now (wildcards listed, all pages)."""
        self._next = self._clock() + self._interval
        found: dict[str, QueueRef] = {}
        missing: list[tuple[str, str]] = []
        for spec in self.specs:
            if is_wildcard(spec):
                for url in self.broker.list_queues(wildcard_prefix(spec, self.options.prefix)):
                    if self._wanted(self.broker.queue_name(url)):
                        self._add(found, url)
                continue
            full = names_for(self.options, spec, self.fifo).main
            try:
                self._add(found, self.broker.get_queue_url(full))
            except QueueNotFound:
                missing.append((spec, full))
        if missing:
            self._next = self._clock() + min(self._interval, MISSING_INTERVAL)
        return Resolution(list(found.values()), missing)

    def _wanted(self, name: str) -> bool:
        if self.fifo and not name.endswith(FIFO_SUFFIX):
            return False
        base = strip_fifo(name)
        if not self.include_failed and base.endswith(self.options.fail_suffix):
            return False
        return self.include_dead or not base.endswith(self.options.dlq_suffix)

    def _add(self, found: dict[str, QueueRef], url: str) -> None:
        if url not in found:
            found[url] = self._refs.get(url) or self._bare(url)

    def _bare(self, url: str) -> QueueRef:
        name = self.broker.queue_name(url)
        return QueueRef(
            url=url,
            name=name,
            fifo=name.endswith(FIFO_SUFFIX),  # SQS requires the suffix on FIFO queues
            max_receives=None,
            retention=DEFAULTS.message_retention_period,
            described=False,
        )

    def describe(self, ref: QueueRef) -> QueueRef:
        """``ref`` with its attributes read (once per queue; then cached). Raises
        ``BrokerError``."""
        if ref.described:
            return ref
        found = self._refs.get(ref.url)
        if found is None:
            found = self._refs[ref.url] = self._describe(ref.url)
        return found

    def _describe(self, url: str) -> QueueRef:
        attributes = self.broker.get_queue_attributes(url, _ATTRIBUTES)
        name = self.broker.queue_name(url)
        return QueueRef(
            url=url,
            name=name,
            fifo=name.endswith(FIFO_SUFFIX),  # SQS requires the suffix on FIFO queues
            max_receives=_max_receives(attributes.get("RedrivePolicy")),
            retention=int(
                attributes.get("MessageRetentionPeriod", DEFAULTS.message_retention_period)
            ),
            visibility=int(attributes.get("VisibilityTimeout", DEFAULT_VISIBILITY)),
        )


def _max_receives(policy: str | None) -> int | None:
    if not policy:
        return None
    try:
        return int(json.loads(policy)["maxReceiveCount"])
    except (ValueError, KeyError, TypeError):
        return None
