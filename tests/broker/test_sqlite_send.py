"""SqliteBroker sends: a plain send (one statement for all its entries) stores and
reports exactly what a send checked entry by entry does."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from qdone.broker import sqlite_schema, sqlite_send
from qdone.broker.base import SendEntry, SendResult
from qdone.broker.sqlite import SqliteBroker
from qdone.errors import BrokerError

NOW = 1_900_000_000.0
TRICKY = [
    'echo "quoted" \\back\\slash /slash',
    "printf '%s %d %012x' a 1 2",
    '{"json": [1, 2]} \\u0041 \\"',
    "x" * 5000,
    " leading and trailing ",
]


@pytest.fixture(params=[True, False], ids=["json_each", "rows"])
def store(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[SqliteBroker]:
    broker = SqliteBroker(tmp_path / "store.db", clock=lambda: NOW)
    if request.param and not broker._json_each:
        pytest.skip("this SQLite has no json_each")
    broker._json_each = request.param  # False: as on a SQLite without json_each
    yield broker
    broker.close()


def _rows(broker: SqliteBroker) -> list[tuple[object, ...]]:
    db = sqlite3.connect(broker.path)
    try:
        return list(
            db.execute(
                "select qid, message_id, body, attributes, group_id, sent_at, visible_at,"
                " receive_count, receipt from messages order by id"
            )
        )
    finally:
        db.close()


def _entries(bodies: Sequence[str], **fields: object) -> list[SendEntry]:
    return [SendEntry(str(n), body, **fields) for n, body in enumerate(bodies)]  # type: ignore[arg-type]


def test_bodies_and_ids_are_stored_as_reported(store: SqliteBroker) -> None:
    url = store.create_queue("q", {"DelaySeconds": "5"})
    batches = [_entries(TRICKY), _entries(["echo 1", "echo 2"])]
    results = store.send_batches(url, batches)
    assert [r.failed for r in results] == [[], []]
    sent = [r.sent[e.id] for r, entries in zip(results, batches, strict=True) for e in entries]
    assert len(set(sent)) == len(sent)
    bodies = [e.body for entries in batches for e in entries]
    assert _rows(store) == [
        (1, message_id, body, None, None, NOW, NOW + 5, 0, None)
        for message_id, body in zip(sent, bodies, strict=True)
    ]
    assert store.active_since([url], NOW) == {url: True}


def test_one_delay_for_all_and_ids_past_a_large_count(store: SqliteBroker) -> None:
    url = store.create_queue("q", {})
    store._new_ids._next = 2**48 - 1  # the counter outgrows 12 hex digits, as in Python
    result = store.send_batch(url, _entries(["echo a", "echo b"], delay=7))
    assert [row[1:3] + row[6:7] for row in _rows(store)] == [
        (result.sent["0"], "echo a", NOW + 7),
        (result.sent["1"], "echo b", NOW + 7),
    ]
    assert result.sent["1"].endswith("-1000000000000")


def test_what_a_plain_send_cannot_take_is_checked_entry_by_entry(store: SqliteBroker) -> None:
    url = store.create_queue("q", {"MaximumMessageSize": "1024"})
    result = store.send_batch(url, _entries(["echo ok", "x" * 1025, "tab\there", "é"]))
    assert [f.id for f in result.failed] == ["1"]
    assert sorted(result.sent) == ["0", "2", "3"]
    assert [row[2] for row in _rows(store)] == ["echo ok", "tab\there", "é"]


@pytest.mark.parametrize(
    "batches",
    [
        [[]],
        [_entries(["x"] * 11)],
        [[SendEntry("a", "x"), SendEntry("a", "y")]],
        [[SendEntry("a b", "x")]],
        [[SendEntry("a" * 81, "x")]],
        [_entries(["x" * 200_000] * 6)],
    ],
    ids=["empty", "eleven", "same-id", "bad-id", "long-id", "too-long"],
)
def test_batch_errors_are_raised_as_before(
    store: SqliteBroker, batches: list[list[SendEntry]]
) -> None:
    url = store.create_queue("q", {})
    with pytest.raises(BrokerError, match="SendMessageBatch: "):
        store.send_batches(url, batches)
    assert _rows(store) == []


def test_fifo_entries_take_the_checked_path(store: SqliteBroker) -> None:
    url = store.create_queue("q.fifo", {"FifoQueue": "true"})
    plain = store.send_batch(url, _entries(["echo 1"]))
    assert [f.code for f in plain.failed] == ["MissingParameter"]
    first = store.send_batch(url, _entries(["echo 1"], group_id="g", dedup_id="d"))
    again = store.send_batch(url, _entries(["echo 1"], group_id="g", dedup_id="d"))
    assert again.sent == first.sent
    assert len(_rows(store)) == 1


def _plain(bodies: Sequence[str], **fields: object) -> sqlite_send.PlainSend | None:
    return sqlite_send.plain_send([_entries(bodies, **fields)])


def test_plain_send_is_only_what_needs_no_check_one_by_one() -> None:
    assert _plain(TRICKY) is not None
    assert _plain(["echo"], delay=900) is not None
    for bodies, fields in [
        (["echo", ""], {}),
        (["echo", "é"], {}),
        (["echo", "a\tb"], {}),
        (["echo"], {"delay": 901}),
        (["echo"], {"group_id": "g"}),
        (["echo"], {"dedup_id": "d"}),
        (["echo"], {"attributes": {"a": "b"}}),
        (["x" * 104_858], {}),
    ]:
        assert _plain(bodies, **fields) is None, (bodies[-1][:10], fields)
    mixed = [SendEntry("0", "echo", delay=1), SendEntry("1", "echo")]
    assert sqlite_send.plain_send([mixed]) is None
    assert sqlite_send.plain_send([_entries(["x" * 100_000] * 10)]) is not None
    assert sqlite_send.plain_send([_entries(["x" * 10_000] * 10)] * 200) is None  # 20 MB


def test_message_ids_are_the_same_in_python_and_sqlite() -> None:
    ids = sqlite_schema.MessageIds()
    form, first = ids.reserve(3)
    db = sqlite3.connect(":memory:")
    for n in (first, 2**48 - 1, 2**48, 2**62):
        assert db.execute("select printf(?, ?)", (form, n)).fetchone()[0] == form % n
    assert ids(2)[0] == form % (first + 3)


def test_results_match_between_paths(tmp_path: Path) -> None:
    results: list[list[SendResult]] = []
    for json_each in (True, False):
        broker = SqliteBroker(tmp_path / f"{json_each}.db", clock=lambda: NOW)
        broker._json_each = json_each and broker._json_each
        url = broker.create_queue("q", {})
        results.append(broker.send_batches(url, [_entries(TRICKY), _entries(["a", "b"])]))
        broker.close()
    plain, rows = results
    assert [sorted(r.sent) for r in plain] == [sorted(r.sent) for r in rows]
    assert [r.failed for r in plain] == [r.failed for r in rows] == [[], []]
