"""enqueue and enqueue_batch, on both brokers: queue layout, call counts, failures."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence

import pytest

from qdone.batchfile import BatchLine
from qdone.broker.base import Broker, Receipt, SendEntry, SendResult
from qdone.config import Options, QueueOptions
from qdone.enqueue import SendSettings, enqueue, enqueue_batch
from qdone.errors import (
    BrokerError,
    BrokerUnavailable,
    FailedEntry,
    InvalidQueueName,
    MessageTooLarge,
    UsageError,
)


def lines(queue: str, n: int, source: str = "jobs.txt") -> list[BatchLine]:
    return [BatchLine(source, i + 1, queue, f"echo {i}") for i in range(n)]


def drain(broker: Broker, url: str) -> list[str]:
    """Receive and delete every message (FIFO groups unblock as they are deleted)."""
    bodies: list[str] = []
    while batch := broker.receive(url, 10, 30, 0):
        bodies += [m.body for m in batch]
        broker.delete_batch(url, [Receipt(str(n), m.receipt) for n, m in enumerate(batch)])
    return bodies


def test_new_queue_pair_is_node_qdone_layout(broker: Broker, prefix: str) -> None:
    options = Options(prefix=prefix)
    result = enqueue(broker, options, QueueOptions(), "jobs", "echo hi")
    assert result.created == [f"{prefix}jobs_failed", f"{prefix}jobs"]
    url = broker.get_queue_url(f"{prefix}jobs")
    failed_url = broker.get_queue_url(f"{prefix}jobs_failed")
    policy = json.loads(broker.get_queue_attributes(url)["RedrivePolicy"])
    assert policy["deadLetterTargetArn"] == broker.queue_arn(failed_url)
    assert int(policy["maxReceiveCount"]) == 1
    assert drain(broker, url) == ["echo hi"]


def test_enqueue_costs_four_calls_new_and_two_existing(
    sqs_broker: Broker, moto_endpoint: str, prefix: str
) -> None:
    options = Options(prefix=prefix)
    enqueue(sqs_broker, options, QueueOptions(), "q", "true")
    assert sqs_broker.calls.by_action("SQS") == {
        "CreateQueue": 2,
        "GetQueueUrl": 1,
        "SendMessage": 1,
    }
    from qdone.broker.sqs import SqsBroker

    fresh = SqsBroker(region="us-east-1", endpoint_url=moto_endpoint)
    enqueue(fresh, options, QueueOptions(), "q", "true")
    assert fresh.calls.by_action("SQS") == {"GetQueueUrl": 1, "SendMessage": 1}


def test_retries_and_dlq_shape_the_redrive_policies(broker: Broker, prefix: str) -> None:
    q = QueueOptions(retries=2, dlq=True, dlq_after=5, fail_delay=7)
    result = enqueue(broker, Options(prefix=prefix), q, "r", "true")
    assert result.created == [f"{prefix}r_dead", f"{prefix}r_failed", f"{prefix}r"]
    main = broker.get_queue_attributes(broker.get_queue_url(f"{prefix}r"))
    failed = broker.get_queue_attributes(broker.get_queue_url(f"{prefix}r_failed"))
    assert json.loads(main["RedrivePolicy"])["maxReceiveCount"] == 3
    dead_arn = broker.queue_arn(broker.get_queue_url(f"{prefix}r_dead"))
    assert json.loads(failed["RedrivePolicy"]) == {
        "deadLetterTargetArn": dead_arn,
        "maxReceiveCount": 5,
    }
    assert failed["DelaySeconds"] == "7"


def test_fifo_queue_names_and_groups(broker: Broker, prefix: str) -> None:
    options = Options(prefix=prefix)
    q = QueueOptions(fifo=True)
    result = enqueue(broker, options, q, "f", "echo 1", SendSettings(group_id="g1"))
    assert result.created == [f"{prefix}f_failed.fifo", f"{prefix}f.fifo"]
    url = broker.get_queue_url(f"{prefix}f.fifo")
    [message] = broker.receive(url, 10, 30, 0)
    assert (message.body, message.group_id) == ("echo 1", "g1")


def test_explicit_zero_delay_is_a_value_and_fifo_delay_is_refused(
    broker: Broker, prefix: str
) -> None:
    options = Options(prefix=prefix)
    enqueue(broker, options, QueueOptions(), "d", "true", SendSettings(delay=0))
    with pytest.raises(UsageError, match="FIFO"):
        enqueue(broker, options, QueueOptions(fifo=True), "d", "true", SendSettings(delay=5))
    with pytest.raises(UsageError, match="0 to 900"):
        enqueue(broker, options, QueueOptions(), "d", "true", SendSettings(delay=901))


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("bad name", InvalidQueueName),
        ("x" * 80, InvalidQueueName),
        ("semi;colon", InvalidQueueName),
    ],
)
def test_bad_queue_names_fail_before_any_call(
    sqlite_broker: Broker, name: str, error: type[Exception]
) -> None:
    with pytest.raises(error):
        enqueue(sqlite_broker, Options(), QueueOptions(), name, "true")
    assert sqlite_broker.calls.total() == 0


def test_empty_and_oversized_commands(sqlite_broker: Broker) -> None:
    with pytest.raises(UsageError, match="empty"):
        enqueue(sqlite_broker, Options(), QueueOptions(), "q", "  ")
    with pytest.raises(MessageTooLarge, match="1,048,577 bytes"):
        enqueue(sqlite_broker, Options(), QueueOptions(), "q", "é" + "x" * 1_048_575)


def test_batch_of_1000_lines_to_a_new_queue_costs_103_calls(
    sqs_broker: Broker, prefix: str
) -> None:
    outcome = enqueue_batch(sqs_broker, Options(prefix=prefix), QueueOptions(), lines("big", 1000))
    assert (outcome.sent, outcome.failed) == (1000, [])
    assert sqs_broker.calls.by_action("SQS") == {
        "CreateQueue": 2,
        "GetQueueUrl": 1,
        "SendMessageBatch": 100,
    }


def test_sqlite_commits_many_batches_at_once_all_or_nothing(
    sqlite_broker: Broker, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = sqlite_broker.send_batches
    sizes: list[int] = []

    def send_batches(url: str, batches: Sequence[Sequence[SendEntry]]) -> list[SendResult]:
        sizes.append(len(batches))
        return real(url, batches)

    monkeypatch.setattr(sqlite_broker, "send_batches", send_batches)
    outcome = enqueue_batch(sqlite_broker, Options(prefix=prefix), QueueOptions(), lines("b", 2505))
    assert (outcome.sent, outcome.failed) == (2505, [])
    assert sizes == [251]
    assert sqlite_broker.calls.by_action("SQLite")["SendMessageBatch"] == 251


def test_batch_keeps_order_per_fifo_queue(broker: Broker, prefix: str) -> None:
    jobs = lines("a", 25) + lines("b", 5, source="other.txt")
    outcome = enqueue_batch(broker, Options(prefix=prefix), QueueOptions(fifo=True), jobs)
    assert outcome.per_queue == {f"{prefix}a.fifo": 25, f"{prefix}b.fifo": 5}
    received = drain(broker, broker.get_queue_url(f"{prefix}a.fifo"))
    assert received == [f"echo {i}" for i in range(25)]


def _flaky(broker: Broker, monkeypatch: pytest.MonkeyPatch, fail: set[str], sender: bool) -> None:
    """Make sends refuse entries whose body is in ``fail`` (once, unless it is the
    sender's fault)."""
    real = broker.send_batches
    refused: set[str] = set()

    def one(url: str, entries: Sequence[SendEntry]) -> SendResult:
        bad = [e for e in entries if e.body in fail and (sender or e.body not in refused)]
        refused.update(e.body for e in bad)
        good = [e for e in entries if e not in bad]
        result = real(url, [good])[0] if good else SendResult({}, [])
        failures = [FailedEntry(e.id, "InternalError", "try again", sender) for e in bad]
        return SendResult(result.sent, result.failed + failures)

    def send_batches(url: str, batches: Sequence[Sequence[SendEntry]]) -> list[SendResult]:
        return [one(url, entries) for entries in batches]

    monkeypatch.setattr(broker, "send_batches", send_batches)


def test_failed_entries_are_retried_with_the_same_ids(
    broker: Broker, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _flaky(broker, monkeypatch, {"echo 3", "echo 17"}, sender=False)
    jobs = lines("retry", 30)
    outcome = enqueue_batch(
        broker, Options(prefix=prefix), QueueOptions(fifo=True), jobs, sleep=lambda s: None
    )
    assert (outcome.sent, outcome.failed) == (30, [])
    assert sorted(drain(broker, broker.get_queue_url(f"{prefix}retry.fifo"))) == sorted(
        j.command for j in jobs
    )


def test_refused_lines_are_named_exactly(
    sqlite_broker: Broker, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _flaky(sqlite_broker, monkeypatch, {"echo 3", "echo 17"}, sender=True)
    outcome = enqueue_batch(
        sqlite_broker, Options(prefix=prefix), QueueOptions(), lines("ref", 30), sleep=lambda s: 0
    )
    assert outcome.sent == 28
    assert [f.line.where for f in outcome.failed] == ["jobs.txt:4", "jobs.txt:18"]
    assert len(drain(sqlite_broker, sqlite_broker.get_queue_url(f"{prefix}ref"))) == 28


def test_fifo_whole_call_failures_are_retried_without_duplicates(
    broker: Broker, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = broker.send_batches
    calls = itertools.count()

    def send_batches(url: str, batches: Sequence[Sequence[SendEntry]]) -> list[SendResult]:
        n = next(calls)
        if n % 3 == 1:  # the call went through, but its answer was lost
            real(url, batches)
            raise BrokerError("connection reset")
        return real(url, batches)

    monkeypatch.setattr(broker, "send_batches", send_batches)
    monkeypatch.setattr(broker, "batches_per_send", 1)
    jobs = lines("dup", 50)
    outcome = enqueue_batch(
        broker, Options(prefix=prefix), QueueOptions(fifo=True), jobs, sleep=lambda s: None
    )
    assert (outcome.sent, outcome.failed) == (50, [])
    received = drain(broker, broker.get_queue_url(f"{prefix}dup.fifo"))
    assert sorted(received) == sorted(j.command for j in jobs)


def test_standard_whole_call_failure_is_reported_not_resent(
    sqlite_broker: Broker, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = sqlite_broker.send_batches
    calls = itertools.count()

    def send_batches(url: str, batches: Sequence[Sequence[SendEntry]]) -> list[SendResult]:
        if next(calls) == 1:
            raise BrokerError("connection reset")
        return real(url, batches)

    monkeypatch.setattr(sqlite_broker, "send_batches", send_batches)
    monkeypatch.setattr(sqlite_broker, "batches_per_send", 1)
    outcome = enqueue_batch(sqlite_broker, Options(prefix=prefix), QueueOptions(), lines("s", 30))
    assert outcome.sent == 20
    assert [f.line.lineno for f in outcome.failed] == list(range(11, 21))
    assert all("not confirmed" in f.reason for f in outcome.failed)


def test_unreachable_broker_reports_every_unsent_line(
    sqlite_broker: Broker, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = sqlite_broker.send_batches
    calls = itertools.count()

    def send_batches(url: str, batches: Sequence[Sequence[SendEntry]]) -> list[SendResult]:
        if next(calls) >= 2:
            raise BrokerUnavailable("endpoint unreachable")
        return real(url, batches)

    monkeypatch.setattr(sqlite_broker, "send_batches", send_batches)
    monkeypatch.setattr(sqlite_broker, "batches_per_send", 1)
    outcome = enqueue_batch(sqlite_broker, Options(prefix=prefix), QueueOptions(), lines("u", 45))
    assert outcome.sent == 20
    assert isinstance(outcome.fatal, BrokerUnavailable)
    assert sorted(f.line.lineno for f in outcome.failed) == list(range(21, 46))


def test_command_over_the_queue_limit_stops_the_batch_before_any_send(
    broker: Broker, prefix: str
) -> None:
    broker.create_queue(f"{prefix}small", {"MaximumMessageSize": "1024"})
    # An existing queue and a command over 256 KiB: qdone reads the queue's limit.
    jobs = [*lines("small", 3), BatchLine("jobs.txt", 4, "small", "x" * 300_000)]
    with pytest.raises(MessageTooLarge, match=r"jobs\.txt:4: .* takes at most 1,024"):
        enqueue_batch(broker, Options(prefix=prefix), QueueOptions(), jobs)
    assert drain(broker, broker.get_queue_url(f"{prefix}small")) == []


def test_bad_name_in_batch_names_the_line(sqlite_broker: Broker) -> None:
    jobs = [*lines("ok", 2), BatchLine("jobs.txt", 3, "not ok!", "true")]
    with pytest.raises(InvalidQueueName, match=r"jobs\.txt:3: queue name 'not ok!'"):
        enqueue_batch(sqlite_broker, Options(), QueueOptions(), jobs)
    assert sqlite_broker.calls.total() == 0


@pytest.mark.parametrize(
    ("bad", "error", "message"),
    [
        (("not ok!", "true"), InvalidQueueName, r"jobs\.txt:3: queue name 'not ok!'"),
        (("ok", "   "), UsageError, r"jobs\.txt:3: the command is empty"),
        (("ok", "echo \x00"), UsageError, r"jobs\.txt:3: the command holds character U\+0000"),
        (("ok", "x" * 1_048_577), MessageTooLarge, r"jobs\.txt:3: the command is 1,048,577"),
    ],
    ids=["name", "empty", "character", "size"],
)
def test_the_first_bad_line_is_named_whatever_follows(
    sqlite_broker: Broker, bad: tuple[str, str], error: type[Exception], message: str
) -> None:
    later = [
        BatchLine("jobs.txt", 4, "also bad!", "true"),
        BatchLine("jobs.txt", 5, "ok", ""),
        BatchLine("jobs.txt", 6, "ok", "tab\tand é are fine"),
    ]
    for rest in (later, later[1:], later[2:]):
        jobs = [*lines("ok", 2), BatchLine("jobs.txt", 3, *bad), *rest]
        with pytest.raises(error, match=message):
            enqueue_batch(sqlite_broker, Options(), QueueOptions(), jobs)
    assert sqlite_broker.calls.total() == 0


def test_interleaved_queues_keep_their_own_order(sqlite_broker: Broker, prefix: str) -> None:
    commands = ["echo a", "tab\there", "é", "echo b"]  # some plain, some not
    jobs = [BatchLine("jobs.txt", n + 1, f"q{n % 3}", f"{commands[n % 4]} {n}") for n in range(60)]
    outcome = enqueue_batch(sqlite_broker, Options(prefix=prefix), QueueOptions(), jobs)
    assert (outcome.sent, outcome.failed) == (60, [])
    assert outcome.per_queue == {f"{prefix}q0": 20, f"{prefix}q1": 20, f"{prefix}q2": 20}
    for q in range(3):
        received = drain(sqlite_broker, sqlite_broker.get_queue_url(f"{prefix}q{q}"))
        assert received == [job.command for job in jobs if job.queue == f"q{q}"]
