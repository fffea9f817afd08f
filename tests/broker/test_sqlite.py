"""SqliteBroker only: time through an injected clock (no sleeps), the store file, errors,
several threads and processes on one store, and speed."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from qdone.broker import sqlite_schema
from qdone.broker.base import ChangeVisibility, Receipt, SendEntry
from qdone.broker.sqlite import SqliteBroker
from qdone.errors import BrokerError, BrokerUnavailable, QueueNotFound

NOW = 1_900_000_000.0
FIFO = {"FifoQueue": "true"}


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Iterator[SqliteBroker]:
    broker = SqliteBroker(tmp_path / "store.db", clock=clock)
    yield broker
    broker.close()


def _send(broker: SqliteBroker, url: str, *bodies: str, **fields: object) -> list[str]:
    entries = [SendEntry(id=f"e{i}", body=b, **fields) for i, b in enumerate(bodies)]  # type: ignore[arg-type]
    result = broker.send_batch(url, entries)
    assert result.failed == []
    return [result.sent[e.id] for e in entries]


def _bodies(broker: SqliteBroker, url: str, vt: int = 30) -> list[str]:
    return [m.body for m in broker.receive(url, 10, vt, 0)]


def _counts(broker: SqliteBroker, url: str) -> tuple[str, str, str]:
    attrs = broker.get_queue_attributes(url)
    return (
        attrs["ApproximateNumberOfMessages"],
        attrs["ApproximateNumberOfMessagesNotVisible"],
        attrs["ApproximateNumberOfMessagesDelayed"],
    )


# -- time, through the clock -------------------------------------------------------------


def test_visibility_expires(store: SqliteBroker, clock: Clock) -> None:
    url = store.create_queue("q", {})
    _send(store, url, "echo 1")
    [first] = store.receive(url, 1, 30, 0)
    clock.advance(29.9)
    assert _bodies(store, url) == []
    assert _counts(store, url) == ("0", "1", "0")
    clock.advance(0.1)
    [again] = store.receive(url, 1, 30, 0)
    assert (again.message_id, again.receive_count) == (first.message_id, 2)


def test_delay_per_message_and_per_queue(store: SqliteBroker, clock: Clock) -> None:
    url = store.create_queue("q", {"DelaySeconds": "60"})
    _send(store, url, "queue delay")
    _send(store, url, "own delay", delay=10)
    assert _counts(store, url) == ("0", "0", "2")
    clock.advance(10)
    assert _bodies(store, url, vt=300) == ["own delay"]
    clock.advance(50)
    assert _bodies(store, url, vt=300) == ["queue delay"]


def test_fifo_dedup_window_is_five_minutes(store: SqliteBroker, clock: Clock) -> None:
    url = store.create_queue("q.fifo", FIFO)
    entry = SendEntry(id="e", body="echo 1", group_id="g", dedup_id="d")
    [original] = store.send_batch(url, [entry]).sent.values()
    clock.advance(299)
    assert store.send_batch(url, [entry]).sent == {"e": original}
    clock.advance(1)
    [fresh] = store.send_batch(url, [entry]).sent.values()
    assert fresh != original
    assert _counts(store, url) == ("2", "0", "0")


def test_fifo_duplicates_within_one_batch(store: SqliteBroker) -> None:
    url = store.create_queue("q.fifo", FIFO)
    entries = [SendEntry(id=i, body="x", group_id="g", dedup_id="d") for i in ("a", "b")]
    sent = store.send_batch(url, entries).sent
    assert sent["a"] == sent["b"]
    assert _counts(store, url) == ("1", "0", "0")


def test_content_based_dedup(store: SqliteBroker) -> None:
    url = store.create_queue("q.fifo", {**FIFO, "ContentBasedDeduplication": "true"})
    for _ in range(2):
        store.send_batch(url, [SendEntry(id="e", body="same", group_id="g")])
    assert _counts(store, url) == ("1", "0", "0")


def test_retention_drops_old_messages(store: SqliteBroker, clock: Clock) -> None:
    url = store.create_queue("q", {"MessageRetentionPeriod": "60"})
    _send(store, url, "old")
    clock.advance(30)
    _send(store, url, "young")
    clock.advance(31)
    assert _counts(store, url) == ("1", "0", "0")
    assert _bodies(store, url) == ["young"]


def test_redrive_moves_a_fresh_message_keeping_its_sent_time(
    store: SqliteBroker, clock: Clock
) -> None:
    dead = store.create_queue("q_failed", {})
    policy = {"deadLetterTargetArn": store.queue_arn(dead), "maxReceiveCount": 1}
    url = store.create_queue("q", {"RedrivePolicy": json.dumps(policy)})
    [message_id] = _send(store, url, "echo 1", group_id=None)
    assert _bodies(store, url, vt=0) == ["echo 1"]
    clock.advance(5)
    assert _bodies(store, url) == []
    [moved] = store.receive(dead, 10, 30, 0)
    assert (moved.message_id, moved.receive_count, moved.sent_at) == (message_id, 1, NOW)
    assert store.active_since([dead], NOW + 5) == {dead: True}


def test_fifo_redrive_then_the_group_goes_on(store: SqliteBroker) -> None:
    dead = store.create_queue("q_failed.fifo", FIFO)
    policy = {"deadLetterTargetArn": store.queue_arn(dead), "maxReceiveCount": 1}
    url = store.create_queue("q.fifo", {**FIFO, "RedrivePolicy": json.dumps(policy)})
    for body in ("1", "2"):
        store.send_batch(url, [SendEntry(id="e", body=body, group_id="g", dedup_id=body)])
    assert [m.body for m in store.receive(url, 1, 0, 0)] == ["1"]
    assert _bodies(store, url) == ["2"]  # "1" went to the dead-letter queue
    assert _bodies(store, dead) == ["1"]


def test_made_visible_with_no_receive_left_moves_at_once(store: SqliteBroker) -> None:
    dead = store.create_queue("q_failed", {})
    policy = {"deadLetterTargetArn": store.queue_arn(dead), "maxReceiveCount": 2}
    url = store.create_queue("q", {"RedrivePolicy": json.dumps(policy)})
    _send(store, url, "a", "b")
    first = store.receive(url, 10, 30, 0)
    # One receive used of two: made visible, both stay.
    store.change_visibility_batch(
        url, [ChangeVisibility(m.message_id, m.receipt, 0) for m in first]
    )
    assert _counts(store, url) == ("2", "0", "0") and _counts(store, dead) == ("0", "0", "0")
    a, b = sorted(store.receive(url, 10, 30, 0), key=lambda m: m.body)
    # The last receive: hidden again, it stays; made visible, it moves in that call.
    store.change_visibility_batch(url, [ChangeVisibility("a", a.receipt, 60)])
    store.change_visibility_batch(url, [ChangeVisibility("b", b.receipt, 0)])
    assert _counts(store, url) == ("0", "1", "0")
    [moved] = store.receive(dead, 10, 30, 0)
    assert (moved.body, moved.receive_count) == ("b", 1)


def test_active_since(store: SqliteBroker, clock: Clock) -> None:
    url = store.create_queue("q", {})
    other = store.create_queue("other", {})
    # Creating a queue counts as activity, so a new queue is not idle at once.
    assert store.active_since([url, other, "sqlite:gone"], NOW) == {
        url: True,
        other: True,
        "sqlite:gone": False,
    }
    clock.advance(10)
    _send(store, url, "x")
    assert store.active_since([url, other], NOW + 10) == {url: True, other: False}
    clock.advance(10)
    [message] = store.receive(url, 1, 30, 0)
    assert store.active_since([url], NOW + 20) == {url: True}
    clock.advance(10)
    assert store.receive(url, 1, 30, 0) == []  # an empty receive is no activity
    assert store.active_since([url], NOW + 30) == {url: False}
    store.delete_batch(url, [Receipt("d", message.receipt)])
    assert store.active_since([url], NOW + 30) == {url: True}


# -- rules SQS enforces ------------------------------------------------------------------


def test_duplicate_returns_the_original_id_and_stale_receipts_fail(store: SqliteBroker) -> None:
    url = store.create_queue("q", {})
    _send(store, url, "x")
    [old] = store.receive(url, 1, 0, 0)
    [new] = store.receive(url, 1, 30, 0)
    failed = store.delete_batch(url, [Receipt("a", old.receipt), Receipt("b", "garbage")]).failed
    assert [(f.id, f.code) for f in failed] == [
        ("a", "ReceiptHandleIsInvalid"),
        ("b", "ReceiptHandleIsInvalid"),
    ]
    assert store.delete_batch(url, [Receipt("n", new.receipt)]).ok == ["n"]
    again = store.change_visibility_batch(url, [ChangeVisibility("n", new.receipt, 0)])
    assert [f.code for f in again.failed] == ["ReceiptHandleIsInvalid"]


def test_fifo_name_and_attribute_must_agree(store: SqliteBroker) -> None:
    with pytest.raises(BrokerError, match=r"\.fifo"):
        store.create_queue("q.fifo", {"FifoQueue": "false"})
    with pytest.raises(BrokerError, match=r"\.fifo"):
        store.create_queue("q", FIFO)
    url = store.create_queue("implied.fifo", {})
    assert store.get_queue_attributes(url)["FifoQueue"] == "true"


def test_invalid_attributes(store: SqliteBroker) -> None:
    for attributes in (
        {"VisibilityTimeout": "43201"},
        {"DelaySeconds": "x"},
        {"Colour": "blue"},
        {"RedrivePolicy": "{not json"},
        {"RedrivePolicy": json.dumps({"deadLetterTargetArn": "arn:x", "maxReceiveCount": 0})},
    ):
        with pytest.raises(BrokerError):
            store.create_queue("q", attributes)
    assert store.list_queues("") == []


def test_redrive_policy_is_compared_as_json(store: SqliteBroker) -> None:
    dead = store.create_queue("dead", {})
    arn = store.queue_arn(dead)
    url = store.create_queue(
        "q", {"RedrivePolicy": f'{{"maxReceiveCount": "3", "deadLetterTargetArn": "{arn}"}}'}
    )
    same = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": 3})
    assert store.create_queue("q", {"RedrivePolicy": same}) == url


def test_fifo_entries(store: SqliteBroker) -> None:
    url = store.create_queue("q.fifo", FIFO)
    result = store.send_batch(
        url,
        [
            SendEntry(id="nogroup", body="x", dedup_id="1"),
            SendEntry(id="nodedup", body="x", group_id="g"),
            SendEntry(id="delay", body="x", group_id="g", dedup_id="2", delay=3),
            SendEntry(id="ok", body="x", group_id="g", dedup_id="3", delay=0),
        ],
    )
    assert list(result.sent) == ["ok"]
    assert [f.id for f in result.failed] == ["nogroup", "nodedup", "delay"]


def test_size_counts_utf8_bytes_of_body_and_attributes(store: SqliteBroker) -> None:
    url = store.create_queue("q", {"MaximumMessageSize": "1024"})
    fits = SendEntry(id="fits", body="é" * 500, attributes={"k": "v" * 22})  # 1000 + 23
    over = SendEntry(id="over", body="é" * 500, attributes={"k": "v" * 24})  # 1000 + 25
    result = store.send_batch(url, [fits, over])
    assert list(result.sent) == ["fits"] and [f.id for f in result.failed] == ["over"]
    with pytest.raises(BrokerError, match="not sent"):
        store.send(url, over)
    bad = store.send_batch(url, [SendEntry(id="nul", body="a\x00b"), SendEntry(id="e", body="")])
    assert [f.code for f in bad.failed] == ["InvalidMessageContents"] * 2


def test_receive_arguments(store: SqliteBroker) -> None:
    url = store.create_queue("q", {})
    for n, vt, wait in ((0, 30, 0), (11, 30, 0), (1, -1, 0), (1, 43_201, 0), (1, 30, 21)):
        with pytest.raises(BrokerError):
            store.receive(url, n, vt, wait)
    with pytest.raises(QueueNotFound):
        store.receive("sqlite:gone", 1, 30, 0)


def test_calls_are_counted_with_sqs_action_names(store: SqliteBroker) -> None:
    url = store.create_queue("q", {})
    _send(store, url, "x")
    [m] = store.receive(url, 1, 30, 0)
    store.change_visibility_batch(url, [ChangeVisibility("c", m.receipt, 60)])
    store.delete_batch(url, [Receipt("d", m.receipt)])
    store.get_queue_attributes(url)
    store.get_queue_url("q")
    store.get_queue_url("q")  # cached
    assert store.calls.by_action("SQLite") == {
        "ChangeMessageVisibilityBatch": 1,
        "CreateQueue": 1,
        "DeleteMessageBatch": 1,
        "GetQueueAttributes": 1,
        "GetQueueUrl": 1,
        "ReceiveMessage": 1,
        "SendMessageBatch": 1,
    }


# -- the file -----------------------------------------------------------------------------


def test_store_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "qdone.db"
    SqliteBroker(path).close()
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    with sqlite3.connect(path) as conn:
        assert conn.execute("pragma journal_mode").fetchone() == ("wal",)
        assert conn.execute("pragma application_id").fetchone() == (sqlite_schema.APPLICATION_ID,)


def test_store_survives_reopening(tmp_path: Path) -> None:
    first = SqliteBroker(tmp_path / "s.db")
    url = first.create_queue("q", {})
    _send(first, url, "kept")
    first.close()
    second = SqliteBroker(tmp_path / "s.db")
    assert _bodies(second, second.get_queue_url("q")) == ["kept"]
    second.close()


def _one_line_error(path: Path) -> str:
    with pytest.raises(BrokerUnavailable) as err:
        SqliteBroker(path)
    text = str(err.value)
    assert str(path) in text and "\n" not in text
    return text


def test_random_bytes_are_not_a_store(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(os.urandom(8192))
    assert "not a qdone store" in _one_line_error(path)


def test_another_apps_database_is_not_a_store(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("create table notes (text)")
    assert "not a qdone store" in _one_line_error(path)
    with sqlite3.connect(path) as conn:
        conn.execute("pragma application_id = 42")
        conn.execute("drop table notes")
    assert "not a qdone store" in _one_line_error(path)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    SqliteBroker(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"pragma user_version = {sqlite_schema.SCHEMA_VERSION + 1}")
    assert "upgrade qdone" in _one_line_error(path)


def test_opening_a_whole_store_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every open but the first only reads: a process holding the write lock does
    not keep another from opening the store and reading it."""
    path = tmp_path / "s.db"
    first = SqliteBroker(path)
    url = first.create_queue("q", {})
    first.close()
    monkeypatch.setattr(sqlite_schema, "BUSY_TIMEOUT", 0.05)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("begin immediate")
    try:
        second = SqliteBroker(path)
        assert second.get_queue_url("q") == url
        second.close()
    finally:
        holder.execute("rollback")
        holder.close()


