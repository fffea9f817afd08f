"""enqueue-batch through a faulty network: the fault proxy between qdone and moto.

FIFO: every line arrives exactly once (deduplication ids make retries exact).
Standard: every line is in a queue or in the error report; a line is in a queue
twice only when botocore resent a request whose answer was lost.

moto rescans a queue on every send (see ``fast_moto_clock``), so the 5,000 lines
are spread over ``QUEUES`` queues of 500.
"""

from __future__ import annotations

import itertools
import os
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest

from qdone.batchfile import BatchLine
from qdone.broker.base import Receipt
from qdone.broker.sqs import SqsBroker
from qdone.config import Options, QueueOptions
from qdone.enqueue import BatchOutcome, enqueue_batch
from qdone.errors import ExitCode

from ..cli_helpers import run_qdone
from .conftest import ProxyFactory
from .proxy import ALL_FAULTS, Fault, FaultPlan, FaultProxy, per_body, per_queue

LINES = 5_000
QUEUES = 10
FAULT_RATE = 0.10
SEED = 20240605


def batch_lines(n: int, queues: int, tag: str) -> list[BatchLine]:
    """``n`` lines round-robin over ``queues`` queues; every command is unique."""
    return [BatchLine("jobs.txt", i + 1, f"q{i % queues}", f"echo {tag} {i}") for i in range(n)]


def drain(broker: SqsBroker, names: Sequence[str]) -> Counter[str]:
    """Every message body in the queues ``names``, received and deleted directly."""
    bodies: Counter[str] = Counter()
    for name in names:
        url = broker.get_queue_url(name)
        while batch := broker.receive(url, 10, 120, 0):
            bodies.update(m.body for m in batch)
            broker.delete_batch(url, [Receipt(str(n), m.receipt) for n, m in enumerate(batch)])
    return bodies


def fault_report(proxy: FaultProxy) -> str:
    stats = proxy.stats
    requests = sum(stats.requests.values())
    faults = stats.count()
    kinds = ", ".join(f"{k.value} {stats.faults[k]}" for k in ALL_FAULTS)
    return f"{faults} of {requests} requests faulted ({faults / requests:.1%}): {kinds}"


def assert_faults_happened(proxy: FaultProxy) -> None:
    """Each kind hit SendMessageBatch, and about FAULT_RATE of all requests were faulted."""
    for kind in ALL_FAULTS:
        assert proxy.stats.count(kind, "SendMessageBatch") > 0, kind
    rate = proxy.stats.count() / sum(proxy.stats.requests.values())
    assert 0.06 < rate < 0.14, fault_report(proxy)


def send_through_faults(
    proxy: FaultProxy, prefix: str, q: QueueOptions, jobs: list[BatchLine]
) -> BatchOutcome:
    broker = SqsBroker(region="us-east-1", endpoint_url=proxy.url)
    try:
        return enqueue_batch(broker, Options(prefix=prefix), q, jobs)
    finally:
        broker.close()


@pytest.mark.slow
@pytest.mark.usefixtures("fast_moto_clock")
def test_fifo_batch_through_faults_arrives_exactly_once(
    fault_proxy: ProxyFactory, sqs_broker: SqsBroker, prefix: str
) -> None:
    # One random sequence per queue (named without the test's random prefix): FIFO
    # sends to a queue are sequential, so each request meets the same fault every run.
    def stream(action: str, body: bytes) -> str:
        return per_queue(action, body).removeprefix(prefix)

    proxy = fault_proxy(FaultPlan.mixed(FAULT_RATE, seed=SEED, stream=stream, latency=0.05))
    jobs = batch_lines(LINES, QUEUES, "fifo")
    outcome = send_through_faults(proxy, prefix, QueueOptions(fifo=True), jobs)
    print(fault_report(proxy))
    assert outcome.fatal is None
    assert (outcome.sent, outcome.failed) == (LINES, [])
    main = [f"{prefix}q{k}.fifo" for k in range(QUEUES)]
    failed = [f"{prefix}q{k}_failed.fifo" for k in range(QUEUES)]
    assert drain(sqs_broker, main) == Counter(job.command for job in jobs)
    assert drain(sqs_broker, failed) == Counter()
    assert_faults_happened(proxy)
    # Answers lost after moto applied a batch: each resend was deduplicated.
    assert proxy.stats.count(Fault.RESET_AFTER, "SendMessageBatch") > 0


