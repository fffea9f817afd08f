"""Deduplication windows and run claims in Redis, in Node qdone 2.x's key layout
(see ``qdone.dedup`` for the layout and the semantics)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .client import Cache

if TYPE_CHECKING:
    import redis

__all__ = ["RedisDedup"]

WINDOW = "dedup:"  # Node qdone's: <prefix>dedup:<id>
CLAIM = "dedup-claim:"  # qdone's own
DUPLICATES = "dedup-stats:duplicateSet"
EXPIRATIONS = "dedup-stats:expirationSet"

# INCR, and the expiry when this INCR opened the window, in one step: a crash
# between the two would leave a window that never closes.
_OPEN = """
local copies = redis.call('INCR', KEYS[1])
if copies == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return copies
"""
# Free, or held by the same message (received again): ours.
_CLAIM = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""


class RedisDedup:
    """A ``DedupStore`` on the fleet's Redis; fail-soft like every cache operation."""

    def __init__(self, cache: Cache, clock: Callable[[], float] = time.time) -> None:
        self.cache = cache
        self.clock = clock
        self._open = cache.client.register_script(_OPEN)
        self._claim = cache.client.register_script(_CLAIM)

    def window_key(self, ident: str) -> str:
        return f"{self.cache.prefix}{WINDOW}{ident}"

    def open_windows(self, ids: Sequence[str], period: int, stats: bool) -> list[int] | None:
        keys = [self.window_key(ident) for ident in ids]

        def run(client: redis.Redis) -> list[int]:
            pipe = client.pipeline(transaction=False)
            for key in keys:
                self._open(keys=[key], args=[period], client=pipe)
            counts = [int(n) for n in pipe.execute()]
            if stats and any(n > 1 for n in counts):
                self._count_duplicates(client, keys, counts, period)
            return counts

        if not keys:
            return []
        result: list[int] | None = self.cache.health.call(self.cache.client, run, None)
        return result

    def _count_duplicates(
        self, client: redis.Redis, keys: list[str], counts: list[int], period: int
    ) -> None:
        prefix = self.cache.prefix
        ends = math.floor(self.clock()) + period
        pipe = client.pipeline(transaction=False)
        for key, copies in zip(keys, counts, strict=True):
            if copies > 1:
                pipe.zadd(prefix + DUPLICATES, {key: copies - 1}, gt=True)
                pipe.zadd(prefix + EXPIRATIONS, {key: ends}, gt=True)
        pipe.execute()

    def close_windows(self, ids: Sequence[str]) -> bool:
        keys = [self.window_key(ident) for ident in ids]
        if not keys:
            return True
        return self.cache.health.call(self.cache.client, lambda c: c.delete(*keys) >= 0, False)

    def claim(self, key: str, holder: str, ttl: int) -> bool | None:
        full = f"{self.cache.prefix}{CLAIM}{key}"
        answer: Any = self.cache.health.call(
            self.cache.client, lambda c: self._claim(keys=[full], args=[holder, ttl]), None
        )
        return None if answer is None else bool(answer)

    def finish(self, key: str, done_ttl: int | None) -> bool:
        full = f"{self.cache.prefix}{CLAIM}{key}"
        if done_ttl is None:
            return self.cache.health.call(self.cache.client, lambda c: c.delete(full) >= 0, False)
        return self.cache.health.call(
            self.cache.client, lambda c: bool(c.set(full, "done", ex=done_ttl)), False
        )

    def stat_maintenance(self) -> bool:
        """Drop ended windows from the stats sets (Node qdone's statMaintenance)."""
        prefix = self.cache.prefix

        def run(client: redis.Redis) -> bool:
            ended = client.zrangebyscore(prefix + EXPIRATIONS, "-inf", math.floor(self.clock()))
            if ended:
                pipe = client.pipeline(transaction=True)
                pipe.zrem(prefix + EXPIRATIONS, *ended)
                pipe.zrem(prefix + DUPLICATES, *ended)
                pipe.execute()
            return True

        return self.cache.health.call(self.cache.client, run, False)
