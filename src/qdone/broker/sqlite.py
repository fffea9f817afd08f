"""The embedded store: one SQLite file with the semantics of SQS (see ``broker/base.py``).

Several processes on one machine may share a store: the file is in WAL mode, every
write (and so every claim of messages) runs in ``BEGIN IMMEDIATE``, and each thread
has its own connection. Time comes from the injected ``clock``, so visibility,
delays, the FIFO dedup window and retention can be tested without sleeping.

This module holds the broker and its public calls; the work is in
``sqlite_connections`` (opening the file, a connection per thread), ``sqlite_schema``
(the file), ``sqlite_rules`` (SQS's rules), ``sqlite_queues`` (the queues table),
``sqlite_send`` (sending), ``sqlite_receive`` (receiving, delete, visibility) and
``sqlite_move`` (reading and moving without receiving).
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Concatenate, ParamSpec, TypeVar

from ..errors import BrokerError, QueueNotFound
from ..naming import validate_sqs_name
from . import sqlite_move as moving
from . import sqlite_queues as queues
from . import sqlite_receive as receiving
from . import sqlite_rules as rules
from . import sqlite_schema as schema
from . import sqlite_send as sending
from .base import (
    MAX_BATCH,
    BatchResult,
    Broker,
    ChangeVisibility,
    EmptyDelete,
    Message,
    Receipt,
    SendEntry,
    SendResult,
    StoredMessage,
)
from .sqlite_connections import Connections

if TYPE_CHECKING:
    from .sqlite_dedup import SqliteDedup

__all__ = ["SqliteBroker"]

_FIRST_PAUSE, _MAX_PAUSE = 0.01, 0.2  # long-poll sleeps, growing

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _edge(
    method: Callable[Concatenate[SqliteBroker, _P], _R],
) -> Callable[Concatenate[SqliteBroker, _P], _R]:
    """Translate sqlite3 errors of a public method into qdone errors, once, here."""

    def wrapper(self: SqliteBroker, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise schema.mapped_error(exc, self.path) from exc

    functools.update_wrapper(wrapper, method)
    return wrapper


class SqliteBroker(Broker):
    """Queues in one SQLite file at ``path``, shared safely by processes on one machine."""

    service = "SQLite"
    batches_per_send = 500  # one transaction per 5,000 messages in enqueue-batch

    def __init__(
        self,
        path: str | os.PathLike[str],
        clock: Callable[[], float] | None = None,
        *,
        defer: bool = False,
        reads_only: bool = False,
    ) -> None:
        """``defer``: make and check the file on the first operation, not now, so that
        a command refusing its input before any call leaves nothing behind.
        ``reads_only``: a store that cannot be written (a read-only file system or
        file) is opened read-only, for commands that only look (``monitor``)."""
        super().__init__()
        self.path = os.fspath(path)
        self._clock = clock or time.time
        self._store = Connections(self.path, reads_only=reads_only)
        self._urls: dict[str, str] = {}
        self._new_ids = schema.MessageIds()
        if not defer:
            self._store.open()

    # -- connections and lookups ------------------------------------------------

    def _conn(self) -> schema.Connection:
        return self._store.get()

    @property
    def _json_each(self) -> bool:
        """Whether this SQLite has ``json_each`` (a plain send is one statement)."""
        return self._store.json_each

    @_json_each.setter
    def _json_each(self, value: bool) -> None:
        self._store.json_each = value

    def _count(self, action: str, n: int = 1) -> None:
        self.calls.count(self.service, action, n)

    def _queue(self, conn: sqlite3.Connection, url: str) -> queues.QueueRow:
        return queues.find(conn, self.queue_name(url))

    # -- queues -------------------------------------------------------------------

    def describe(self) -> str:
        return f"SQLite store {self.path}"

    def queue_name(self, url: str) -> str:
        return queues.queue_name(url)

    def queue_arn(self, url: str) -> str:
        return schema.ARN_PREFIX + self.queue_name(url)

    @_edge
    def get_queue_url(self, name: str) -> str:
        if name not in self._urls:
            self._count("GetQueueUrl")
            if queues.qid(self._conn(), name) is None:
                raise QueueNotFound(name)
            self._urls[name] = schema.URL_PREFIX + name
        return self._urls[name]

    @_edge
    def create_queue(
        self, name: str, attributes: Mapping[str, str], tags: Mapping[str, str] | None = None
    ) -> str:
        self._count("CreateQueue")
        validate_sqs_name(name)
        given = rules.check_attributes(name, attributes)
        url = schema.URL_PREFIX + name
        with schema.transaction(self._conn()) as conn:
            if queues.qid(conn, name) is None:
                queues.insert(conn, name, given, tags or {}, self._clock())
                return url
            queue = self._queue(conn, url)
            conflicts = rules.attribute_conflicts(queue.settings.attributes, given)
            if conflicts:
                raise BrokerError(
                    f"queue {name} already exists with other values of {', '.join(conflicts)};"
                    " run `qdone check` to see and fix them"
                )
            if tags:
                queues.save_tags(conn, queue, tags)
        return url

    @_edge
    def get_queue_attributes(self, url: str, names: Sequence[str] = ("All",)) -> dict[str, str]:
        self._count("GetQueueAttributes")
        conn = self._conn()
        queue = self._queue(conn, url)
        counts = queues.counts(conn, queue, self._clock())
        result = {
            **queue.settings.attributes,
            "QueueArn": self.queue_arn(url),
            "CreatedTimestamp": str(int(queue.created)),
            "LastModifiedTimestamp": str(int(queue.modified)),
            **counts,
        }
        if "All" in names:
            return result
        unknown = [n for n in names if n not in result and n not in ("RedrivePolicy", "Policy")]
        if unknown:
            raise BrokerError(f"unknown queue attribute {unknown[0]!r}")
        return {n: result[n] for n in names if n in result}

    @_edge
    def set_queue_attributes(self, url: str, attributes: Mapping[str, str]) -> None:
        self._count("SetQueueAttributes")
        with schema.transaction(self._conn()) as conn:
            queue = self._queue(conn, url)
            merged = {
                **queue.settings.attributes,
                **rules.check_attributes(queue.name, attributes),
            }
            if merged.get("RedrivePolicy") == "":
                del merged["RedrivePolicy"]
            queues.check_dead_letter(conn, queue.name, merged)
            conn.execute(
                "update queues set attributes = ?, modified = ? where qid = ?",
                (json.dumps(merged), self._clock(), queue.qid),
            )

    @_edge
    def list_queue_tags(self, url: str) -> dict[str, str]:
        self._count("ListQueueTags")
        tags: dict[str, str] = json.loads(self._queue(self._conn(), url).tags)
        return tags

    @_edge
    def tag_queue(self, url: str, tags: Mapping[str, str]) -> None:
        self._count("TagQueue")
        with schema.transaction(self._conn()) as conn:
            queues.save_tags(conn, self._queue(conn, url), tags)

    @_edge
    def list_queues(self, prefix: str) -> list[str]:
        self._count("ListQueues")
        rows = self._conn().execute(
            "select name from queues where substr(name, 1, ?) = ? order by name",
            (len(prefix), prefix),
        )
        return [schema.URL_PREFIX + name for (name,) in rows]

    @_edge
    def delete_queue(self, url: str) -> None:
        self._count("DeleteQueue")
        with schema.transaction(self._conn()) as conn:
            queue = self._queue(conn, url)
            queues.delete(conn, queue)
        self._urls.pop(queue.name, None)

    @_edge
    def delete_if_empty(self, urls: Sequence[str]) -> EmptyDelete:
        """Check and delete in one transaction: a message sent before it is seen (and
        the queue kept), one sent after it finds the queue gone (and is refused)."""
        self._count("DeleteQueueIfEmpty")
        names = [self.queue_name(url) for url in urls]
        with schema.transaction(self._conn()) as conn:
            done = queues.delete_if_empty(conn, names, self._clock)
        for name in done.deleted:
            self._urls.pop(name, None)
        return done

    # -- sending ------------------------------------------------------------------

    @_edge
    def send(self, url: str, entry: SendEntry) -> str:
        self._count("SendMessage")
        [result] = self._send(url, [[entry]], "SendMessage")
        if result.failed:
            raise BrokerError(f"message not sent: {result.failed[0].message}")
        return result.sent[entry.id]

    @_edge
    def send_batch(self, url: str, entries: Sequence[SendEntry]) -> SendResult:
        self._count("SendMessageBatch")
        return self._send(url, [entries], "SendMessageBatch")[0]

    @_edge
    def send_batches(self, url: str, batches: Sequence[Sequence[SendEntry]]) -> list[SendResult]:
        """Several batches in one transaction: one commit instead of one per batch."""
        self._check_batch_count(batches)
        self._count("SendMessageBatch", len(batches))
        return self._send(url, batches, "SendMessageBatch")

    def _send(
        self, url: str, batches: Sequence[Sequence[SendEntry]], action: str
    ) -> list[SendResult]:
        # Errors that fail a batch are raised before the transaction; a plain send has none.
        plain = sending.plain_send(batches) if self._json_each else None
        sizes = [] if plain is not None else [sending.batch_sizes(e, action) for e in batches]
        now = self._clock()
        with schema.transaction(self._conn()) as conn:
            queue = self._queue(conn, url)
            if plain is not None and plain.fits(queue.settings):
                results = sending.insert_plain(
                    conn, queue.qid, queue.settings, plain, self._new_ids, now
                )
                inserted = len(plain.bodies)
            else:
                sizes = sizes or [sending.batch_sizes(entries, action) for entries in batches]
                results, inserted = sending.insert_rows(
                    conn, queue.qid, queue.settings, batches, sizes, self._new_ids, now
                )
            if inserted:
                queues.touch(conn, queue.qid, now)
        return results

    # -- receiving ----------------------------------------------------------------

    @_edge
    def receive(
        self, url: str, max_messages: int, visibility_timeout: int, wait_time: float
    ) -> list[Message]:
        self._count("ReceiveMessage")
        if not 1 <= max_messages <= MAX_BATCH:
            raise BrokerError(f"ReceiveMessage: max_messages {max_messages} is not 1 to 10")
        if not 0 <= visibility_timeout <= rules.MAX_VISIBILITY:
            raise BrokerError(
                f"ReceiveMessage: visibility timeout must be 0 to {rules.MAX_VISIBILITY}"
            )
        if not 0 <= wait_time <= 20:
            raise BrokerError("ReceiveMessage: wait time must be 0 to 20 s")
        deadline = time.monotonic() + wait_time
        pause = _FIRST_PAUSE
        while True:
            messages = receiving.receive_once(
                self._conn(), url, max_messages, visibility_timeout, self._clock
            )
            left = deadline - time.monotonic()
            if messages or left <= 0:
                return messages
            time.sleep(min(pause, left))
            pause = min(pause * 2, _MAX_PAUSE)

    # -- after receiving ------------------------------------------------------------

    def delete_batch(self, url: str, entries: Sequence[Receipt]) -> BatchResult:
        return self.delete_batches(url, [entries])[0]  # its errors mapped there

    @_edge
    def delete_batches(self, url: str, batches: Sequence[Sequence[Receipt]]) -> list[BatchResult]:
        self._check_batch_count(batches)
        for entries in batches:
            rules.check_batch_ids([e.id for e in entries], "DeleteMessageBatch")
        self._count("DeleteMessageBatch", len(batches))
        sql = "delete from messages where id = ? and qid = ? and receipt = ?"
        work: list[list[receiving.ByReceipt]] = [
            [(e.id, e.receipt, ()) for e in b] for b in batches
        ]
        return receiving.by_receipt(self._conn(), url, sql, work, True, self._clock)

    @_edge
    def change_visibility_batch(self, url: str, entries: Sequence[ChangeVisibility]) -> BatchResult:
        self._count("ChangeMessageVisibilityBatch")
        rules.check_batch_ids([e.id for e in entries], "ChangeMessageVisibilityBatch")
        now = self._clock()
        valid = [e for e in entries if 0 <= e.timeout <= rules.MAX_VISIBILITY]
        sql = "update messages set visible_at = ? where id = ? and qid = ? and receipt = ?"
        work: list[receiving.ByReceipt] = [(e.id, e.receipt, (now + e.timeout,)) for e in valid]
        result = receiving.by_receipt(
            self._conn(), url, sql, [work], False, self._clock, then=receiving.redrive_now
        )[0]
        text = f"visibility timeout must be 0 to {rules.MAX_VISIBILITY} s"
        result.failed.extend(
            rules.failed_entry(e.id, "InvalidParameterValue", text)
            for e in entries
            if e not in valid
        )
        return result

    # -- without receiving (MessageStore) ----------------------------------------------

    @_edge
    def peek(self, url: str, limit: int) -> list[StoredMessage]:
        """Messages of the queue, read without a receive: nothing changes."""
        self._count("PeekMessages")
        return moving.peek(self._conn(), url, limit, self._clock())

    @_edge
    def move(self, source: str, target: str, limit: int) -> list[StoredMessage]:
        """Up to ``limit`` messages moved between queues in one transaction."""
        self._count("MoveMessages")
        return moving.move(self._conn(), source, target, limit, self._clock)

    @_edge
    def active_since(self, urls: Iterable[str], since: float) -> dict[str, bool]:
        result: dict[str, bool] = {}
        conn = self._conn()
        for url in urls:
            self._count("GetQueueActivity")
            row = conn.execute(
                "select active from queues where name = ?", (self.queue_name(url),)
            ).fetchone()
            result[url] = row is not None and row[0] >= since
        return result

    def dedup(self) -> SqliteDedup:
        """Deduplication windows and run claims in this store (``qdone.dedup``)."""
        from .sqlite_dedup import SqliteDedup

        return SqliteDedup(self._conn, self.path, self._clock)

    def close(self) -> None:
        self._store.close()
