"""The embedded store: one SQLite file with the semantics of SQS (see ``broker/base.py``).

Several processes on one machine may share a store: the file is in WAL mode, every
write (and so every claim of messages) runs in ``BEGIN IMMEDIATE``, and each thread
has its own connection. Time comes from the injected ``clock``, so visibility,
delays, the FIFO dedup window and retention can be tested without sleeping.

FIFO: a group with a message in flight yields nothing; otherwise one receive may
return several consecutive messages of a group, in the order sent (as SQS does).
Deleting or changing the visibility of a message needs the receipt of its latest
receive: an older receipt fails for that entry and leaves the newer claim alone.
"""

from __future__ import annotations

import functools
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Concatenate, NamedTuple, ParamSpec, TypeVar

from ..errors import BrokerError, QueueNotFound
from ..naming import validate_sqs_name
from . import sqlite_schema as schema
from . import sqlite_send as sending
from .base import (
    MAX_BATCH,
    BatchResult,
    Broker,
    ChangeVisibility,
    Message,
    Receipt,
    SendEntry,
    SendResult,
)

__all__ = ["SqliteBroker"]

_FIRST_PAUSE, _MAX_PAUSE = 0.01, 0.2  # long-poll sleeps, growing
ACTIVE_STEP = 1.0  # seconds: how finely a busy queue's last activity is kept

_P = ParamSpec("_P")
_R = TypeVar("_R")


class _Queue(NamedTuple):
    qid: int
    name: str
    settings: schema.QueueSettings
    tags: str  # JSON
    created: float
    modified: float
    active: float


class _Row(NamedTuple):
    id: int
    message_id: str
    body: str
    attributes: str | None
    group_id: str | None
    sent_at: float
    visible_at: float
    receive_count: int


@dataclass(frozen=True)
class _Claim:
    """Where a receive is: the queue, its dead-letter target, now and the cutoff of retention."""

    queue: _Queue
    dead_letter: int | None
    max_receives: int | None
    now: float
    oldest: float


# An entry of a batch by receipt: its id, the receipt, the SQL's leading parameters.
_ByReceipt = tuple[str, str, tuple[float, ...]]
_ROW = "id, message_id, body, attributes, group_id, sent_at, visible_at, receive_count"
# FIFO: the messages of the groups with nothing in flight, in the order sent.
_FIFO_ROWS = (
    f"select {_ROW} from messages where qid = ?1 and group_id is not null"
    " and group_id not in (select group_id from messages"
    " where qid = ?1 and visible_at > ?2 and receipt is not null)"
    " order by id"
)
_COUNTS = (
    "select count(*) filter (where visible_at <= ?1),"
    " count(*) filter (where visible_at > ?1 and receipt is not null),"
    " count(*) filter (where visible_at > ?1 and receipt is null)"
    " from messages where qid = ?2 and sent_at >= ?3"
)


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


