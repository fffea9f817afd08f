"""Each job once through a faulty network: enqueue-batch --external-dedup on a
standard queue through the fault proxy (10% of SendMessageBatch requests faulted,
lost answers included, so botocore sends some batches twice and SQS keeps both
copies), drained by two workers with the same Redis: every command that reached the
queue runs exactly once, however many copies of it arrived.

The issue's full size (2,000 lines) is ``bench/bench_dedup_faults.py``; the test runs
``LINES`` lines to stay within CI's time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from qdone.batchfile import BatchLine
from qdone.broker.sqs import SqsBroker
from qdone.cache import Cache, open_cache
from qdone.cache.dedup import RedisDedup
from qdone.config import Options, QueueOptions
from qdone.dedup import Deduper, DedupSettings
from qdone.enqueue import BatchOutcome, enqueue_batch

from .conftest import ProxyFactory
from .proxy import Fault, FaultPlan, FaultProxy

LINES = int(os.environ.get("QDONE_DEDUP_FAULT_LINES", "400"))
FAULT_RATE = 0.10
SEED = 15


@pytest.fixture
def cache(redis_uri: str, cache_prefix: str) -> Iterator[Cache]:
    with open_cache(redis_uri, cache_prefix) as c:
        yield c


def send_with_dedup(
    proxy: FaultProxy, prefix: str, cache: Cache, jobs: list[BatchLine]
) -> BatchOutcome:
    broker = SqsBroker(region="us-east-1", endpoint_url=proxy.url)
    try:
        deduper = Deduper(RedisDedup(cache), DedupSettings())
        return enqueue_batch(broker, Options(prefix=prefix), QueueOptions(), jobs, deduper=deduper)
    finally:
        broker.close()


def start_worker(
    moto_endpoint: str, prefix: str, redis_uri: str, cache_prefix: str
) -> subprocess.Popen[str]:
    args = [
        "--broker", "sqs", "--endpoint-url", moto_endpoint, "--prefix", prefix,
        "--cache-uri", redis_uri, "--cache-prefix", cache_prefix,
        "worker", "q", "--drain", "--concurrency", "1", "--wait-time", "1",
    ]  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "qdone", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def failed_queue_bodies(endpoint: str, name: str) -> list[str]:
    """The commands in the failed queue (none is expected: no job fails)."""
    broker = SqsBroker(region="us-east-1", endpoint_url=endpoint)
    try:
        url = broker.get_queue_url(name)
        bodies = []
        while batch := broker.receive(url, 10, 60, 0):
            bodies += [m.body.split()[1] for m in batch]
        return bodies
    finally:
        broker.close()


def events(out: str, name: str) -> list[dict[str, object]]:
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return [r for r in records if r.get("event") == name]


def run_once_through_faults(
    fault_proxy: ProxyFactory,
    moto_endpoint: str,
    prefix: str,
    redis_uri: str,
    cache_prefix: str,
    cache: Cache,
    tmp_path: Path,
    lines: int,
) -> str:
    """The run; asserts each command ran at most once, and exactly once when it
    reached the queue. Returns a one-line report."""
    runs = tmp_path / "runs"
    jobs = [BatchLine("jobs.txt", i + 1, "q", f"echo {i} >> {runs}") for i in range(lines)]
    plan = FaultPlan.mixed(FAULT_RATE, seed=SEED, actions={"SendMessageBatch"}, latency=0.05)
    proxy = fault_proxy(plan)
    outcome = send_with_dedup(proxy, prefix, cache, jobs)
    workers = [start_worker(moto_endpoint, prefix, redis_uri, cache_prefix) for _ in range(2)]
    outputs = [worker.communicate(timeout=600) for worker in workers]
    for worker, (out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, (err, events(out, "JOB_FAILED")[:3])
    ran = Counter(int(n) for n in runs.read_text().split()) if runs.exists() else Counter()
    skipped = sum(len(events(out, "DUPLICATE_SKIPPED")) for out, _ in outputs)
    in_failed = failed_queue_bodies(moto_endpoint, f"{prefix}q_failed")
    listed = {failed.line.lineno - 1 for failed in outcome.failed}
    twice = {n: count for n, count in ran.items() if count > 1}
    missing = [n for n in range(lines) if ran[n] == 0 and n not in listed]
    resent = proxy.stats.count(Fault.RESET_AFTER, "SendMessageBatch")
    report = (
        f"{lines} lines, {outcome.sent} sent, {len(outcome.failed)} listed as not sent or "
        f"unconfirmed; {sum(ran.values())} runs of {len(ran)} commands; {skipped} copies "
        f"deleted unrun; {resent} batches whose answer was lost; in the failed queue: "
        f"{in_failed}"
    )
    assert in_failed == [], report
    assert twice == {}, report
    assert missing == [], report
    # The point of the run: some batch was applied twice, and its copies were caught.
    assert resent >= 1 and skipped >= 1, report
    assert all(ran[n] == 1 for n in range(lines) if n not in listed), report
    return report


@pytest.mark.slow
def test_every_command_runs_once_however_many_copies_arrive(
    fault_proxy: ProxyFactory,
    moto_endpoint: str,
    prefix: str,
    redis_uri: str,
    cache_prefix: str,
    cache: Cache,
    tmp_path: Path,
) -> None:
    report = run_once_through_faults(
        fault_proxy, moto_endpoint, prefix, redis_uri, cache_prefix, cache, tmp_path, LINES
    )
    print(report)
