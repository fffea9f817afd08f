"""The SQLite store's file and rules: the schema (kept as data), opening and checking
the file, and SQS's rules for queue attributes and batch entries.

``broker/sqlite.py`` holds the broker; everything here is shared by it and stateless.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import secrets
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from ..errors import BrokerError, BrokerUnavailable, FailedEntry
from .base import MAX_BATCH, SendEntry, invalid_character

__all__ = [
    "APPLICATION_ID",
    "ARN_PREFIX",
    "BUSY_TIMEOUT",
    "COUNT_ATTRIBUTES",
    "DEDUP_WINDOW",
    "MAX_BATCH_BYTES",
    "MAX_DELAY",
    "MAX_VISIBILITY",
    "SCHEMA",
    "SCHEMA_VERSION",
    "URL_PREFIX",
    "MessageIds",
    "QueueSettings",
    "attribute_conflicts",
    "check_attributes",
    "check_batch_ids",
    "connect",
    "create_file",
    "entry_error",
    "entry_size",
    "failed_entry",
    "init_store",
    "initial_attributes",
    "invalid_receipt",
    "mapped_error",
    "parse_receipt",
    "queue_settings",
    "transaction",
]

#: ``PRAGMA application_id`` of a qdone store: "qdon" in ASCII.
APPLICATION_ID = 0x71646F6E
#: ``PRAGMA user_version``: bumped when the schema changes incompatibly.
SCHEMA_VERSION = 1

URL_PREFIX = "sqlite:"
ARN_PREFIX = "arn:qdone:sqlite:local:"

DEDUP_WINDOW = 300.0  # seconds, SQS's FIFO deduplication interval
MAX_DELAY = 900
MAX_VISIBILITY = 43_200
MAX_BATCH_BYTES = 1_048_576  # a whole SendMessageBatch, like SQS
BUSY_TIMEOUT = 30.0  # seconds a write waits for another process's transaction
_BATCH_ID = re.compile(r"[\w-]{1,80}", re.ASCII)

SCHEMA: tuple[str, ...] = (
    """create table if not exists queues (
        qid integer primary key,
        name text not null unique,
        fifo integer not null,
        attributes text not null,   -- JSON: the settable attributes, as strings
        tags text not null,         -- JSON
        created real not null,
        modified real not null,
        active real not null        -- last send, receive that returned messages, or delete
    )""",
    """create table if not exists messages (
        id integer primary key,     -- also the order of sending
        qid integer not null,
        message_id text not null,
        body text not null,
        attributes text,            -- JSON, or null when there are none
        group_id text,
        sent_at real not null,
        visible_at real not null,
        receive_count integer not null default 0,
        receipt text                -- token of the latest receive; null if never received
    )""",
    "create index if not exists messages_visible on messages (qid, visible_at)",
    # FIFO receives walk a queue in the order sent; only FIFO messages have a group.
    "create index if not exists messages_fifo on messages (qid) where group_id is not null",
    """create table if not exists dedup (
        qid integer not null,
        dedup_id text not null,
        message_id text not null,
        expires real not null,
        primary key (qid, dedup_id)
    ) without rowid""",
    "create index if not exists dedup_expires on dedup (expires)",
)

COUNT_ATTRIBUTES = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
)

_DEFAULTS = {
    "DelaySeconds": "0",
    "MaximumMessageSize": "1048576",
    "MessageRetentionPeriod": "345600",
    "ReceiveMessageWaitTimeSeconds": "0",
    "VisibilityTimeout": "30",
}
_FIFO_DEFAULTS = {
    "FifoQueue": "true",
    "ContentBasedDeduplication": "false",
    "DeduplicationScope": "queue",
    "FifoThroughputLimit": "perQueue",
}
_RANGES = {
    "DelaySeconds": (0, MAX_DELAY),
    "MaximumMessageSize": (1024, 1_048_576),
    "MessageRetentionPeriod": (60, 1_209_600),
    "ReceiveMessageWaitTimeSeconds": (0, 20),
    "VisibilityTimeout": (0, MAX_VISIBILITY),
}
_BOOLEANS = ("FifoQueue", "ContentBasedDeduplication", "SqsManagedSseEnabled")
_FREE_TEXT = (
    "DeduplicationScope",
    "FifoThroughputLimit",
    "Policy",
    "RedriveAllowPolicy",
    "KmsMasterKeyId",
    "KmsDataKeyReusePeriodSeconds",
)


def _check_one(name: str, value: str) -> str:
    """``value`` normalised (``"030"`` → ``"30"``), or BrokerError."""
    if name in _RANGES:
        low, high = _RANGES[name]
        try:
            number = int(value)
        except ValueError:
            number = low - 1
        if not low <= number <= high:
            raise BrokerError(f"invalid value {value!r} for {name}: must be {low} to {high}")
        return str(number)
    if name in _BOOLEANS:
        if value.lower() not in ("true", "false"):
            raise BrokerError(f"invalid value {value!r} for {name}: must be true or false")
        return value.lower()
    if name == "RedrivePolicy":
        return _check_redrive(value)
    if name in _FREE_TEXT:
        return value
    raise BrokerError(f"unknown queue attribute {name!r}")


def _check_redrive(value: str) -> str:
    if value == "":
        return ""
    try:
        policy = json.loads(value)
        arn = policy["deadLetterTargetArn"]
        count = int(policy["maxReceiveCount"])
    except (ValueError, TypeError, KeyError) as exc:
        raise BrokerError(
            f"invalid RedrivePolicy {value!r}: need JSON with deadLetterTargetArn "
            "and maxReceiveCount"
        ) from exc
    if not isinstance(arn, str) or not 1 <= count <= 1000:
        raise BrokerError(f"invalid RedrivePolicy {value!r}: maxReceiveCount must be 1 to 1000")
    return json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": count})


def check_attributes(name: str, attributes: Mapping[str, str]) -> dict[str, str]:
    """The given attributes, normalised; raises BrokerError like SQS would."""
    fifo = name.endswith(".fifo")
    result = {key: _check_one(key, str(value)) for key, value in attributes.items()}
    if result.get("FifoQueue", "true" if fifo else "false") != ("true" if fifo else "false"):
        raise BrokerError(
            f"queue {name}: FifoQueue={result['FifoQueue']} but the name "
            + ("ends" if fifo else "does not end")
            + " in .fifo; a FIFO queue's name must end in .fifo"
        )
    if not fifo and "ContentBasedDeduplication" in result:
        raise BrokerError(f"queue {name}: ContentBasedDeduplication applies to FIFO queues only")
    return result


def initial_attributes(name: str, given: Mapping[str, str]) -> dict[str, str]:
    """SQS's defaults for a new queue ``name``, overridden by ``given`` (checked)."""
    result = dict(_DEFAULTS)
    if name.endswith(".fifo"):
        result.update(_FIFO_DEFAULTS)
    result.update(given)
    if result.get("RedrivePolicy") == "":
        del result["RedrivePolicy"]
    return result


