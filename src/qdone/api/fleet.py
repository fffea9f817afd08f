"""What a ``Client`` takes from the fleet's Redis (``cache_uri``) and from the
deduplication store: each loaded only when used."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import UsageError

if TYPE_CHECKING:
    from ..broker.base import Broker
    from ..cache import Cache
    from ..config import Options
    from ..dedup import Deduper, DedupSettings, DedupStore

__all__ = ["dedup_store", "deduper", "fleet", "open_cache"]


def open_cache(options: Options) -> Cache | None:
    """The cache ``options.cache_uri`` names (its URI checked; it connects on first
    use), or None."""
    if options.cache_uri is None:
        return None
    from ..cache import open_cache as open_redis  # loads redis-py

    return open_redis(options.cache_uri, options.cache_prefix, options.cache_ttl_seconds)


def dedup_store(broker: Broker, cache: Cache | None) -> DedupStore | None:
    """Where deduplication windows and run claims live: the SQLite store's own
    tables, else the fleet's Redis; None with neither."""
    if broker.service == "SQLite":
        from ..broker.sqlite import SqliteBroker

        assert isinstance(broker, SqliteBroker)
        return broker.dedup()
    if cache is None:
        return None
    from ..cache.dedup import RedisDedup

    return RedisDedup(cache)


def deduper(store: DedupStore | None, dedup: DedupSettings | None) -> Deduper | None:
    """The enqueue side of ``external_dedup``, or None without it."""
    if dedup is None:
        return None
    if store is None:
        raise UsageError(
            "--external-dedup needs --cache-uri with --broker sqs (the SQLite store keeps "
            "its own deduplication windows)"
        )
    from ..dedup import Deduper

    return Deduper(store, dedup)


def fleet(cache: Cache | None, broker: Broker) -> dict[str, Any]:
    """The worker's options for a fleet sharing ``cache``: queue checks shared through
    Redis, and wake-ups from producers (both fail-soft: with Redis down, as without
    them); none without a cache."""
    if cache is None:
        return {}
    from ..worker.checks import CachedCounts, CacheWakes

    return {"counts": CachedCounts(cache, broker), "wakes": CacheWakes(cache)}
