"""The Broker contract (``qdone/broker/base.py``), run against every broker: SQLite in a
temp dir and SQS on the session's moto server. Waits are real but short (≤ 1.5 s)."""

from __future__ import annotations

import json
import threading
import time

import pytest

from qdone.broker.base import Broker, ChangeVisibility, Message, Receipt, SendEntry
from qdone.errors import BrokerError, QueueNotFound

FIFO = {"FifoQueue": "true"}


def _on_sqs(broker: Broker, reason: str) -> None:
    """Skip where moto, not the rule, is at odds with SQS."""
    if broker.service == "SQS":
        pytest.skip(f"moto differs from SQS: {reason}")


def _send(broker: Broker, url: str, *bodies: str, **fields: object) -> list[str]:
    """Send ``bodies`` in one batch; return their message ids (all must be sent)."""
    entries = [SendEntry(id=f"e{i}", body=body, **fields) for i, body in enumerate(bodies)]  # type: ignore[arg-type]
    result = broker.send_batch(url, entries)
    assert result.failed == []
    return [result.sent[e.id] for e in entries]


def _fifo_send(broker: Broker, url: str, *items: tuple[str, str]) -> None:
    """Send ``(group, body)`` pairs in order, each its own dedup id."""
    for group, body in items:
        entry = SendEntry(id="e", body=body, group_id=group, dedup_id=body)
        assert broker.send_batch(url, [entry]).failed == []


def _receive(broker: Broker, url: str, n: int = 10, vt: int = 30, wait: float = 0) -> list[Message]:
    return broker.receive(url, max_messages=n, visibility_timeout=vt, wait_time=wait)


def _delete(broker: Broker, url: str, *messages: Message) -> None:
    entries = [Receipt(id=f"d{i}", receipt=m.receipt) for i, m in enumerate(messages)]
    result = broker.delete_batch(url, entries)
    assert result.failed == [] and sorted(result.ok) == sorted(e.id for e in entries)


def _counts(broker: Broker, url: str) -> tuple[int, int, int]:
    attrs = broker.get_queue_attributes(url)
    return (
        int(attrs["ApproximateNumberOfMessages"]),
        int(attrs["ApproximateNumberOfMessagesNotVisible"]),
        int(attrs["ApproximateNumberOfMessagesDelayed"]),
    )


def _refused(broker: Broker, url: str, entry: SendEntry) -> bool:
    """Whether the entry was refused, either per entry or as a whole request."""
    try:
        result = broker.send_batch(url, [entry])
    except BrokerError:
        return True
    return [f.id for f in result.failed] == [entry.id] and not result.sent


def _redrive(broker: Broker, dead_url: str, max_receives: int) -> dict[str, str]:
    policy = {"deadLetterTargetArn": broker.queue_arn(dead_url), "maxReceiveCount": max_receives}
    return {"RedrivePolicy": json.dumps(policy)}


# -- queues ---------------------------------------------------------------------------


def test_create_queue_is_idempotent_with_the_same_attributes(broker: Broker, prefix: str) -> None:
    url = broker.create_queue(f"{prefix}q", {"VisibilityTimeout": "60"})
    assert broker.create_queue(f"{prefix}q", {"VisibilityTimeout": "60"}) == url
    assert broker.get_queue_url(f"{prefix}q") == url
    assert broker.queue_name(url) == f"{prefix}q"
    assert broker.queue_arn(url).endswith(f":{prefix}q")


def test_create_queue_with_other_attributes_is_refused(broker: Broker, prefix: str) -> None:
    broker.create_queue(f"{prefix}q", {"VisibilityTimeout": "60"})
    with pytest.raises(BrokerError) as err:
        broker.create_queue(f"{prefix}q", {"VisibilityTimeout": "90"})
    assert "qdone check" in f"{err.value} {err.value.hint}"


def test_missing_queue(broker: Broker, prefix: str) -> None:
    with pytest.raises(QueueNotFound):
        broker.get_queue_url(f"{prefix}nope")


def test_default_attributes(broker: Broker, prefix: str) -> None:
    url = broker.create_queue(f"{prefix}q", {})
    attrs = broker.get_queue_attributes(url)
    assert {k: attrs[k] for k in ("VisibilityTimeout", "DelaySeconds")} == {
        "VisibilityTimeout": "30",
        "DelaySeconds": "0",
    }
    assert attrs["MaximumMessageSize"] == "1048576"
    assert attrs["MessageRetentionPeriod"] == "345600"
    assert attrs["ReceiveMessageWaitTimeSeconds"] == "0"
    assert attrs["QueueArn"] == broker.queue_arn(url)
    assert abs(float(attrs["CreatedTimestamp"]) - time.time()) < 120  # moto: a float
    assert float(attrs["LastModifiedTimestamp"]) >= float(attrs["CreatedTimestamp"])
    assert attrs.get("FifoQueue", "false") == "false"
    assert broker.get_queue_attributes(url, ["VisibilityTimeout"]) == {"VisibilityTimeout": "30"}


