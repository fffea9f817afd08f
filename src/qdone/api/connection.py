"""The broker side of ``qdone.Client``: opening its broker and cache, opening them
again in a child after ``os.fork()``, and closing them."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..broker import open_broker
from ..broker.base import Broker
from ..config import DEFAULTS, Options
from ..errors import QdoneError
from ..queues import names_for
from .fleet import dedup_store, open_cache
from .options import INHERITED, ForkState

if TYPE_CHECKING:
    from ..cache import Cache
    from ..dedup import DedupStore
    from ..worker import Worker

__all__ = ["Connection"]


class Connection:
    """The part of ``Client`` that holds its broker and cache (see ``Client`` for the
    arguments); the methods that enqueue, work and count are ``Client``'s."""

    def __init__(
        self,
        broker: str = "sqlite",
        *,
        prefix: str = DEFAULTS.prefix,
        fail_suffix: str = DEFAULTS.fail_suffix,
        region: str | None = None,
        endpoint_url: str | None = None,
        cache_uri: str | None = None,
        cache_prefix: str = DEFAULTS.cache_prefix,
        cache_ttl_seconds: int = DEFAULTS.cache_ttl_seconds,
        on_create: Callable[[str], None] | None = None,
        reads_only: bool = False,
    ) -> None:
        self.options = Options(
            broker=broker,
            prefix=prefix,
            fail_suffix=fail_suffix,
            region=region,
            endpoint_url=endpoint_url,
            cache_uri=cache_uri or None,
            cache_prefix=cache_prefix,
            cache_ttl_seconds=cache_ttl_seconds,
        )
        self._on_create = on_create
        self._reads_only = reads_only
        self._workers: list[Worker] = []
        self._stop_pending = False
        self._closed = False
        self._generation = ForkState.generation
        self._cache = open_cache(self.options)  # checks the URI; connects on first use
        self._broker = open_broker(self.options, reads_only=self._reads_only)

    # -- the broker ---------------------------------------------------------------

    @property
    def broker(self) -> Broker:
        """The broker this process uses (opened again in a child after ``fork``)."""
        return self._current()

    @property
    def cache(self) -> Cache | None:
        """The fleet's Redis cache (``cache_uri``), or None."""
        self._current()
        return self._cache

    def _current(self) -> Broker:
        if self._closed:
            raise QdoneError("this qdone.Client is closed")
        if self._generation != ForkState.generation:
            with ForkState.lock:
                if self._generation != ForkState.generation:
                    INHERITED.append(self._broker)
                    self._workers = []
                    self._broker = open_broker(self.options, reads_only=self._reads_only)
                    self._cache = open_cache(self.options)
                    self._generation = ForkState.generation
        return self._broker

    def _on_sent(self) -> Callable[[str], object] | None:
        cache = self.cache
        return None if cache is None else lambda name: cache.notify([name])

    def dedup_store(self) -> DedupStore | None:
        """Where deduplication windows and run claims live: the SQLite store's own
        tables, else the fleet's Redis (``cache_uri``); None with neither."""
        return dedup_store(self.broker, self._cache)

    def close(self) -> None:
        """Close the broker's connections (in this process), and the cache's."""
        if not self._closed:
            broker, cache = self.broker, self._cache
            self._closed = True
            broker.close()
            if cache is not None:
                cache.close()

    def full_name(self, queue: str, *, fifo: bool = False) -> str:
        """The full name of ``queue`` (``qdone_render``), as events name it."""
        return names_for(self.options, queue, fifo).main

    def __repr__(self) -> str:
        return f"<qdone.Client {self.options.broker!r}{' closed' if self._closed else ''}>"

    def _options(self, dlq_suffix: str) -> Options:
        return dataclasses.replace(self.options, dlq_suffix=dlq_suffix)
