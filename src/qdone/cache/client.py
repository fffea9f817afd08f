"""``Cache``: the fleet's shared queue checks and wake-ups, on redis-py, fail-soft."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .health import Health
from .wakeups import Wakeups

if TYPE_CHECKING:
    import redis

__all__ = ["COUNT_KEY", "IDLE_ATTRIBUTES", "WAKEUP_CHANNEL", "Cache"]

COUNT_KEY = "cheap-idle-check:"  # Node qdone's key for a queue's cached attributes
WAKEUP_CHANNEL = "wakeup"  # qdone's own; Node qdone publishes no wake-ups
# A queue whose three counts are all "0" is idle (Node qdone stores the verdict too).
IDLE_ATTRIBUTES = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
)


class Cache:
    """A connection to the fleet's Redis. Thread-safe; every method is fail-soft:
    on any Redis error it returns its "no answer" value (see the package docstring)."""

    def __init__(
        self,
        client: redis.Redis,
        uri: str,
        prefix: str = "qdone:",
        ttl: int = 10,
        *,
        timeout: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.uri = uri
        self.prefix = prefix
        self.ttl = ttl
        self.timeout = timeout
        self.clock = clock
        self.health = Health(uri, timeout, clock)
        self._subscribers: list[Wakeups] = []
        self._lock = threading.Lock()

    # -- shared queue checks --------------------------------------------------------

    def count_key(self, queue: str) -> str:
        return f"{self.prefix}{COUNT_KEY}{queue}"

    def get_counts(self, queues: Iterable[str]) -> dict[str, dict[str, str]]:
        """The cached GetQueueAttributes results of ``queues`` (SQS: queue URLs, as
        Node qdone keys them), by queue; a queue absent from the answer is not cached
        (or Redis did not answer)."""
        wanted = list(dict.fromkeys(queues))
        if not wanted:
            return {}
        keys = [self.count_key(queue) for queue in wanted]
        values = self.health.call(self.client, lambda c: c.mget(keys), None)
        found: dict[str, dict[str, str]] = {}
        for queue, raw in zip(wanted, values or (), strict=False):
            attributes = _decode_counts(raw)
            if attributes is not None:
                found[queue] = attributes
        return found

    def put_counts(
        self, queue: str, attributes: Mapping[str, str], *, name: str | None = None
    ) -> bool:
        """Share ``queue``'s GetQueueAttributes result for ``ttl`` seconds; False if
        Redis did not take it. ``name`` (the queue's name without prefix) is stored
        for Node qdone, which shows it."""
        record: dict[str, Any] = dict(attributes)
        if all(name in attributes for name in IDLE_ATTRIBUTES):
            record["idle"] = all(attributes[name] == "0" for name in IDLE_ATTRIBUTES)
        record["exists"] = True
        if name is not None:
            record["queue"] = name
        value = json.dumps(record)
        key = self.count_key(queue)
        return self.health.call(self.client, lambda c: bool(c.set(key, value, ex=self.ttl)), False)

    # -- wake-ups -----------------------------------------------------------------

    @property
    def channel(self) -> str:
        return f"{self.prefix}{WAKEUP_CHANNEL}"

    def notify(self, queues: Iterable[str]) -> bool:
        """Tell the fleet that ``queues`` (full queue names) just got work: one PUBLISH
        per queue, all in one round trip. False if Redis did not take them."""
        names = list(dict.fromkeys(queues))
        if not names:
            return True

        def publish(client: redis.Redis) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for name in names:
                pipe.publish(self.channel, name)
            return pipe.execute()

        return self.health.call(self.client, publish, None) is not None

    def subscribe(self) -> Wakeups:
        """A subscriber to the fleet's wake-ups, on a connection of its own (use it
        from one thread), subscribed before this returns if Redis answers. Closed
        with the cache."""
        wakeups = Wakeups(self.client, self.channel, self.health)
        with self._lock:
            self._subscribers.append(wakeups)
        wakeups.connect()
        return wakeups

    # -- lifetime -------------------------------------------------------------------

    def ping(self) -> bool:
        """True if Redis answers now (a failure is warned about like any other)."""
        return bool(self.health.call(self.client, lambda c: c.ping(), False))

    def close(self) -> None:
        with self._lock:
            subscribers, self._subscribers = self._subscribers, []
        for wakeups in subscribers:
            wakeups.close()
        self.client.close()

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _decode_counts(raw: object) -> dict[str, str] | None:
    """The string attributes of a cached record; None when absent or not ours to read."""
    if not isinstance(raw, str):
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    attributes = {k: v for k, v in record.items() if isinstance(v, str) and k != "queue"}
    return attributes or None
