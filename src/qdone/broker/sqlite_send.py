"""Sending into the SQLite store: the checks of a send call and the rows it inserts.

A call whose entries are all plain (see ``plain_send``) is checked as a whole and
inserted with one statement; any other is checked batch by batch and entry by entry,
as SQS would. Both report the same: ``broker/sqlite.py`` runs either in its transaction.
"""

from __future__ import annotations

import itertools
import json
import re
import sqlite3
from collections.abc import Sequence
from typing import NamedTuple

from ..errors import BrokerError
from . import sqlite_rules as rules
from . import sqlite_schema as schema
from .base import MAX_BATCH, SendEntry, SendResult

__all__ = ["PlainSend", "batch_sizes", "has_json_each", "insert_plain", "insert_rows", "plain_send"]

_INSERT = (
    "insert into messages (qid, message_id, body, attributes, group_id, sent_at, visible_at)"
    " values (?, ?, ?, ?, ?, ?, ?)"
)
# The bodies of a plain send as one JSON array, in order; ids made from one format.
_INSERT_PLAIN = (
    "insert into messages (qid, message_id, body, attributes, group_id, sent_at, visible_at)"
    " select ?1, printf(?2, ?3 + key), value, null, null, ?4, ?5 from json_each(?6) order by key"
)
_ID_TEXT = re.compile(r"[\w-]*", re.ASCII)  # batch entry ids, joined together
_MAX_ID = 80  # characters of a batch entry id, as in ``rules.check_batch_ids``
# Bodies of a plain send, in all: beyond this, one row each, to keep the JSON text
# (twice this at most, with escapes) small next to SQLite's limit on a value.
_PLAIN_MAX_TEXT = 16 * 1024 * 1024


def has_json_each(conn: sqlite3.Connection) -> bool:
    """Whether this SQLite has ``json_each`` (built in since 3.38, optional before)."""
    try:
        conn.execute("select count(*) from json_each('[]')").fetchone()
    except sqlite3.OperationalError:
        return False
    return True


def batch_sizes(entries: Sequence[SendEntry], action: str) -> list[int]:
    """The size of each entry; raises the errors that fail the whole batch."""
    rules.check_batch_ids([entry.id for entry in entries], action)
    sizes = [rules.entry_size(entry) for entry in entries]
    if sum(sizes) > rules.MAX_BATCH_BYTES:
        raise BrokerError(
            f"{action}: the batch is {sum(sizes)} bytes, more than {rules.MAX_BATCH_BYTES}"
            " (BatchRequestTooLong)"
        )
    return sizes


class PlainSend(NamedTuple):
    """A send call whose entries need no check or work one by one."""

    bodies: tuple[str, ...]
    entry_ids: list[tuple[str, ...]]  # of each batch
    longest: int  # bytes of the longest body
    delay: int | None  # of every entry

    def fits(self, queue: rules.QueueSettings) -> bool:
        """Whether the queue takes every entry as it is: not FIFO, no body too large."""
        return not queue.fifo and self.longest <= queue.max_size


def plain_send(batches: Sequence[Sequence[SendEntry]]) -> PlainSend | None:
    """The call as a ``PlainSend`` if no batch can fail as a whole and every entry is
    plain: a body of printable ASCII, not empty; no group id, dedup id or attributes;
    one valid delay for all; and the bodies are not too long in all. Otherwise None.
    (Each test covers the whole call at once.)"""
    if not batches or not all(1 <= len(entries) <= MAX_BATCH for entries in batches):
        return None
    columns = zip(*itertools.chain.from_iterable(batches), strict=True)
    ids, bodies, group_ids, dedup_ids, delays, attributes = columns
    if sum(map(len, bodies)) > _PLAIN_MAX_TEXT or not all(bodies):
        return None
    text = "".join(bodies)
    if not (text.isascii() and text.isprintable()):
        return None
    if any(attributes) or set(group_ids) != {None} or set(dedup_ids) != {None}:
        return None
    distinct_delays = set(delays)
    delay = distinct_delays.pop()
    if distinct_delays or (delay is not None and not 0 <= delay <= rules.MAX_DELAY):
        return None
    if not 1 <= min(map(len, ids)) <= max(map(len, ids)) <= _MAX_ID:
        return None
    if not _ID_TEXT.fullmatch("".join(ids)):
        return None
    longest = max(map(len, bodies))
    if longest * MAX_BATCH > rules.MAX_BATCH_BYTES:
        return None  # a batch might be too long: add each up
    entry_ids = []
    start = 0
    for entries in batches:
        batch_ids = ids[start : start + len(entries)]
        if len(set(batch_ids)) != len(batch_ids):
            return None
        entry_ids.append(batch_ids)
        start += len(entries)
    return PlainSend(bodies, entry_ids, longest, delay)