class SqliteBroker(Broker):
    """Queues in one SQLite file at ``path``, shared safely by processes on one machine."""

    service = "SQLite"
    batches_per_send = 500  # one transaction per 5,000 messages in enqueue-batch

    def __init__(self, path: Path, clock: Callable[[], float] | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        self._clock = clock or time.time
        self._local = threading.local()
        self._lock = threading.Lock()
        self._writers = threading.RLock()  # see schema.transaction
        self._connections: list[schema.Connection] = []
        self._urls: dict[str, str] = {}
        self._new_ids = schema.MessageIds()
        schema.create_file(self.path)
        try:
            schema.init_store(self._conn(), self.path)
            self._json_each = sending.has_json_each(self._conn())
        except sqlite3.Error as exc:
            self.close()
            raise schema.mapped_error(exc, self.path) from exc
        except BrokerError:
            self.close()
            raise

    # -- connections and lookups ------------------------------------------------

    def _conn(self) -> schema.Connection:
        conn: schema.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = schema.connect(self.path, self._writers)
            with self._lock:
                self._connections.append(conn)
            self._local.conn = conn
        return conn

    def _count(self, action: str, n: int = 1) -> None:
        self.calls.count(self.service, action, n)

    def _queue(self, conn: sqlite3.Connection, url: str) -> _Queue:
        name = self.queue_name(url)
        row = conn.execute(
            "select qid, name, attributes, tags, created, modified, active from queues"
            " where name = ?",
            (name,),
        ).fetchone()
        if row is None:
            raise QueueNotFound(name)
        qid, name, attributes, tags, created, modified, active = row
        settings = schema.queue_settings(attributes)
        return _Queue(qid, name, settings, tags, created, modified, active)

    def _qid(self, conn: sqlite3.Connection, name: str | None) -> int | None:
        row = conn.execute("select qid from queues where name = ?", (name,)).fetchone()
        return None if row is None else int(row[0])

    def _touch(self, conn: sqlite3.Connection, qid: int, now: float) -> None:
        conn.execute("update queues set active = ? where qid = ?", (now, qid))

    def _touch_busy(self, conn: sqlite3.Connection, queue: _Queue, now: float) -> None:
        """Mark a queue active, unless it was within ``ACTIVE_STEP``: a busy queue
        is marked once a second, not on every receive and delete."""
        if not queue.active <= now < queue.active + ACTIVE_STEP:
            self._touch(conn, queue.qid, now)

    # -- queues -------------------------------------------------------------------

    def describe(self) -> str:
        return f"SQLite store {self.path}"

    def queue_name(self, url: str) -> str:
        if not url.startswith(schema.URL_PREFIX):
            raise BrokerError(f"{url!r} is not the url of a queue in a SQLite store")
        return url[len(schema.URL_PREFIX) :]

    def queue_arn(self, url: str) -> str:
        return schema.ARN_PREFIX + self.queue_name(url)

    @_edge
    def get_queue_url(self, name: str) -> str:
        if name not in self._urls:
            self._count("GetQueueUrl")
            if self._qid(self._conn(), name) is None:
                raise QueueNotFound(name)
            self._urls[name] = schema.URL_PREFIX + name
        return self._urls[name]

    @_edge
    def create_queue(
        self, name: str, attributes: Mapping[str, str], tags: Mapping[str, str] | None = None
    ) -> str:
        self._count("CreateQueue")
        validate_sqs_name(name)
        given = schema.check_attributes(name, attributes)
        url = schema.URL_PREFIX + name
        with schema.transaction(self._conn()) as conn:
            if self._qid(conn, name) is None:
                self._insert_queue(conn, name, given, tags or {})
                return url
            queue = self._queue(conn, url)
            conflicts = schema.attribute_conflicts(queue.settings.attributes, given)
            if conflicts:
                raise BrokerError(
                    f"queue {name} already exists with other values of {', '.join(conflicts)};"
                    " run `qdone check` to see and fix them"
                )
            if tags:
                self._save_tags(conn, queue, tags)
        return url

    def _insert_queue(
        self, conn: sqlite3.Connection, name: str, given: dict[str, str], tags: Mapping[str, str]
    ) -> None:
        attributes = schema.initial_attributes(name, given)
        self._check_dead_letter(conn, name, attributes)
        now = self._clock()
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

    def _check_dead_letter(
        self, conn: sqlite3.Connection, name: str, attributes: Mapping[str, str]
    ) -> None:
        if "RedrivePolicy" not in attributes:
            return
        arn = str(json.loads(attributes["RedrivePolicy"])["deadLetterTargetArn"])
        target = arn[len(schema.ARN_PREFIX) :] if arn.startswith(schema.ARN_PREFIX) else None
        if target is None or self._qid(conn, target) is None:
            raise BrokerError(f"queue {name}: dead-letter target {arn} does not exist")
        if target.endswith(".fifo") != name.endswith(".fifo"):
            raise BrokerError(f"queue {name} and its dead-letter queue {target} differ in type")

    @_edge
    def get_queue_attributes(self, url: str, names: Sequence[str] = ("All",)) -> dict[str, str]:
        self._count("GetQueueAttributes")
        conn = self._conn()
        queue = self._queue(conn, url)
        now = self._clock()
        oldest = now - queue.settings.retention
        counts = conn.execute(_COUNTS, (now, queue.qid, oldest)).fetchone()
        result = {
            **queue.settings.attributes,
            "QueueArn": self.queue_arn(url),
            "CreatedTimestamp": str(int(queue.created)),
            "LastModifiedTimestamp": str(int(queue.modified)),
            **{key: str(value) for key, value in zip(schema.COUNT_ATTRIBUTES, counts, strict=True)},
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
                **schema.check_attributes(queue.name, attributes),
            }
            if merged.get("RedrivePolicy") == "":
                del merged["RedrivePolicy"]
            self._check_dead_letter(conn, queue.name, merged)
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
            self._save_tags(conn, self._queue(conn, url), tags)

    def _save_tags(self, conn: sqlite3.Connection, queue: _Queue, tags: Mapping[str, str]) -> None:
        merged = json.dumps({**json.loads(queue.tags), **tags})
        conn.execute("update queues set tags = ? where qid = ?", (merged, queue.qid))

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
            for table in ("messages", "dedup", "queues"):
                conn.execute(f"delete from {table} where qid = ?", (queue.qid,))
        self._urls.pop(queue.name, None)

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
                self._touch(conn, queue.qid, now)
        return results

    # -- receiving ----------------------------------------------------------------

    @_edge
    def receive(
        self, url: str, max_messages: int, visibility_timeout: int, wait_time: float
    ) -> list[Message]:
        self._count("ReceiveMessage")
        if not 1 <= max_messages <= MAX_BATCH:
            raise BrokerError(f"ReceiveMessage: max_messages {max_messages} is not 1 to 10")
        if not 0 <= visibility_timeout <= schema.MAX_VISIBILITY:
            raise BrokerError(
                f"ReceiveMessage: visibility timeout must be 0 to {schema.MAX_VISIBILITY}"
            )
        if not 0 <= wait_time <= 20:
            raise BrokerError("ReceiveMessage: wait time must be 0 to 20 s")
        deadline = time.monotonic() + wait_time
        pause = _FIRST_PAUSE
        while True:
            messages = self._receive_once(url, max_messages, visibility_timeout)
            left = deadline - time.monotonic()
            if messages or left <= 0:
                return messages
            time.sleep(min(pause, left))
            pause = min(pause * 2, _MAX_PAUSE)

    def _receive_once(self, url: str, limit: int, visibility_timeout: int) -> list[Message]:
        conn = self._conn()
        visible = conn.execute(
            "select 1 from queues q join messages m on m.qid = q.qid"
            " where q.name = ? and m.visible_at <= ? limit 1",
            (self.queue_name(url), self._clock()),
        ).fetchone()
        if visible is None:  # nothing to claim: spare the write lock
            self._queue(conn, url)  # but say so if there is no such queue
            return []
        with schema.transaction(conn):
            claim = self._claim(conn, self._queue(conn, url))
            if claim.queue.settings.fifo:
                rows = self._select_fifo(conn, claim, limit)
            else:
                rows = self._select_standard(conn, claim, limit)
            messages = self._take(conn, url, rows, claim.now + visibility_timeout)
            if messages:
                self._touch_busy(conn, claim.queue, claim.now)
        return messages

    def _claim(self, conn: sqlite3.Connection, queue: _Queue) -> _Claim:
        now = self._clock()
        return _Claim(
            queue=queue,
            dead_letter=self._qid(conn, queue.settings.dead_letter)
            if queue.settings.dead_letter
            else None,
            max_receives=queue.settings.max_receives,
            now=now,
            oldest=now - queue.settings.retention,
        )

    def _select_standard(self, conn: sqlite3.Connection, claim: _Claim, limit: int) -> list[_Row]:
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
            self._settle(conn, claim, fates)
            taken += [row for row, fate in fates if fate == "take"]
        return taken

    def _select_fifo(self, conn: sqlite3.Connection, claim: _Claim, limit: int) -> list[_Row]:
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
        self._settle(conn, claim, fates)
        return [row for row, fate in fates if fate == "take"]

    def _settle(
        self, conn: sqlite3.Connection, claim: _Claim, fates: Iterable[tuple[_Row, str]]
    ) -> None:
        """Drop expired messages; move redriven ones to the dead-letter queue, fresh."""
        for row, fate in fates:
            if fate == "expire":
                conn.execute("delete from messages where id = ?", (row.id,))
            elif fate == "redrive":
                conn.execute(
                    "update messages set qid = ?, receive_count = 0, receipt = null,"
                    " visible_at = ? where id = ?",
                    (claim.dead_letter, claim.now, row.id),
                )
                assert claim.dead_letter is not None
                self._touch(conn, claim.dead_letter, claim.now)

    def _take(
        self, conn: sqlite3.Connection, url: str, rows: list[_Row], visible_at: float
    ) -> list[Message]:
        tokens = [secrets.token_hex(8) for _ in rows]
        conn.executemany(
            "update messages set visible_at = ?, receive_count = receive_count + 1,"
            " receipt = ? where id = ?",
            [(visible_at, token, row.id) for row, token in zip(rows, tokens, strict=True)],
        )
        return [_message(url, row, token) for row, token in zip(rows, tokens, strict=True)]

    # -- after receiving ------------------------------------------------------------

    def delete_batch(self, url: str, entries: Sequence[Receipt]) -> BatchResult:
        return self.delete_batches(url, [entries])[0]  # its errors mapped there

    @_edge
    def delete_batches(self, url: str, batches: Sequence[Sequence[Receipt]]) -> list[BatchResult]:
        self._check_batch_count(batches)
        for entries in batches:
            schema.check_batch_ids([e.id for e in entries], "DeleteMessageBatch")
        self._count("DeleteMessageBatch", len(batches))
        sql = "delete from messages where id = ? and qid = ? and receipt = ?"
        work: list[list[_ByReceipt]] = [[(e.id, e.receipt, ()) for e in b] for b in batches]
        return self._by_receipt(url, sql, work, touch=True)

    @_edge
    def change_visibility_batch(self, url: str, entries: Sequence[ChangeVisibility]) -> BatchResult:
        self._count("ChangeMessageVisibilityBatch")
        schema.check_batch_ids([e.id for e in entries], "ChangeMessageVisibilityBatch")
        now = self._clock()
        valid = [e for e in entries if 0 <= e.timeout <= schema.MAX_VISIBILITY]
        sql = "update messages set visible_at = ? where id = ? and qid = ? and receipt = ?"
        work: list[_ByReceipt] = [(e.id, e.receipt, (now + e.timeout,)) for e in valid]
        result = self._by_receipt(url, sql, [work], touch=False)[0]
        text = f"visibility timeout must be 0 to {schema.MAX_VISIBILITY} s"
        result.failed.extend(
            schema.failed_entry(e.id, "InvalidParameterValue", text)
            for e in entries
            if e not in valid
        )
        return result

    def _by_receipt(
        self,
        url: str,
        sql: str,
        batches: list[list[_ByReceipt]],
        touch: bool,
    ) -> list[BatchResult]:
        """Run ``sql``, in one transaction, on the message that each ``(id, receipt,
        leading parameters)`` entry of each batch names, if its receipt is still the
        latest; a result per batch. ``touch`` marks the queue active."""
        results = [BatchResult(ok=[], failed=[]) for _ in batches]
        with schema.transaction(self._conn()) as conn:
            queue = self._queue(conn, url)
            for entries, result in zip(batches, results, strict=True):
                for entry_id, receipt, values in entries:
                    row_id, token = schema.parse_receipt(receipt)
                    if conn.execute(sql, (*values, row_id, queue.qid, token)).rowcount == 1:
                        result.ok.append(entry_id)
                    else:
                        result.failed.append(schema.invalid_receipt(entry_id))
            if touch and any(result.ok for result in results):
                self._touch_busy(conn, queue, self._clock())
        return results

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

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()
        self._local = threading.local()
