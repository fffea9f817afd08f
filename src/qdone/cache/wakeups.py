"""``Wakeups``: the worker's side of wake-ups, a Redis pub/sub subscription."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import TYPE_CHECKING, Any

from .health import Health

if TYPE_CHECKING:
    import redis
    from redis.client import PubSub

__all__ = ["Wakeups"]

MAX_DRAIN = 1000  # messages read in one call after the first one arrived


class Wakeups:
    """Names of queues that producers said have work. Not thread-safe: one thread
    reads it; ``close()`` may come from any thread and ends a waiting ``wakeups()``."""

    def __init__(self, client: redis.Redis, channel: str, health: Health) -> None:
        self.client = client
        self.channel = channel
        self.health = health
        self.pubsub: PubSub | None = None
        self.closed = threading.Event()
        self.busy = threading.Lock()  # held while a thread reads

    def wakeups(self, timeout: float) -> list[str]:
        """Queue names told to have work, in order, each once: blocks until the first
        arrives or ``timeout`` seconds passed, then takes whatever else is waiting.
        While Redis is down it waits out ``timeout`` and returns [] (never spins)."""
        start = time.monotonic()
        with self.busy:
            if self.closed.is_set():
                self._drop()
                return []
            names = self.health.call(self.client, lambda _: self._read(timeout), None)
            if names is None or self.closed.is_set():
                self._drop()
        if names is None:
            left = timeout - (time.monotonic() - start)
            if left > 0:
                self.closed.wait(left)
            return []
        return names

    def connect(self) -> bool:
        """Subscribe now (``wakeups()`` does it too, after a failure); False if Redis
        did not answer."""
        with self.busy:
            return self.health.call(self.client, lambda _: self._subscribed(), None) is not None

    def _read(self, timeout: float) -> list[str]:
        pubsub = self._subscribed()
        names: dict[str, None] = {}
        message = self._next(pubsub, timeout)
        while message is not None and len(names) < MAX_DRAIN:
            data = message.get("data")
            if message.get("type") == "message" and isinstance(data, str):
                names[data] = None
            message = self._next(pubsub, 0)
        return list(names)

    def _next(self, pubsub: PubSub, timeout: float) -> dict[str, Any] | None:
        # Wait in short slices, so that close() ends a long wait soon.
        deadline = time.monotonic() + timeout
        while True:
            wait = max(0.0, min(0.5, deadline - time.monotonic()))
            message = pubsub.get_message(ignore_subscribe_messages=True, timeout=wait)
            if message is not None or wait == 0 or self.closed.is_set():
                return message if isinstance(message, dict) else None

    def _subscribed(self) -> PubSub:
        if self.pubsub is None:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
            pubsub.subscribe(self.channel)
            self.pubsub = pubsub
        return self.pubsub

    def _drop(self) -> None:
        """Forget a broken subscription; the next retry makes a new one."""
        pubsub, self.pubsub = self.pubsub, None
        if pubsub is not None:
            # Closing a connection that already broke may fail in any way.
            with contextlib.suppress(Exception):
                pubsub.close()

    def close(self) -> None:
        """Stop: a ``wakeups()`` waiting in another thread returns within half a second
        and drops the subscription; otherwise it is dropped here."""
        self.closed.set()
        if self.busy.acquire(blocking=False):
            try:
                self._drop()
            finally:
                self.busy.release()
