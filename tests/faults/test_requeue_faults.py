"""``requeue`` of 1,000 failed jobs on SQS (moto): its calls, and through the fault
proxy (10% of requests faulted, every kind) that no job is lost.

The failed queue is filled directly (as 1,000 redriven jobs would leave it); each
job appends its index to a log, so a worker draining the queue afterwards shows
which jobs ran and how often.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from qdone.broker.base import SendEntry
from qdone.broker.sqs import SqsBroker
from qdone.config import Options, QueueOptions
from qdone.queues import ensure_queue
from qdone.requeue import requeue
from qdone.worker import Worker
from qdone.worker.events import WorkerSettings

from .conftest import ProxyFactory
from .proxy import FaultPlan

JOBS = 1_000
MAX_CALLS = 350  # the bound: 0.35 calls per job


def fill_failed(moto: SqsBroker, options: Options, log: Path, fifo: bool = False) -> None:
    """The pair ``q`` and JOBS jobs in its failed queue."""
    ensure_queue(moto, options, QueueOptions(fifo=fifo), "q")
    url = moto.get_queue_url(f"{options.prefix}q_failed" + (".fifo" if fifo else ""))
    for start in range(0, JOBS, 10):
        entries = [
            SendEntry(
                str(i),
                f"echo {i} >> {log}",
                group_id=f"g{i % 7}" if fifo else None,
                dedup_id=f"d{i}" if fifo else None,
            )
            for i in range(start, start + 10)
        ]
        assert moto.send_batch(url, entries).failed == []


def counts(moto: SqsBroker, name: str) -> tuple[int, int]:
    a = moto.get_queue_attributes(
        moto.get_queue_url(name),
        ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )
    return int(a["ApproximateNumberOfMessages"]), int(a["ApproximateNumberOfMessagesNotVisible"])


def run_all(moto_endpoint: str, options: Options, log: Path, fifo: bool = False) -> Counter[int]:
    """Drain the queue (on moto, no faults); how often each index ran."""
    broker = SqsBroker(region="us-east-1", endpoint_url=moto_endpoint)
    try:
        settings = WorkerSettings(queues=("q",), fifo=fifo, drain=True, concurrency=10, wait_time=1)
        Worker(broker, options, settings).run()
    finally:
        broker.close()
    return Counter(int(line) for line in log.read_text().split())


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.usefixtures("fast_moto_clock")
def test_requeue_of_1000_jobs_takes_at_most_350_calls_and_each_runs_once(
    sqs_broker: SqsBroker, moto_endpoint: str, prefix: str, tmp_path: Path
) -> None:
    options = Options(prefix=prefix)
    log = tmp_path / "runs"
    fill_failed(sqs_broker, options, log)
    broker = SqsBroker(region="us-east-1", endpoint_url=moto_endpoint)
    try:
        started = time.monotonic()
        result = requeue(broker, options, ["q"])
        took = time.monotonic() - started
    finally:
        broker.close()
    calls = broker.calls.by_action("SQS")
    total = broker.calls.total("SQS")
    print(f"requeue of {JOBS} jobs: {total} SQS calls ({total / JOBS:.3f} per job): {calls}")
    print(f"in {took:.1f} s")
    [moved] = result.moved
    assert result.ok and (moved.requeued, moved.remaining) == (JOBS, 0)
    assert total <= MAX_CALLS
    assert calls["SendMessageBatch"] == calls["DeleteMessageBatch"] == JOBS // 10
    assert counts(sqs_broker, f"{prefix}q_failed") == (0, 0)
    assert counts(sqs_broker, f"{prefix}q") == (JOBS, 0)
    ran = run_all(moto_endpoint, options, log)
    assert ran == Counter(range(JOBS))  # each exactly once


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.usefixtures("fast_moto_clock")
@pytest.mark.parametrize("fifo", [False, True], ids=["standard", "fifo"])
def test_requeue_through_faults_loses_no_job(
    sqs_broker: SqsBroker,
    moto_endpoint: str,
    fault_proxy: ProxyFactory,
    prefix: str,
    tmp_path: Path,
    fifo: bool,
) -> None:
    """10% of requeue's requests faulted. What it could not move stays in the failed
    queue (hidden for the short hold at most), so a second requeue, after the hold,
    moves the rest: every job then runs, none is lost. A job may run twice (a lost
    answer to a send, on a standard queue); FIFO deduplication makes it once."""
    options = Options(prefix=prefix)
    log = tmp_path / "runs"
    fill_failed(sqs_broker, options, log, fifo=fifo)
    proxy = fault_proxy(FaultPlan.mixed(0.10, seed=11, latency=0.05))
    broker = SqsBroker(region="us-east-1", endpoint_url=proxy.url)
    try:
        first = requeue(broker, options, ["q"], fifo=fifo, hold=3)
    finally:
        broker.close()
    end = ".fifo" if fifo else ""
    print(f"faulted requests: {proxy.stats.count()} of {sum(proxy.stats.requests.values())}")
    print(f"first requeue: {first.moved}")
    assert proxy.stats.count() > 0
    time.sleep(3.5)  # the hold of messages whose receive answer was lost
    second = requeue(sqs_broker, options, ["q"], fifo=fifo)
    print(f"second requeue: {second.moved}")
    assert counts(sqs_broker, f"{prefix}q_failed{end}") == (0, 0)
    ran = run_all(moto_endpoint, options, log, fifo=fifo)
    twice = sorted(i for i, n in ran.items() if n > 1)
    print(f"{len(ran)} jobs ran; {len(twice)} ran more than once")
    assert set(ran) == set(range(JOBS))  # none lost
    if fifo:
        assert twice == []