def attribute_conflicts(stored: Mapping[str, str], given: Mapping[str, str]) -> list[str]:
    """Names of the given (checked) attributes whose value differs from the stored one."""
    stored_redrive = stored.get("RedrivePolicy", "")
    return sorted(
        key
        for key, value in given.items()
        if value != (stored_redrive if key == "RedrivePolicy" else stored.get(key))
    )


@dataclass(frozen=True)
class QueueSettings:
    """A queue's stored attributes and what the broker reads from them on every call."""

    attributes: Mapping[str, str]
    fifo: bool
    max_size: int
    delay: int
    retention: int
    content_dedup: bool
    dead_letter: str | None  # the name of the RedrivePolicy's target, if a SQLite queue
    max_receives: int | None


@functools.lru_cache(maxsize=64)
def queue_settings(text: str) -> QueueSettings:
    """The settings of the attributes stored as JSON ``text`` (cached: a queue is
    looked up on every call)."""
    attributes: dict[str, str] = json.loads(text)
    policy = json.loads(attributes.get("RedrivePolicy") or "{}")
    arn = str(policy.get("deadLetterTargetArn", ""))
    return QueueSettings(
        attributes=MappingProxyType(attributes),
        fifo=attributes.get("FifoQueue") == "true",
        max_size=int(attributes["MaximumMessageSize"]),
        delay=int(attributes["DelaySeconds"]),
        retention=int(attributes["MessageRetentionPeriod"]),
        content_dedup=attributes.get("ContentBasedDeduplication") == "true",
        dead_letter=arn[len(ARN_PREFIX) :] if arn.startswith(ARN_PREFIX) else None,
        max_receives=int(policy["maxReceiveCount"]) if policy else None,
    )


