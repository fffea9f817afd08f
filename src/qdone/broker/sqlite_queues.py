"""The SQLite store's queues table: looking a queue up, inserting one (with its
dead-letter check), its tags, its message counts and its last activity.

Functions on a connection, called by ``broker/sqlite.py`` and ``sqlite_receive.py``
inside or outside their transactions.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

from ..errors import BrokerError, QueueNotFound
from . import sqlite_rules as rules
from . import sqlite_schema as schema
from .base import EmptyDelete

__all__ = [
    "ACTIVE_STEP",
    "QueueRow",
    "check_dead_letter",
    "counts",
    "delete",
    "delete_if_empty",
    "find",
    "insert",
    "qid",
    "queue_name",
    "save_tags",
    "touch",
    "touch_busy",
]

ACTIVE_STEP = 1.0  # seconds: how finely a busy queue's last activity is kept

_COUNTS = (
    "select count(*) filter (where visible_at <= ?1),"
    " count(*) filter (where visible_at > ?1 and receipt is not null),"
    " count(*) filter (where visible_at > ?1 and receipt is null)"
    " from messages where qid = ?2 and sent_at >= ?3"
)


class QueueRow(NamedTuple):
    qid: int
    name: str
    settings: rules.QueueSettings
    tags: str  # JSON
    created: float
    modified: float
    active: float


def queue_name(url: str) -> str:
    if not url.startswith(schema.URL_PREFIX):
        raise BrokerError(f"{url!r} is not the url of a queue in a SQLite store")
    return url[len(schema.URL_PREFIX) :]


def find(conn: sqlite3.Connection, name: str) -> QueueRow:
    row = conn.execute(
        "select qid, name, attributes, tags, created, modified, active from queues where name = ?",
        (name,),
    ).fetchone()
    if row is None:
        raise QueueNotFound(name)
    qid, name, attributes, tags, created, modified, active = row
    settings = rules.queue_settings(attributes)
    return QueueRow(qid, name, settings, tags, created, modified, active)


def qid(conn: sqlite3.Connection, name: str | None) -> int | None:
    row = conn.execute("select qid from queues where name = ?", (name,)).fetchone()
    return None if row is None else int(row[0])


def touch(conn: sqlite3.Connection, qid: int, now: float) -> None:
    conn.execute("update queues set active = ? where qid = ?", (now, qid))


def touch_busy(conn: sqlite3.Connection, queue: QueueRow, now: float) -> None:
    """Mark a queue active, unless it was within ``ACTIVE_STEP``: a busy queue
    is marked once a second, not on every receive and delete."""
    if not queue.active <= now < queue.active + ACTIVE_STEP:
        touch(conn, queue.qid, now)


def insert(
    conn: sqlite3.Connection,
    name: str,
    given: dict[str, str],
    tags: Mapping[str, str],
    now: float,
) -> None:
    attributes = rules.initial_attributes(name, given)
    check_dead_letter(conn, name, attributes)
    conn.execute(
        # A new queue counts as active when created: idle-queues must not take a
        # queue made a minute ago for one unused for an hour.
        "insert into queues (name, fifo, attributes, tags, created, modified, active)"
        " values (?, ?, ?, ?, ?, ?, ?)",
        (
            name,
            name.endswith(".fifo"),
            json.dumps(attributes),
            json.dumps(dict(tags)),
            now,
            now,
            now,
        ),
    )


def check_dead_letter(conn: sqlite3.Connection, name: str, attributes: Mapping[str, str]) -> None:
    if "RedrivePolicy" not in attributes:
        return
    arn = str(json.loads(attributes["RedrivePolicy"])["deadLetterTargetArn"])
    target = arn[len(schema.ARN_PREFIX) :] if arn.startswith(schema.ARN_PREFIX) else None
    if target is None or qid(conn, target) is None:
        raise BrokerError(f"queue {name}: dead-letter target {arn} does not exist")
    if target.endswith(".fifo") != name.endswith(".fifo"):
        raise BrokerError(f"queue {name} and its dead-letter queue {target} differ in type")


def save_tags(conn: sqlite3.Connection, queue: QueueRow, tags: Mapping[str, str]) -> None:
    merged = json.dumps({**json.loads(queue.tags), **tags})
    conn.execute("update queues set tags = ? where qid = ?", (merged, queue.qid))


def delete(conn: sqlite3.Connection, queue: QueueRow) -> None:
    """The queue, its messages and its FIFO dedup records; in the caller's transaction."""
    for table in ("messages", "dedup", "queues"):
        conn.execute(f"delete from {table} where qid = ?", (queue.qid,))


def delete_if_empty(
    conn: sqlite3.Connection, names: Sequence[str], clock: Callable[[], float]
) -> EmptyDelete:
    """Delete the queues ``names`` if none holds a message, in the caller's transaction:
    a message sent before it is seen (and the queues kept), one sent after it finds
    the queue gone (and is refused)."""
    done = EmptyDelete()
    found: list[QueueRow] = []
    for name in names:
        try:
            found.append(find(conn, name))
        except QueueNotFound:
            done.gone.append(name)
    now = clock()
    for queue in found:
        if any(int(n) for n in counts(conn, queue, now).values()):
            done.busy = queue.name
            return done
    for queue in found:
        delete(conn, queue)
        done.deleted.append(queue.name)
    return done


def counts(conn: sqlite3.Connection, queue: QueueRow, now: float) -> dict[str, str]:
    """The queue's approximate counts, as SQS's count attributes."""
    oldest = now - queue.settings.retention
    row = conn.execute(_COUNTS, (now, queue.qid, oldest)).fetchone()
    return {key: str(value) for key, value in zip(rules.COUNT_ATTRIBUTES, row, strict=True)}