def test_a_store_lacking_part_of_the_schema_gets_it_on_open(tmp_path: Path) -> None:
    """A store made by an older qdone (no ``moved_at``) or missing an index is
    completed when opened, its messages kept."""
    path = tmp_path / "s.db"
    first = SqliteBroker(path)
    url = first.create_queue("q", {})
    _send(first, url, "kept")
    first.close()
    with sqlite3.connect(path) as conn:
        conn.execute("drop index messages_visible")
        conn.execute("alter table messages drop column moved_at")
    second = SqliteBroker(path)
    assert _bodies(second, url) == ["kept"]
    second.close()
    with sqlite3.connect(path) as conn:
        names = {row[0] for row in conn.execute("select name from sqlite_master")}
        columns = {row[1] for row in conn.execute("pragma table_info(messages)")}
    assert "messages_visible" in names
    assert "moved_at" in columns


def test_unusable_location(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    _one_line_error(tmp_path / "file" / "qdone.db")  # its parent is a file
    (tmp_path / "dir.db").mkdir()
    _one_line_error(tmp_path / "dir.db")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_read_only_location(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    _one_line_error(locked / "qdone.db")
    path = tmp_path / "ro.db"
    SqliteBroker(path).close()
    path.chmod(0o400)
    _one_line_error(path)


def test_a_lock_held_too_long_is_a_broker_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_schema, "BUSY_TIMEOUT", 0.05)
    broker = SqliteBroker(tmp_path / "s.db")
    url = broker.create_queue("q", {})
    holder = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    holder.execute("begin immediate")
    with pytest.raises(BrokerError, match="locked") as err:
        broker.send_batch(url, [SendEntry(id="e", body="x")])
    assert isinstance(err.value.__cause__, sqlite3.OperationalError)
    holder.execute("rollback")
    broker.close()


def test_after_a_busy_receive_an_empty_queue_is_again_seen_without_the_write_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_schema, "BUSY_TIMEOUT", 0.05)
    broker = SqliteBroker(tmp_path / "s.db")
    url = broker.create_queue("q", {})
    _send(broker, url, "x")
    assert _bodies(broker, url) == ["x"]  # found messages: the next receive claims at once
    assert _bodies(broker, url) == []
    holder = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    holder.execute("begin immediate")
    assert _bodies(broker, url) == []  # seen empty without waiting for the lock
    holder.execute("rollback")
    holder.close()
    _send(broker, url, "y")
    assert _bodies(broker, url) == ["y"]
    broker.delete_queue(url)
    with pytest.raises(QueueNotFound):
        broker.receive(url, 10, 30, 0)
    broker.close()