# -- the file ------------------------------------------------------------------


def mapped_error(exc: sqlite3.Error, path: Path) -> BrokerError:
    """The qdone error for an sqlite3 error on the store at ``path``."""
    text = str(exc)
    if "not a database" in text or "encrypted" in text:
        return BrokerUnavailable(f"{path} is not a qdone store (not an SQLite database)")
    if "readonly" in text or "unable to open" in text or "disk I/O" in text:
        return BrokerUnavailable(f"cannot write the qdone store {path}: {text}")
    if "locked" in text or "busy" in text:
        return BrokerError(f"the qdone store {path} stayed locked for {BUSY_TIMEOUT:g} s")
    return BrokerError(f"the qdone store {path} failed: {text}")


class Connection(sqlite3.Connection):
    """A connection to a store, with the lock its process's writers share."""

    writers: threading.RLock


@contextmanager
def transaction(conn: Connection) -> Iterator[Connection]:
    """``BEGIN IMMEDIATE``: take the write lock first, so claims never race.

    Threads of one process take turns on their own lock first: SQLite makes a
    writer that finds the file locked sleep a millisecond or more before trying
    again, while a thread lock hands over at once."""
    with conn.writers:
        conn.execute("begin immediate")
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:
                conn.execute("rollback")
            raise
        conn.execute("commit")