def test_fifo_queue(broker: Broker, prefix: str) -> None:
    url = broker.create_queue(f"{prefix}q.fifo", FIFO)
    assert broker.get_queue_attributes(url)["FifoQueue"] == "true"
    with pytest.raises(BrokerError):
        broker.create_queue(f"{prefix}plain", FIFO)


def test_set_queue_attributes(broker: Broker, prefix: str) -> None:
    url = broker.create_queue(f"{prefix}q", {"MessageRetentionPeriod": "3600"})
    broker.set_queue_attributes(url, {"VisibilityTimeout": "45"})
    attrs = broker.get_queue_attributes(url)
    assert (attrs["VisibilityTimeout"], attrs["MessageRetentionPeriod"]) == ("45", "3600")


def test_list_queues_by_prefix(broker: Broker, prefix: str) -> None:
    urls = [broker.create_queue(f"{prefix}{n}", {}) for n in ("b", "a", "a_failed")]
    broker.create_queue(f"x{prefix}a", {})
    assert broker.list_queues(prefix) == sorted(urls)
    assert broker.list_queues(f"{prefix}a") == sorted(urls[1:])


def test_delete_queue(broker: Broker, prefix: str) -> None:
    url = broker.create_queue(f"{prefix}q", {})
    _send(broker, url, "echo 1")
    broker.delete_queue(url)
    assert broker.list_queues(prefix) == []
    with pytest.raises(QueueNotFound):
        broker.get_queue_attributes(url)
    with pytest.raises(QueueNotFound):
        broker.delete_queue(url)


def test_tags(broker: Broker, prefix: str) -> None:
    url = broker.create_queue(f"{prefix}q", {}, tags={"team": "a"})
    assert broker.list_queue_tags(url) == {"team": "a"}
    broker.tag_queue(url, {"env": "test"})
    assert broker.list_queue_tags(url) == {"team": "a", "env": "test"}


# -- messages -------------------------------------------------------------------------


def test_send_receive_delete(broker: Broker, prefix: str) -> None:
    url = broker.create_queue(f"{prefix}q", {})
    ids = _send(broker, url, "echo 1", "echo ✓ 2", "echo 3", attributes={"k": "v"})
    before = broker.calls.by_action(broker.service)
    messages = _receive(broker, url)
    assert sorted(m.message_id for m in messages) == sorted(ids)
    assert sorted(m.body for m in messages) == ["echo 1", "echo 3", "echo ✓ 2"]
    for m in messages:
        assert (m.receive_count, m.group_id, dict(m.attributes)) == (1, None, {"k": "v"})
        assert m.queue_url == url and abs(m.sent_at - time.time()) < 60
    after = broker.calls.by_action(broker.service)
    assert after.get("ReceiveMessage", 0) == before.get("ReceiveMessage", 0) + 1
    _delete(broker, url, *messages)
    assert _receive(broker, url) == []
    assert _counts(broker, url) == (0, 0, 0)


def test_send_one(broker: Broker, prefix: str) -> None:
    url = broker.create_queue(f"{prefix}q", {})
    message_id = broker.send(url, SendEntry(id="x", body="echo one"))
    [message] = _receive(broker, url)
    assert (message.message_id, message.body) == (message_id, "echo one")


def test_counts(broker: Broker, prefix: str) -> None:
    url = broker.create_queue(f"{prefix}q", {})
    _send(broker, url, "a", "b")
    _send(broker, url, "later", delay=600)
    assert _counts(broker, url) == (2, 0, 1)
    assert len(_receive(broker, url, n=1)) == 1
    assert _counts(broker, url) == (1, 1, 1)


def test_batch_limits_fail_the_whole_batch(broker: Broker, prefix: str) -> None:
    url = broker.create_queue(f"{prefix}q", {})
    with pytest.raises(BrokerError):
        broker.send_batch(url, [SendEntry(id=str(i), body="x") for i in range(11)])
    with pytest.raises(BrokerError):
        broker.send_batch(url, [SendEntry(id="same", body="x"), SendEntry(id="same", body="y")])
    big = "x" * 600_000  # two of them: more than the 1 MiB a whole batch may carry
    with pytest.raises(BrokerError):
        broker.send_batch(url, [SendEntry(id="a", body=big), SendEntry(id="b", body=big)])
    assert _counts(broker, url) == (0, 0, 0)