# -- concurrency ----------------------------------------------------------------------------


def test_threads_share_a_broker(store: SqliteBroker) -> None:
    url = store.create_queue("q", {})
    for start in range(0, 400, 10):
        _send(store, url, *(f"m{i}" for i in range(start, start + 10)))
    got: list[str] = []

    def work() -> None:
        while messages := store.receive(url, 3, 300, 0):
            got.extend(m.body for m in messages)
            store.delete_batch(url, [Receipt(str(i), m.receipt) for i, m in enumerate(messages)])

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == sorted(f"m{i}" for i in range(400))


_WORKER = """
import json, sys, time
from pathlib import Path
from qdone.broker.base import Receipt
from qdone.broker.sqlite import SqliteBroker
broker = SqliteBroker(Path(sys.argv[1]))
url = broker.get_queue_url("q")
print("ready", flush=True)
while not Path(sys.argv[2]).exists():
    time.sleep(0.005)
got = []
while messages := broker.receive(url, 1 + len(got) % 3, 300, 0):
    got += [m.body for m in messages]
    broker.delete_batch(url, [Receipt(str(i), m.receipt) for i, m in enumerate(messages)])
print(json.dumps(got), flush=True)
"""


def test_two_processes_never_get_the_same_message(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    broker = SqliteBroker(path)
    url = broker.create_queue("q", {})
    for start in range(0, 1000, 10):
        _send(broker, url, *(f"m{i}" for i in range(start, start + 10)))
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(path), str(go)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    go.touch()
    outputs = [proc.communicate(timeout=60)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0]
    got = [body for out in outputs for body in json.loads(out)]
    assert sorted(got) == sorted(f"m{i}" for i in range(1000))  # each exactly once
    assert _counts(broker, url) == ("0", "0", "0")
    broker.close()
