"""``Broker.delete_if_empty`` on both brokers, and on SQLite the race it closes: a
message whose send succeeded is never deleted with its queue (issue 16, item 4)."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path

import pytest

from qdone.broker import sqlite_queues
from qdone.broker.base import Broker, SendEntry
from qdone.broker.sqlite import SqliteBroker
from qdone.config import Options, QueueOptions
from qdone.errors import QueueNotFound
from qdone.idle import IdleSettings, delete_idle, find_idle
from qdone.queues import ensure_queue


def _pair(broker: Broker, prefix: str) -> tuple[str, str]:
    ensured = ensure_queue(broker, Options(prefix=prefix), QueueOptions(), "a")
    return ensured.url, broker.get_queue_url(ensured.names.failed)


def _names(broker: Broker, prefix: str) -> list[str]:
    return sorted(broker.queue_name(u) for u in broker.list_queues(prefix))


def test_empty_queues_are_deleted_in_order(broker: Broker, prefix: str) -> None:
    main, failed = _pair(broker, prefix)
    done = broker.delete_if_empty([main, failed])
    assert done.deleted == [f"{prefix}a", f"{prefix}a_failed"]
    assert (done.gone, done.busy) == ([], None)
    assert _names(broker, prefix) == []


@pytest.mark.parametrize("where", ["main", "failed"])
def test_a_message_anywhere_keeps_every_queue(broker: Broker, prefix: str, where: str) -> None:
    main, failed = _pair(broker, prefix)
    broker.send(main if where == "main" else failed, SendEntry("0", "true", delay=60))
    done = broker.delete_if_empty([main, failed])
    assert done.deleted == []
    assert done.busy == (f"{prefix}a" if where == "main" else f"{prefix}a_failed")
    assert _names(broker, prefix) == [f"{prefix}a", f"{prefix}a_failed"]


def test_a_message_in_flight_keeps_the_queue(broker: Broker, prefix: str) -> None:
    main, failed = _pair(broker, prefix)
    broker.send(main, SendEntry("0", "true"))
    assert len(broker.receive(main, 1, 60, 0)) == 1
    assert broker.delete_if_empty([main, failed]).busy == f"{prefix}a"


def test_a_queue_already_gone_is_skipped(broker: Broker, prefix: str) -> None:
    main, failed = _pair(broker, prefix)
    broker.delete_queue(failed)
    done = broker.delete_if_empty([main, failed])
    assert (done.deleted, done.gone) == ([f"{prefix}a"], [f"{prefix}a_failed"])


def test_sqlite_never_deletes_a_message_whose_send_succeeded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """idle-queues --delete on SQLite while an enqueue lands right after the queue
    was seen empty: the send either fails (the queue is gone) or its message stays
    with the queue. It is never reported sent and then deleted."""
    path = tmp_path / "s.db"
    deleter, sender = SqliteBroker(path), SqliteBroker(path)
    options = Options(prefix="p_")
    url, _failed = _pair(deleter, "p_")
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("update queues set active = 0")  # long unused
    idle = find_idle(deleter, options, ["a"], IdleSettings(idle_for=1)).idle
    assert [p.name for p in idle] == ["a"]
    sent: list[str] = []
    refused: list[Exception] = []

    def send() -> None:
        try:
            sent.append(sender.send(url, SendEntry("0", "echo enqueued meanwhile")))
        except QueueNotFound as exc:
            refused.append(exc)

    real_counts = sqlite_queues.counts
    racing: list[threading.Thread] = []

    def counts_then_a_send(*args: object, **kwargs: object) -> dict[str, str]:
        """Right after the main queue is counted empty, an enqueue runs; it is given
        2 s to finish before the delete goes on (it cannot, inside a transaction)."""
        answer = real_counts(*args, **kwargs)  # type: ignore[arg-type]
        if not racing:
            racing.append(threading.Thread(target=send))
            racing[0].start()
            racing[0].join(timeout=2)
        return answer

    monkeypatch.setattr(sqlite_queues, "counts", counts_then_a_send)
    (outcome,) = delete_idle(deleter, idle)
    racing[0].join(timeout=30)
    monkeypatch.setattr(sqlite_queues, "counts", real_counts)
    assert len(sent) + len(refused) == 1
    if sent:  # it got in first: the queue was kept, with the message
        assert outcome.deleted == [] and "now holds messages" in outcome.skipped
        assert [m.body for m in sender.receive(url, 10, 30, 0)] == ["echo enqueued meanwhile"]
    else:  # the delete got in first: the send was refused, not lost
        assert outcome.deleted == ["p_a", "p_a_failed"]
    deleter.close()
    sender.close()