def test_batch_partial_failure_oversize_entry(broker: Broker, prefix: str) -> None:
    _on_sqs(broker, "moto fails the whole SendMessageBatch when one entry is too large")
    url = broker.create_queue(f"{prefix}q", {"MaximumMessageSize": "1024"})
    entries = [SendEntry(id="ok", body="echo ok"), SendEntry(id="big", body="é" * 600)]
    result = broker.send_batch(url, entries)  # 1200 bytes in UTF-8, 600 characters
    assert list(result.sent) == ["ok"]
    assert [(f.id, f.sender_fault) for f in result.failed] == [("big", True)]
    assert [m.body for m in _receive(broker, url)] == ["echo ok"]


def test_batch_partial_failure_bad_delay(broker: Broker, prefix: str) -> None:
    url = broker.create_queue(f"{prefix}q", {})
    entries = [SendEntry(id="ok", body="echo ok"), SendEntry(id="bad", body="x", delay=901)]
    result = broker.send_batch(url, entries)
    assert list(result.sent) == ["ok"] and [f.id for f in result.failed] == ["bad"]


def test_visibility_timeout_hides_then_shows(broker: Broker, prefix: str) -> None:
    url = broker.create_queue(f"{prefix}q", {})
    _send(broker, url, "echo 1")
    [first] = _receive(broker, url, vt=1)
    assert _receive(broker, url) == []
    time.sleep(1.3)
    [again] = _receive(broker, url)
    assert (again.message_id, again.receive_count) == (first.message_id, 2)
    assert again.receipt != first.receipt


def test_change_visibility(broker: Broker, prefix: str) -> None:
    url = broker.create_queue(f"{prefix}q", {})
    _send(broker, url, "echo 1")
    [message] = _receive(broker, url)
    result = broker.change_visibility_batch(
        url,
        [
            ChangeVisibility(id="show", receipt=message.receipt, timeout=0),
            ChangeVisibility(id="toolong", receipt=message.receipt, timeout=43_201),
        ],
    )
    assert result.ok == ["show"] and [f.id for f in result.failed] == ["toolong"]
    [again] = _receive(broker, url)
    assert (again.message_id, again.receive_count) == (message.message_id, 2)
    extended = broker.change_visibility_batch(
        url, [ChangeVisibility(id="hide", receipt=again.receipt, timeout=600)]
    )
    assert extended.ok == ["hide"]
    assert _receive(broker, url) == []


def test_receive_count_increments(broker: Broker, prefix: str) -> None:
    url = broker.create_queue(f"{prefix}q", {})
    _send(broker, url, "echo 1")
    counts = [_receive(broker, url, vt=0)[0].receive_count for _ in range(3)]
    assert counts == [1, 2, 3]


def test_redrive_to_the_dead_letter_queue(broker: Broker, prefix: str) -> None:
    dead = broker.create_queue(f"{prefix}q_failed", {})
    url = broker.create_queue(f"{prefix}q", _redrive(broker, dead, 2))
    assert json.loads(broker.get_queue_attributes(url)["RedrivePolicy"]) == {
        "deadLetterTargetArn": broker.queue_arn(dead),
        "maxReceiveCount": 2,
    }
    _send(broker, url, "echo doomed", attributes={"k": "v"})
    assert [_receive(broker, url, vt=0)[0].receive_count for _ in range(2)] == [1, 2]
    assert _receive(broker, url, vt=0) == []  # its third receive moves it instead
    [moved] = _receive(broker, dead, wait=1)
    assert (moved.body, dict(moved.attributes)) == ("echo doomed", {"k": "v"})
    assert _counts(broker, url) == (0, 0, 0)


def test_redrive_target_must_exist(broker: Broker, prefix: str) -> None:
    missing = broker.create_queue(f"{prefix}gone", {})
    policy = _redrive(broker, missing, 1)
    broker.delete_queue(missing)
    with pytest.raises(BrokerError):
        broker.create_queue(f"{prefix}q", policy)


def test_delay(broker: Broker, prefix: str) -> None:
    url = broker.create_queue(f"{prefix}q", {"DelaySeconds": "1"})
    _send(broker, url, "queue delay")
    _send(broker, url, "no delay", delay=0)
    assert [m.body for m in _receive(broker, url)] == ["no delay"]
    assert _counts(broker, url)[2] == 1
    time.sleep(1.3)
    assert [m.body for m in _receive(broker, url)] == ["queue delay"]


