"""Workers of a fleet sharing a real Redis (``--cache-uri``): queue checks shared,
wake-ups from producers, and Redis as an accelerator only (killed, nothing lost)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qdone.broker.base import Broker
from qdone.cache import Cache, open_cache
from qdone.config import Options, QueueOptions
from qdone.enqueue import SendSettings, enqueue
from qdone.worker import Worker
from qdone.worker.checks import CachedCounts, CacheWakes
from qdone.worker.events import Event, JobStarted, JobSucceeded, WorkerSettings
from qdone.worker.queues import QueueRef
from tests.redis_server import RedisServer


@pytest.fixture
def cache(redis_uri: str, cache_prefix: str) -> Iterator[Cache]:
    with open_cache(redis_uri, cache_prefix, ttl=30) as c:
        yield c


def put(broker: Broker, options: Options, queue: str, command: str) -> None:
    enqueue(broker, options, QueueOptions(), queue, command, SendSettings())


def ref(broker: Broker, name: str) -> QueueRef:
    return QueueRef(broker.get_queue_url(name), name, False, 1, 1_209_600)


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self.lock:
            self.events.append(event)

    def of(self, kind: type[Any]) -> list[Any]:
        with self.lock:
            return [e for e in self.events if isinstance(e, kind)]


def gqa(broker: Broker) -> int:
    return broker.calls.by_action(broker.service).get("GetQueueAttributes", 0)


def test_a_check_made_by_one_worker_serves_the_others(broker: Broker, cache: Cache) -> None:
    options = Options(prefix="fleet_")
    put(broker, options, "shared", "true")
    q = ref(broker, "fleet_shared")
    workers = [CachedCounts(cache, broker) for _ in range(3)]
    before = gqa(broker)
    assert [w.counts(q) for w in workers] == [(1, 0)] * 3
    assert gqa(broker) - before == 1  # the first asked the broker; the others, Redis


def test_without_redis_every_check_asks_the_broker(broker: Broker, tmp_path: Path) -> None:
    from tests.redis_server import free_port

    options = Options(prefix="fleet_")
    put(broker, options, "alone", "true")
    q = ref(broker, "fleet_alone")
    with open_cache(f"redis://127.0.0.1:{free_port()}/0", "x:", timeout=0.2) as dead:
        before = gqa(broker)
        assert [CachedCounts(dead, broker).counts(q) for _ in range(2)] == [(1, 0)] * 2
        assert gqa(broker) - before == 2


def test_a_woken_queue_is_polled_at_once_among_many_idle(
    sqlite_broker: Broker, cache: Cache
) -> None:
    options = Options(prefix="wk_")
    for i in range(40):  # more queues than slots: idle ones are checked every 40 s
        put(sqlite_broker, options, f"q{i:02}", "true")
    for url in sqlite_broker.list_queues("wk_"):
        sqlite_broker.receive(url, 10, 3_600, 0)  # hidden: the queues look empty
    target = sqlite_broker.get_queue_url("wk_q17")
    checked: list[str] = []
    original = sqlite_broker.get_queue_attributes

    def attributes(url: str, names: Any = ("All",)) -> dict[str, str]:
        if "ApproximateNumberOfMessages" in names:  # a check, not the queue's description
            checked.append(url)
        return original(url, names)

    sqlite_broker.get_queue_attributes = attributes  # type: ignore[method-assign]
    rec = Recorder()
    settings = WorkerSettings(queues=("q*",), wait_time=20, idle_check=600)
    worker = Worker(sqlite_broker, options, settings, on_event=rec, wakes=CacheWakes(cache))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        time.sleep(1.0)  # listening and subscribed
        put(sqlite_broker, options, "q17", "true")
        checked_before = checked.count(target)
        assert cache.notify(["wk_q17"])
        end = time.monotonic() + 20  # a hang guard; its checks come every 40 s
        while not rec.of(JobStarted) and time.monotonic() < end:
            time.sleep(0.05)
    finally:
        worker.stop()
        thread.join(30)
    [started] = rec.of(JobStarted)
    assert started.queue == "wk_q17"
    assert checked.count(target) == checked_before  # woken: found with no check of it


@pytest.mark.slow
def test_redis_killed_mid_run_loses_no_job(
    sqlite_broker: Broker, redis_server: RedisServer, tmp_path: Path
) -> None:
    options = Options(prefix="rk_")
    for i in range(12):
        put(sqlite_broker, options, f"q{i}", "true")
    with open_cache(redis_server.uri, "rk:", ttl=5, timeout=0.3) as cache:
        settings = WorkerSettings(queues=("q*",), concurrency=2, wait_time=1, idle_check=2)
        rec = Recorder()
        worker = Worker(
            sqlite_broker,
            options,
            settings,
            on_event=rec,
            counts=CachedCounts(cache, sqlite_broker),
            wakes=CacheWakes(cache),
        )
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        try:
            end = time.monotonic() + 60
            while len(rec.of(JobSucceeded)) < 12 and time.monotonic() < end:
                time.sleep(0.05)
            redis_server.kill()
            for i in range(12):
                put(sqlite_broker, options, f"q{i}", "true")
            while len(rec.of(JobSucceeded)) < 24 and time.monotonic() < end + 30:
                time.sleep(0.05)
        finally:
            worker.stop()
            thread.join(30)
    assert len(rec.of(JobSucceeded)) == 24
