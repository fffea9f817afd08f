"""Whether the cache is usable now: one warning per outage, retries with backoff.

Every cache operation goes through ``Health.call``: while Redis is down, calls
return their "no answer" value at once (nothing waits on a dead server), and one
call per backoff period tries again. The first failure logs one ``WARNING`` that
says what is wrong in one line; the first success after it logs that the cache is
back (INFO).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from .uri import masked

if TYPE_CHECKING:
    import redis

__all__ = ["Health", "describe"]

log = logging.getLogger("qdone.cache")
T = TypeVar("T")

FIRST_DELAY = 0.5  # seconds before the first retry; doubled after each failure
MAX_DELAY = 30.0


def describe(exc: Exception, timeout: float) -> str:
    """What a redis-py error means for the user, in a few words."""
    import redis.exceptions as rex

    if isinstance(exc, rex.AuthenticationError | rex.NoPermissionError) or "NOAUTH" in str(exc):
        return "refused us: it needs a password, or the one in the URI is wrong"
    if isinstance(exc, rex.TimeoutError):
        return f"did not answer within {timeout:g} s (is it a Redis server?)"
    if isinstance(exc, rex.InvalidResponse):
        return "does not answer as Redis does (is it a Redis port?)"
    if isinstance(exc, rex.ConnectionError):
        return f"is unreachable ({str(exc).rstrip('.')})"
    return f"failed: {str(exc).rstrip('.')}"


class Health:
    """The cache's state (up, or down until a retry time), shared by every thread."""

    def __init__(
        self, uri: str, timeout: float, clock: Callable[[], float], what: str = "cache"
    ) -> None:
        self.where = f"{what} {masked(uri)}"
        self.timeout = timeout
        self.clock = clock
        self.up = True
        self.delay = FIRST_DELAY
        self.retry_at = 0.0
        self.lock = threading.Lock()

    def ready(self) -> bool:
        """True when a call may try Redis: it is up, or a retry is due."""
        with self.lock:
            return self.up or self.clock() >= self.retry_at

    def failed(self, exc: Exception) -> None:
        with self.lock:
            if self.up:
                log.warning(
                    "%s %s; going on without it, retrying with backoff",
                    self.where,
                    describe(exc, self.timeout),
                )
                self.up = False
                self.delay = FIRST_DELAY
            else:
                self.delay = min(self.delay * 2, MAX_DELAY)
            self.retry_at = self.clock() + self.delay

    def succeeded(self) -> None:
        with self.lock:
            if not self.up:
                log.info("%s is back", self.where)
            self.up = True

    def call(self, client: redis.Redis, op: Callable[[redis.Redis], T], default: T) -> T:
        """``op(client)``, or ``default`` when Redis is down or fails."""
        import redis.exceptions as rex

        if not self.ready():
            return default
        try:
            result = op(client)
        except (rex.RedisError, OSError) as exc:
            self.failed(exc)
            return default
        self.succeeded()
        return result