def insert_plain(
    conn: sqlite3.Connection,
    qid: int,
    queue: rules.QueueSettings,
    plain: PlainSend,
    new_ids: schema.MessageIds,
    now: float,
) -> list[SendResult]:
    """Insert a plain send with one statement: SQLite reads the bodies from a JSON array
    and makes the message ids from the format ``new_ids`` reserves them in."""
    count = len(plain.bodies)
    form, first = new_ids.reserve(count)
    visible = now + (queue.delay if plain.delay is None else plain.delay)
    conn.execute(_INSERT_PLAIN, (qid, form, first, now, visible, json.dumps(plain.bodies)))
    message_ids = [form % n for n in range(first, first + count)]
    results = []
    start = 0
    for entry_ids in plain.entry_ids:
        sent = zip(entry_ids, message_ids[start : start + len(entry_ids)], strict=True)
        results.append(SendResult(sent=dict(sent), failed=[]))
        start += len(entry_ids)
    return results


def insert_rows(
    conn: sqlite3.Connection,
    qid: int,
    queue: rules.QueueSettings,
    batches: Sequence[Sequence[SendEntry]],
    sizes: Sequence[list[int]],
    new_ids: schema.MessageIds,
    now: float,
) -> tuple[list[SendResult], int]:
    """Insert the entries the queue takes, one row each; the result of each batch (what
    became of each entry: refused, sent, or a FIFO duplicate that reports the original
    message id) and the number of rows inserted."""
    results = [SendResult(sent={}, failed=[]) for _ in batches]
    rows: list[tuple[object, ...]] = []
    for entries, entry_sizes, result in zip(batches, sizes, results, strict=True):
        message_ids = new_ids(len(entries))
        for entry, size, message_id in zip(entries, entry_sizes, message_ids, strict=True):
            error = rules.entry_error(queue, entry, size)
            if error is not None:
                result.failed.append(error)
                continue
            original = _duplicate_of(conn, qid, entry, message_id, now) if queue.fifo else None
            result.sent[entry.id] = original or message_id
            if original is None:
                attributes = json.dumps(dict(entry.attributes)) if entry.attributes else None
                visible = now + (queue.delay if entry.delay is None else entry.delay)
                rows.append((qid, message_id, entry.body, attributes, entry.group_id, now, visible))
    conn.executemany(_INSERT, rows)
    return results, len(rows)


def _duplicate_of(
    conn: sqlite3.Connection, qid: int, entry: SendEntry, message_id: str, now: float
) -> str | None:
    """The id of the message sent with this dedup id in the last 5 minutes, if any;
    otherwise None, and ``message_id`` is recorded under the dedup id."""
    import hashlib  # FIFO only: spares every other process loading OpenSSL

    dedup_id = entry.dedup_id or hashlib.sha256(entry.body.encode()).hexdigest()
    conn.execute("delete from dedup where expires <= ?", (now,))
    row = conn.execute(
        "select message_id from dedup where qid = ? and dedup_id = ?", (qid, dedup_id)
    ).fetchone()
    if row is not None:
        return str(row[0])
    conn.execute(
        "insert into dedup (qid, dedup_id, message_id, expires) values (?, ?, ?, ?)",
        (qid, dedup_id, message_id, now + rules.DEDUP_WINDOW),
    )
    return None