@pytest.mark.slow
@pytest.mark.usefixtures("fast_moto_clock")
def test_standard_batch_through_faults_loses_nothing_unreported(
    fault_proxy: ProxyFactory, sqs_broker: SqsBroker, prefix: str
) -> None:
    # Sends run 8 at a time: one random sequence per request body (without the test's
    # random prefix) gives each request the same fault whatever the order.
    def stream(action: str, body: bytes) -> str:
        return per_body(action, body.replace(prefix.encode(), b""))

    proxy = fault_proxy(FaultPlan.mixed(FAULT_RATE, seed=SEED, stream=stream, latency=0.05))
    jobs = batch_lines(LINES, QUEUES, "std")
    outcome = send_through_faults(proxy, prefix, QueueOptions(), jobs)
    arrived = drain(sqs_broker, [f"{prefix}q{k}" for k in range(QUEUES)])
    listed = {failed.line.lineno for failed in outcome.failed}
    lost = [job.where for job in jobs if arrived[job.command] == 0 and job.lineno not in listed]
    duplicated = {body: n for body, n in arrived.items() if n > 1}
    resent_batches = proxy.stats.count(Fault.RESET_AFTER, "SendMessageBatch")
    print(fault_report(proxy))
    print(
        f"standard queue: {outcome.sent} sent, {len(outcome.failed)} listed as failed "
        f"({sum(1 for f in outcome.failed if arrived[f.line.command])} of them arrived), "
        f"{len(duplicated)} lines arrived twice or more, after {resent_batches} batches "
        f"whose answer was lost; fatal: {outcome.fatal}"
    )
    assert lost == []
    assert set(arrived) <= {job.command for job in jobs}
    assert outcome.sent == LINES - len(outcome.failed)
    # A duplicate needs a request applied by moto whose answer never came back.
    assert sum(n - 1 for n in duplicated.values()) <= 10 * resent_batches
    assert_faults_happened(proxy)


def _poison_batch(_action: str, body: bytes) -> bool:
    return b"poison" in body


def test_cli_names_the_lines_of_a_batch_that_always_fails(
    fault_proxy: ProxyFactory, sqs_broker: SqsBroker, prefix: str, tmp_path: Path
) -> None:
    # Lines 21-30 go in one SendMessageBatch; the proxy answers it 500 every time.
    proxy = fault_proxy(
        FaultPlan.always(Fault.HTTP_500, actions={"SendMessageBatch"}, select=_poison_batch)
    )
    commands = [f"echo {i}" if i != 23 else "echo poison" for i in range(1, 51)]
    jobs = tmp_path / "jobs.txt"
    jobs.write_text("".join(f"q {command}\n" for command in commands))
    result = run_qdone(
        "enqueue-batch",
        str(jobs),
        "--broker",
        "sqs",
        "--endpoint-url",
        proxy.url,
        "--prefix",
        prefix,
    )
    assert result.returncode == ExitCode.FAILURE, result.stderr
    assert "Traceback" not in result.stderr
    errors = result.stderr.strip().splitlines()
    named = [re.search(rf"{re.escape(str(jobs))}:(\d+): not enqueued to q: ", e) for e in errors]
    assert [int(m[1]) for m in named if m] == list(range(21, 31)), result.stderr
    assert all("not confirmed" in line for line in errors[:-1])
    assert errors[-1] == (
        "qdone: error: 10 of 50 lines were not enqueued (listed above); the other 40 were"
    )
    # botocore tried the batch three times; none reached moto.
    assert proxy.stats.count(Fault.HTTP_500, "SendMessageBatch") == 3
    arrived = drain(sqs_broker, [f"{prefix}q"])
    assert arrived == Counter(commands[:20] + commands[30:])


def test_endpoint_gone_mid_batch_reports_every_unsent_line(
    fault_proxy: ProxyFactory, sqs_broker: SqsBroker, prefix: str
) -> None:
    """Sends run 8 at a time; when the endpoint goes away, the batches not yet
    started are cancelled and reported, not raised."""
    proxy = fault_proxy()
    broker = SqsBroker(region="us-east-1", endpoint_url=proxy.url)
    options, q = Options(prefix=prefix), QueueOptions()
    try:
        enqueue_batch(broker, options, q, batch_lines(1, 1, "warm"))  # queue url now cached
        proxy.stop()  # connections are refused from now on
        jobs = batch_lines(400, 1, "gone")
        outcome = enqueue_batch(broker, options, q, jobs, sleep=lambda _: None)
    finally:
        broker.close()
    assert outcome.fatal is not None and "cannot reach SQS" in str(outcome.fatal)
    assert (outcome.sent, len(outcome.failed)) == (0, 400)
    assert [f.line.lineno for f in outcome.failed] == list(range(1, 401))
    assert drain(sqs_broker, [f"{prefix}q0"]) == Counter(["echo warm 0"])


def test_fifo_batch_outlasts_resets_longer_than_botocore_retries(
    fault_proxy: ProxyFactory, sqs_broker: SqsBroker, prefix: str
) -> None:
    sends = itertools.count()

    def first_three_sends(action: str, _body: bytes) -> bool:
        return action == "SendMessageBatch" and next(sends) < 3

    proxy = fault_proxy(FaultPlan.always(Fault.RESET_AFTER, select=first_three_sends))
    jobs = batch_lines(30, 1, os.urandom(4).hex())
    outcome = send_through_faults(proxy, prefix, QueueOptions(fifo=True), jobs)
    assert proxy.stats.count(Fault.RESET_AFTER) == 3
    assert drain(sqs_broker, [f"{prefix}q0.fifo"]) == Counter(job.command for job in jobs)
    assert (outcome.fatal, outcome.sent, outcome.failed) == (None, 30, [])