def test_long_poll_returns_when_a_message_arrives(broker: Broker, prefix: str) -> None:
    url = broker.create_queue(f"{prefix}q", {})
    start = time.monotonic()
    assert _receive(broker, url, wait=1) == []
    assert time.monotonic() - start >= 0.9
    sender = threading.Timer(0.3, lambda: _send(broker, url, "late"))
    sender.start()
    start = time.monotonic()
    messages = _receive(broker, url, wait=1)
    sender.join()
    assert [m.body for m in messages] == ["late"]
    assert time.monotonic() - start < 0.95


def test_stale_receipt_fails_and_spares_the_newer_claim(broker: Broker, prefix: str) -> None:
    _on_sqs(broker, "moto honours every receipt a message ever had (had_receipt_handle)")
    url = broker.create_queue(f"{prefix}q", {})
    _send(broker, url, "echo 1")
    [old] = _receive(broker, url, vt=0)
    [new] = _receive(broker, url, vt=30)
    stale = broker.delete_batch(url, [Receipt(id="old", receipt=old.receipt)])
    assert stale.ok == [] and [f.id for f in stale.failed] == ["old"]
    hide = broker.change_visibility_batch(url, [ChangeVisibility("old", old.receipt, 0)])
    assert hide.ok == [] and [f.id for f in hide.failed] == ["old"]
    assert _counts(broker, url) == (0, 1, 0)
    _delete(broker, url, new)


# -- FIFO -----------------------------------------------------------------------------


def test_fifo_order_and_one_in_flight_per_group(broker: Broker, prefix: str) -> None:
    url = broker.create_queue(f"{prefix}q.fifo", FIFO)
    _fifo_send(broker, url, ("g1", "a1"), ("g1", "a2"), ("g2", "b1"), ("g1", "a3"))
    [first] = _receive(broker, url, n=1)
    assert (first.body, first.group_id) == ("a1", "g1")
    assert [m.body for m in _receive(broker, url)] == ["b1"]  # g1 is busy with a1
    assert _receive(broker, url) == []
    _delete(broker, url, first)
    rest = [m.body for m in _receive(broker, url)]
    assert rest in (["a2"], ["a2", "a3"])  # the group resumes, in the order sent


def test_fifo_group_resumes_when_visibility_expires(broker: Broker, prefix: str) -> None:
    url = broker.create_queue(f"{prefix}q.fifo", FIFO)
    _fifo_send(broker, url, ("g", "1"), ("g", "2"))
    assert [m.body for m in _receive(broker, url, n=1, vt=0)] == ["1"]
    [again] = _receive(broker, url, n=1)
    assert (again.body, again.receive_count) == ("1", 2)


def test_fifo_dedup(broker: Broker, prefix: str) -> None:
    url = broker.create_queue(f"{prefix}q.fifo", FIFO)
    for attempt in ("e1", "e2"):
        entry = SendEntry(id=attempt, body="echo once", group_id="g", dedup_id="d")
        result = broker.send_batch(url, [entry])
        assert list(result.sent) == [attempt]
    assert [m.body for m in _receive(broker, url)] == ["echo once"]


def test_fifo_needs_group_and_dedup_ids_and_no_delay(broker: Broker, prefix: str) -> None:
    url = broker.create_queue(f"{prefix}q.fifo", FIFO)
    assert _refused(broker, url, SendEntry(id="e", body="x", dedup_id="d"))
    assert _refused(broker, url, SendEntry(id="e", body="x", group_id="g"))
    assert _refused(broker, url, SendEntry(id="e", body="x", group_id="g", dedup_id="d", delay=5))
    assert _counts(broker, url) == (0, 0, 0)


def test_delete_batches_gives_a_result_per_batch(broker: Broker, prefix: str) -> None:
    url = broker.create_queue(f"{prefix}db", {})
    _send(broker, url, *(f"echo {i}" for i in range(10)))
    _send(broker, url, "echo 10", "echo 11")
    messages = _receive(broker, url) + _receive(broker, url)
    assert len(messages) == 12
    first = [Receipt(str(i), m.receipt) for i, m in enumerate(messages[:10])]
    second = [Receipt("a", messages[10].receipt), Receipt("b", messages[11].receipt)]
    second.append(Receipt("bad", "not-a-receipt"))
    if broker.batches_per_send >= 2:
        results = broker.delete_batches(url, [first, second])
    else:  # one batch a call, as SQS takes it
        with pytest.raises(ValueError):
            broker.delete_batches(url, [first, second])
        results = [broker.delete_batches(url, [batch])[0] for batch in (first, second)]
    assert sorted(results[0].ok) == sorted(e.id for e in first) and results[0].failed == []
    assert sorted(results[1].ok) == ["a", "b"]
    assert [f.id for f in results[1].failed] == ["bad"]
    assert _counts(broker, url) == (0, 0, 0)
