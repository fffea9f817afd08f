"""Fixtures of the fault-injection suites: a factory of fault proxies in front of the
session's moto server, each stopped when its test ends.

::

    def test_x(fault_proxy: ProxyFactory) -> None:
        proxy = fault_proxy(FaultPlan.mixed(0.1, seed=3))
        broker = SqsBroker(endpoint_url=proxy.url)
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Iterator

import pytest

from .proxy import NO_FAULTS, FaultPlan, FaultProxy

ProxyFactory = Callable[..., FaultProxy]


@pytest.fixture
def fault_proxy(moto_endpoint: str) -> Iterator[ProxyFactory]:
    """``fault_proxy(plan=NO_FAULTS, upstream=moto_endpoint)``: a started proxy."""
    proxies: list[FaultProxy] = []

    def make(plan: FaultPlan = NO_FAULTS, upstream: str | None = None) -> FaultProxy:
        proxy = FaultProxy(upstream or moto_endpoint, plan).start()
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.stop()


@pytest.fixture
def fast_moto_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the in-process moto server's SQS clock cheap, for deep queues.

    moto 5 computes a queue's attributes (three scans of every message, each
    message asking the time through two datetime conversions) about six times
    per entry sent, so a FIFO queue 500 deep costs ~0.4 s per SendMessageBatch
    and 5,000 lines over 10 queues take ~200 s. ``time.time() * 1000`` is the
    same clock (milliseconds since the epoch), ~20 times cheaper."""
    from moto.sqs import models

    def unix_time_millis(dt: datetime.datetime | None = None) -> float:
        if dt is None:
            return time.time() * 1000.0
        return (dt - _EPOCH).total_seconds() * 1000.0

    monkeypatch.setattr(models, "unix_time_millis", unix_time_millis)


_EPOCH = datetime.datetime(1970, 1, 1)
