"""Receiving from the SQLite store and acting on receipts: claiming visible messages
(standard and FIFO), expiry and redrive on receive, and the changes by receipt
(delete, change visibility).

FIFO: a group with a message in flight yields nothing; otherwise one receive may
return several consecutive messages of a group, in the order sent (as SQS does).
Deleting or changing the visibility of a message needs the receipt of its latest
receive: an older receipt fails for that entry and leaves the newer claim alone.
A message made visible at once with no receive left (a job's last attempt failed)
is moved to the dead-letter queue in the same transaction, not at a later receive.
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
from collections.abc import Callable, Iterable
from typing import NamedTuple

from . import sqlite_queues as queues
from . import sqlite_rules as rules
from . import sqlite_schema as schema
from .base import BatchResult, Message

__all__ = ["ByReceipt", "by_receipt", "receive_once", "redrive_now"]

# An entry of a batch by receipt: its id, the receipt, the SQL's leading parameters.
ByReceipt = tuple[str, str, tuple[float, ...]]

_ROW = "id, message_id, body, attributes, group_id, sent_at, visible_at, receive_count"
# FIFO: the messages of the groups with nothing in flight, in the order sent.
_FIFO_ROWS = (
    f"select {_ROW} from messages where qid = ?1 and group_id is not null"
    " and group_id not in (select group_id from messages"
    " where qid = ?1 and visible_at > ?2 and receipt is not null)"
    " order by id"
)


class _Row(NamedTuple):
    id: int
    message_id: str
    body: str
    attributes: str | None
    group_id: str | None
    sent_at: float
    visible_at: float
    receive_count: int


class _Claim:
    """Where a receive is: the queue, now, the cutoff of retention, and the queue's
    dead-letter target (looked up, in the same transaction, only once a message
    needs it: most receives redrive nothing)."""

    def __init__(self, conn: sqlite3.Connection, queue: queues.QueueRow, now: float) -> None:
        self._conn = conn
        self.queue = queue
        self.max_receives = queue.settings.max_receives
        self.now = now
        self.oldest = now - queue.settings.retention

    @functools.cached_property
    def dead_letter(self) -> int | None:
        name = self.queue.settings.dead_letter
        return queues.qid(self._conn, name) if name else None


def _message(url: str, row: _Row, token: str) -> Message:
    return Message(
        queue_url=url,
        message_id=row.message_id,
        receipt=f"{row.id}.{token}",
        body=row.body,
        receive_count=row.receive_count + 1,
        sent_at=row.sent_at,
        group_id=row.group_id,
        attributes=json.loads(row.attributes) if row.attributes else {},
    )


def _fate(claim: _Claim, row: _Row) -> str:
    """``expire`` (past retention), ``redrive`` (to the dead-letter queue) or ``take``."""
    if row.sent_at < claim.oldest:
        return "expire"
    if claim.max_receives is not None and row.receive_count >= claim.max_receives:
        return "redrive" if claim.dead_letter is not None else "take"
    return "take"


def receive_once(
    conn: schema.Connection,
    url: str,
    limit: int,
    visibility_timeout: int,
    clock: Callable[[], float],
) -> list[Message]:
    """Claim up to ``limit`` messages of the queue at ``url`` now, without waiting.
    An empty queue is seen without the write lock, unless this connection's last
    receive from it found messages (a busy standard queue: the look would be wasted)."""
    name = queues.queue_name(url)
    if url not in conn.busy:
        visible = conn.execute(
            "select 1 from queues q join messages m on m.qid = q.qid"
            " where q.name = ? and m.visible_at <= ? limit 1",
            (name, clock()),
        ).fetchone()
        if visible is None:  # nothing to claim: spare the write lock
            queues.find(conn, name)  # but say so if there is no such queue
            return []
    conn.busy.discard(url)
    with schema.transaction(conn):
        claim = _Claim(conn, queues.find(conn, name), clock())
        if claim.queue.settings.fifo:
            rows = _select_fifo(conn, claim, limit)
        else:
            rows = _select_standard(conn, claim, limit)
        messages = _take(conn, url, rows, claim.now + visibility_timeout)
        if messages:
            queues.touch_busy(conn, claim.queue, claim.now)
    if messages and not claim.queue.settings.fifo:
        # Not FIFO: there, the look lets the delete that frees the group of the
        # worker's last job land first more often (a group claimed sooner would be
        # found held, and the receive would take other groups' messages instead).
        conn.busy.add(url)
    return messages


def _select_standard(conn: sqlite3.Connection, claim: _Claim, limit: int) -> list[_Row]:
    """Up to ``limit`` visible messages, oldest first; expired and redriven ones go
    (and those taken stay at the head, hence the offset)."""
    taken: list[_Row] = []
    while len(taken) < limit:
        rows = [
            _Row(*r)
            for r in conn.execute(
                f"select {_ROW} from messages where qid = ? and visible_at <= ?"
                " order by visible_at, id limit ? offset ?",
                (claim.queue.qid, claim.now, limit - len(taken), len(taken)),
            )
        ]
        if not rows:
            break
        fates = [(row, _fate(claim, row)) for row in rows]
        _settle(conn, claim, fates)
        taken += [row for row, fate in fates if fate == "take"]
    return taken


def _select_fifo(conn: sqlite3.Connection, claim: _Claim, limit: int) -> list[_Row]:
    """Heads of the groups with nothing in flight, each followed by the visible
    messages after it in its group, in the order sent."""
    stopped: set[str | None] = set()
    fates: list[tuple[_Row, str]] = []
    taken = 0
    cursor = conn.execute(_FIFO_ROWS, (claim.queue.qid, claim.now))
    for row in map(_Row._make, cursor):
        if row.group_id in stopped:
            continue
        if row.visible_at > claim.now:
            stopped.add(row.group_id)
            continue
        fates.append((row, _fate(claim, row)))
        taken += fates[-1][1] == "take"
        if taken == limit:
            break
    cursor.close()
    _settle(conn, claim, fates)
    return [row for row, fate in fates if fate == "take"]


def _settle(conn: sqlite3.Connection, claim: _Claim, fates: Iterable[tuple[_Row, str]]) -> None:
    """Drop expired messages; move redriven ones to the dead-letter queue, fresh."""
    for row, fate in fates:
        if fate == "expire":
            conn.execute("delete from messages where id = ?", (row.id,))
        elif fate == "redrive":
            conn.execute(
                "update messages set qid = ?, receive_count = 0, receipt = null,"
                " visible_at = ?, moved_at = ? where id = ?",
                (claim.dead_letter, claim.now, claim.now, row.id),
            )
            assert claim.dead_letter is not None
            queues.touch(conn, claim.dead_letter, claim.now)


def _take(conn: sqlite3.Connection, url: str, rows: list[_Row], visible_at: float) -> list[Message]:
    tokens = [os.urandom(8).hex() for _ in rows]
    conn.executemany(
        "update messages set visible_at = ?, receive_count = receive_count + 1,"
        " receipt = ? where id = ?",
        [(visible_at, token, row.id) for row, token in zip(rows, tokens, strict=True)],
    )
    return [_message(url, row, token) for row, token in zip(rows, tokens, strict=True)]


def by_receipt(
    conn: schema.Connection,
    url: str,
    sql: str,
    batches: list[list[ByReceipt]],
    touch: bool,
    clock: Callable[[], float],
    then: Callable[[sqlite3.Connection, queues.QueueRow, list[int], float], None] | None = None,
) -> list[BatchResult]:
    """Run ``sql``, in one transaction, on the message that each ``(id, receipt,
    leading parameters)`` entry of each batch names, if its receipt is still the
    latest; a result per batch. ``touch`` marks the queue active; ``then`` gets the
    rows done, in the same transaction."""
    results = [BatchResult(ok=[], failed=[]) for _ in batches]
    with schema.transaction(conn):
        queue = queues.find(conn, queues.queue_name(url))
        done: list[int] = []
        for entries, result in zip(batches, results, strict=True):
            for entry_id, receipt, values in entries:
                row_id, token = schema.parse_receipt(receipt)
                if conn.execute(sql, (*values, row_id, queue.qid, token)).rowcount == 1:
                    result.ok.append(entry_id)
                    done.append(row_id)
                else:
                    result.failed.append(rules.invalid_receipt(entry_id))
        if then is not None and done:
            then(conn, queue, done, clock())
        if touch and any(result.ok for result in results):
            queues.touch_busy(conn, queue, clock())
    return results


def redrive_now(
    conn: sqlite3.Connection, queue: queues.QueueRow, rows: list[int], now: float
) -> None:
    """Of ``rows`` just changed, move those now visible with no receive left to the
    dead-letter queue at once: the store owns the redrive, so a failed job is in the
    failed queue as soon as its worker lets it go, not at some later receive (on
    SQS the next receive moves it; nothing but timing tells the two apart)."""
    if queue.settings.dead_letter is None or queue.settings.max_receives is None:
        return
    claim = _Claim(conn, queue, now)
    if claim.dead_letter is None:
        return
    placeholders = ", ".join("?" * len(rows))
    found = conn.execute(
        f"select {_ROW} from messages where qid = ? and visible_at <= ?"
        f" and receive_count >= ? and id in ({placeholders})",
        (queue.qid, now, claim.max_receives, *rows),
    )
    _settle(conn, claim, [(row, _fate(claim, row)) for row in map(_Row._make, found.fetchall())])
