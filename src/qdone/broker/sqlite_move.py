"""Reading and moving messages of the SQLite store without receiving them: what
``qdone failed`` lists and ``qdone requeue`` moves (``MessageStore`` in
``broker/base.py``).

A peek is one read, changing nothing. A move is one transaction: each message is
copied to the end of the target queue and deleted from the source together, so
a move happens exactly once or not at all.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable

from . import sqlite_queues as queues
from . import sqlite_schema as schema
from .base import MAX_BATCH, StoredMessage

__all__ = ["move", "peek"]

_COLUMNS = "id, message_id, body, group_id, sent_at, receive_count, moved_at, attributes"
# Messages that a receive could take now: visible, within retention; on a FIFO
# queue, only groups with nothing in flight (a group's order must hold).
_MOVABLE = (
    f"select {_COLUMNS} from messages where qid = ?1 and visible_at <= ?2 and sent_at >= ?3"
    " and (group_id is null or group_id not in (select group_id from messages"
    " where qid = ?1 and group_id is not null and visible_at > ?2 and receipt is not null))"
    " order by id limit ?4"
)

Row = tuple[int, str, str, str | None, float, int, float | None, str | None]


def _stored(row: Row) -> StoredMessage:
    _id, message_id, body, group_id, sent_at, receive_count, moved_at, attributes = row
    return StoredMessage(
        message_id=message_id,
        body=body,
        group_id=group_id,
        sent_at=sent_at,
        receive_count=receive_count,
        moved_at=moved_at,
        attributes=json.loads(attributes) if attributes else {},
    )


def peek(conn: sqlite3.Connection, url: str, limit: int, now: float) -> list[StoredMessage]:
    """Up to ``limit`` messages of the queue within retention, in the order sent
    (in flight and delayed ones too)."""
    queue = queues.find(conn, queues.queue_name(url))
    rows = conn.execute(
        f"select {_COLUMNS} from messages where qid = ? and sent_at >= ? order by id limit ?",
        (queue.qid, now - queue.settings.retention, limit),
    )
    return [_stored(row) for row in rows]


def move(
    conn: schema.Connection, source: str, target: str, limit: int, clock: Callable[[], float]
) -> list[StoredMessage]:
    """Move up to ``limit`` messages a receive could take now from ``source`` to
    ``target``, in one transaction (see ``MessageStore.move``)."""
    if not 1 <= limit <= MAX_BATCH:
        raise ValueError(f"move takes 1 to {MAX_BATCH} messages")
    with schema.transaction(conn):
        now = clock()
        src = queues.find(conn, queues.queue_name(source))
        dst = queues.find(conn, queues.queue_name(target))
        oldest = now - src.settings.retention
        rows: list[Row] = conn.execute(_MOVABLE, (src.qid, now, oldest, limit)).fetchall()
        # As a message sent to the target now: last in its order (a new row id), its
        # delay (none on FIFO), a fresh retention and receive count; the same job id.
        visible_at = now + (0 if dst.settings.fifo else dst.settings.delay)
        for row in rows:
            conn.execute(
                "insert into messages (qid, message_id, body, attributes, group_id, sent_at,"
                " visible_at) select ?, message_id, body, attributes, group_id, ?, ?"
                " from messages where id = ?",
                (dst.qid, now, visible_at, row[0]),
            )
            conn.execute("delete from messages where id = ?", (row[0],))
        if rows:
            queues.touch(conn, src.qid, now)
            queues.touch(conn, dst.qid, now)
    return [_stored(row) for row in rows]
