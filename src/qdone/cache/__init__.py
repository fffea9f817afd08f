"""The fleet's Redis cache: an optional accelerator, never needed for correctness.

With ``--cache-uri redis://HOST[:PORT][/DB]`` (also ``rediss://`` and ``unix://``),
the workers and producers of a fleet share what they learn through Redis:

Shared queue checks
    ``Cache.get_counts(queues) -> {queue: {attribute: value}}`` returns the cached
    GetQueueAttributes results of the queues it has (a queue missing from the answer
    is not cached); ``Cache.put_counts(queue, attributes)`` shares one for
    ``--cache-ttl-seconds`` (default 10). Keys and values are Node qdone's, so a
    mixed fleet shares one cache: the key is ``<prefix>cheap-idle-check:<queue URL>``
    (``<prefix>`` is ``--cache-prefix``, default ``qdone:``), the value the JSON of
    the attributes (strings, as SQS returns them) plus ``"idle"`` (all three
    ApproximateNumberOfMessages* counts are ``"0"``), ``"exists": true`` and, if
    given, ``"queue"`` (the name without prefix), expiring after the TTL (SET EX,
    as Node's SETEX).

Wake-ups
    ``Cache.notify(queue_names)``: a producer says which queues just got work, one
    PUBLISH per queue on channel ``<prefix>wakeup`` (the message is the full queue
    name), all in one round trip. ``Cache.subscribe() -> Wakeups`` and
    ``Wakeups.wakeups(timeout) -> list[str]``: a worker blocks up to ``timeout``
    seconds for the names of queues told to have work. Pub/sub delivers only to
    those connected: a wake-up sent while a worker is disconnected is lost, and
    the worker's rotation over idle queues finds that work within its usual bound.

Failure
    Every operation is fail-soft. When Redis is unreachable, slow (socket timeouts
    of ``timeout`` seconds, default 1), needs a password, or is not Redis, the first
    failure logs one ``WARNING`` line on the ``qdone.cache`` logger saying which;
    operations then return their "no answer" value (``{}``, ``False``, ``[]``) at
    once, and one call per backoff period (0.5 s doubling to 30 s) tries again.
    Callers go on exactly as without a cache.

``open_cache(uri, prefix="qdone:", ttl=10)`` checks the URI (a malformed one is a
``ConfigError``: one line, exit 2) and imports redis-py (``pip install
'qdone[redis]'``; without it, a ``ConfigError``). It does not connect: the first
operation does.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..errors import ConfigError
from .client import Cache
from .uri import check_uri, masked
from .wakeups import Wakeups

__all__ = ["Cache", "Wakeups", "check_uri", "masked", "open_cache"]


def open_cache(
    uri: str,
    prefix: str = "qdone:",
    ttl: int = 10,
    *,
    timeout: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
) -> Cache:
    """A ``Cache`` on the Redis at ``uri``; see the module docstring."""
    check_uri(uri)
    if ttl < 1:
        raise ConfigError(f"--cache-ttl-seconds must be at least 1, not {ttl}")
    try:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry
    except ImportError:
        raise ConfigError(
            "--cache-uri needs the Python package redis; install it with: "
            "pip install 'qdone[redis]'"
        ) from None
    try:
        client = redis.Redis.from_url(
            uri,
            decode_responses=True,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),  # fail fast; Health retries with backoff
            health_check_interval=0,
        )
    except ValueError as exc:
        raise ConfigError(f"--cache-uri {masked(uri)!r}: {exc}") from None
    return Cache(client, uri, prefix, ttl, timeout=timeout, clock=clock)