def create_file(path: Path) -> None:
    """The store's directory (0700) and an empty file (0600) if there is none yet."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except OSError as exc:
        raise BrokerUnavailable(
            f"cannot create the qdone store {path}: {exc.strerror or exc}"
        ) from exc


def connect(path: Path, writers: threading.RLock | None = None) -> Connection:
    """A connection to the store at ``path``; ``writers``: the lock this process's
    connections to it share (see ``transaction``)."""
    conn = sqlite3.connect(
        str(path),
        timeout=BUSY_TIMEOUT,
        isolation_level=None,
        check_same_thread=False,
        factory=Connection,
    )
    assert isinstance(conn, Connection)
    conn.writers = writers or threading.RLock()
    conn.execute("pragma synchronous = normal")  # WAL: durable across crashes of qdone
    return conn


def init_store(conn: Connection, path: Path) -> None:
    """Check that ``path`` is a qdone store (or empty), then create the schema."""
    app_id, version = _store_marks(conn)
    tables = conn.execute("select count(*) from sqlite_master").fetchone()[0]
    if app_id != APPLICATION_ID and (app_id != 0 or tables):
        raise BrokerUnavailable(f"{path} is not a qdone store (another application's database)")
    if version > SCHEMA_VERSION:
        raise BrokerUnavailable(
            f"{path} is a qdone store of schema {version}, newer than this qdone; upgrade qdone"
        )
    conn.execute("pragma journal_mode = wal")
    with transaction(conn):
        for statement in SCHEMA:
            conn.execute(statement)
        conn.execute(f"pragma application_id = {APPLICATION_ID}")
        conn.execute(f"pragma user_version = {SCHEMA_VERSION}")


def _store_marks(conn: sqlite3.Connection) -> tuple[int, int]:
    app_id = int(conn.execute("pragma application_id").fetchone()[0])
    version = int(conn.execute("pragma user_version").fetchone()[0])
    return app_id, version


def check_batch_ids(ids: Sequence[str], action: str) -> None:
    """Whole-batch errors, as SQS raises them."""
    if not ids:
        raise BrokerError(f"{action}: empty batch")
    if len(ids) > MAX_BATCH:
        raise BrokerError(f"{action}: {len(ids)} entries, at most {MAX_BATCH} allowed")
    if len(set(ids)) != len(ids):
        raise BrokerError(f"{action}: batch entry ids are not distinct")
    bad = [i for i in ids if not _BATCH_ID.fullmatch(i)]
    if bad:
        raise BrokerError(f"{action}: invalid batch entry id {bad[0]!r}")


def _utf8_length(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode(errors="replace"))


def entry_size(entry: SendEntry) -> int:
    """Bytes SQS counts: the body plus attribute names and values, in UTF-8."""
    if not entry.attributes:
        body = entry.body
        return len(body) if body.isascii() else len(body.encode(errors="replace"))
    parts = [entry.body, *entry.attributes.keys(), *entry.attributes.values()]
    return sum(map(_utf8_length, parts))


def failed_entry(entry_id: str, code: str, message: str) -> FailedEntry:
    return FailedEntry(id=entry_id, code=code, message=message, sender_fault=True)


def entry_error(queue: QueueSettings, entry: SendEntry, size: int) -> FailedEntry | None:
    """Why SQS would refuse this entry, or None."""
    limit = queue.max_size
    body = entry.body
    # (The isascii/isprintable test spares most bodies a regular-expression scan.)
    plain = body.isascii() and body.isprintable()
    if not body or (not plain and invalid_character(body) is not None):
        return failed_entry(entry.id, "InvalidMessageContents", "empty body or invalid characters")
    if size > limit:
        text = f"message is {size} bytes; the queue allows {limit}"
        return failed_entry(entry.id, "InvalidParameterValue", text)
    if entry.delay is not None and not 0 <= entry.delay <= MAX_DELAY:
        return failed_entry(entry.id, "InvalidParameterValue", f"delay must be 0 to {MAX_DELAY} s")
    if not queue.fifo:
        return None
    if not entry.group_id:
        return failed_entry(entry.id, "MissingParameter", "a FIFO queue needs a message group id")
    if entry.delay:
        return failed_entry(
            entry.id, "InvalidParameterValue", "FIFO queues take no per-message delay"
        )
    if not entry.dedup_id and not queue.content_dedup:
        return failed_entry(entry.id, "InvalidParameterValue", "a FIFO queue needs a dedup id")
    return None


class MessageIds:
    """Unique message ids shaped like UUIDs: a random prefix per process, then a counter
    (much faster than ``uuid4``; a forked child draws a new prefix)."""

    def __init__(self) -> None:
        self._pid = -1
        self._format = ""
        self._next = 0
        self._lock = threading.Lock()

    def reserve(self, count: int) -> tuple[str, int]:
        """``count`` ids for this caller alone: a ``printf`` format and the first
        number; id ``n`` (from 0) is ``format % (first + n)``, in Python or SQLite."""
        with self._lock:
            if self._pid != os.getpid():
                digits = secrets.token_hex(10)
                prefix = f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:]}-"
                self._format, self._pid = prefix + "%012x", os.getpid()
            first = self._next
            self._next += count
            return self._format, first

    def __call__(self, count: int) -> list[str]:
        form, first = self.reserve(count)
        return [form % n for n in range(first, first + count)]


def parse_receipt(receipt: str) -> tuple[int, str]:
    row_id, _, token = receipt.partition(".")
    return (int(row_id) if row_id.isdigit() else -1), token


def invalid_receipt(entry_id: str) -> FailedEntry:
    return failed_entry(
        entry_id,
        "ReceiptHandleIsInvalid",
        "the receipt handle is not valid: the message was deleted or received again since",
    )
