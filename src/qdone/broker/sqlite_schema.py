"""The SQLite store's file: the schema (kept as data), opening and checking the file,
connections and their transactions, message ids and receipts.

``broker/sqlite.py`` holds the broker, ``sqlite_rules.py`` SQS's rules; everything
here is shared by them and stateless.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import BrokerError, BrokerUnavailable, StoreDamaged

__all__ = [
    "APPLICATION_ID",
    "ARN_PREFIX",
    "BUSY_TIMEOUT",
    "SCHEMA",
    "SCHEMA_VERSION",
    "URL_PREFIX",
    "Connection",
    "MessageIds",
    "connect",
    "create_file",
    "init_store",
    "mapped_error",
    "parse_receipt",
    "transaction",
]

#: ``PRAGMA application_id`` of a qdone store: "qdon" in ASCII.
APPLICATION_ID = 0x71646F6E
#: ``PRAGMA user_version``: bumped when the schema changes incompatibly.
SCHEMA_VERSION = 1

URL_PREFIX = "sqlite:"
ARN_PREFIX = "arn:qdone:sqlite:local:"

BUSY_TIMEOUT = 30.0  # seconds a write waits for another process's transaction

#: The schema, by the name of each table and index.
SCHEMA: dict[str, str] = {
    "queues": """create table if not exists queues (
        qid integer primary key,
        name text not null unique,
        fifo integer not null,
        attributes text not null,   -- JSON: the settable attributes, as strings
        tags text not null,         -- JSON
        created real not null,
        modified real not null,
        active real not null        -- last send, receive that returned messages, or delete
    )""",
    "messages": """create table if not exists messages (
        id integer primary key,     -- also the order of sending
        qid integer not null,
        message_id text not null,
        body text not null,
        attributes text,            -- JSON, or null when there are none
        group_id text,
        sent_at real not null,
        visible_at real not null,
        receive_count integer not null default 0,
        receipt text,               -- token of the latest receive; null if never received
        moved_at real               -- when the redrive moved it to this queue; null if sent
    )""",
    "messages_visible": "create index if not exists messages_visible on messages (qid, visible_at)",
    # FIFO receives walk a queue in the order sent; only FIFO messages have a group.
    "messages_fifo": (
        "create index if not exists messages_fifo on messages (qid) where group_id is not null"
    ),
    "dedup": """create table if not exists dedup (
        qid integer not null,
        dedup_id text not null,
        message_id text not null,
        expires real not null,
        primary key (qid, dedup_id)
    ) without rowid""",
    "dedup_expires": "create index if not exists dedup_expires on dedup (expires)",
}

# -- the file ------------------------------------------------------------------


def mapped_error(exc: sqlite3.Error, path: str) -> BrokerError:
    """The qdone error for an sqlite3 error on the store at ``path``."""
    text = str(exc)
    if "not a database" in text or "encrypted" in text:
        return BrokerUnavailable(f"{path} is not a qdone store (not an SQLite database)")
    if "malformed" in text or "corrupt" in text:  # SQLITE_CORRUPT: no longer a usable store
        return StoreDamaged(
            f"the qdone store {path} is damaged ({text})",
            hint=f"move it aside; `sqlite3 {path} .recover` may save its messages",
        )
    if "disk is full" in text:  # SQLITE_FULL: the transaction was rolled back
        return BrokerUnavailable(f"the qdone store {path} is full: {text}")
    if "readonly" in text or "unable to open" in text or "disk I/O" in text:
        return BrokerUnavailable(f"cannot write the qdone store {path}: {text}")
    if "locked" in text or "busy" in text:
        return BrokerError(f"the qdone store {path} stayed locked for {BUSY_TIMEOUT:g} s")
    return BrokerError(f"the qdone store {path} failed: {text}")


class Connection(sqlite3.Connection):
    """A connection to a store, with the lock its process's writers share, and the
    urls of the queues its last receive from found messages (``sqlite_receive``)."""

    writers: threading.RLock
    busy: set[str]


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


def create_file(path: str) -> None:
    """The store's directory (0700) and an empty file (0600) if there is none yet."""
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except OSError as exc:
        raise BrokerUnavailable(
            f"cannot create the qdone store {path}: {exc.strerror or exc}"
        ) from exc


def connect(path: str, writers: threading.RLock | None = None) -> Connection:
    """A connection to the store at ``path``; ``writers``: the lock this process's
    connections to it share (see ``transaction``)."""
    conn = sqlite3.connect(
        path,
        timeout=BUSY_TIMEOUT,
        isolation_level=None,
        check_same_thread=False,
        factory=Connection,
    )
    assert isinstance(conn, Connection)
    conn.writers = writers or threading.RLock()
    conn.busy = set()
    conn.execute("pragma synchronous = normal")  # WAL: durable across crashes of qdone
    return conn


def connect_read_only(path: str) -> Connection:
    """A read-only connection to the store at ``path``, for a store this process
    cannot write (a read-only file system or file): it can still be looked at
    (``monitor``). SQLite reads a WAL store read-only only where it can make or
    open its shared-memory file; where it cannot (a read-only directory), nobody
    can write the store either, and it is opened as immutable."""
    from pathlib import Path  # for its file URI; only here, a rare case

    uri = Path(path).absolute().as_uri()
    last: sqlite3.Error | None = None
    for query in ("mode=ro", "mode=ro&immutable=1"):
        conn: Connection | None = None
        try:
            conn = sqlite3.connect(
                f"{uri}?{query}",
                uri=True,
                timeout=BUSY_TIMEOUT,
                isolation_level=None,
                check_same_thread=False,
                factory=Connection,
            )
            assert isinstance(conn, Connection)
            conn.writers = threading.RLock()
            conn.busy = set()
            check_store(conn, path)
            return conn
        except (sqlite3.Error, BrokerError) as exc:
            if conn is not None:
                conn.close()
            if not isinstance(exc, sqlite3.Error):
                raise
            last = exc
    assert last is not None
    raise last


def check_store(conn: Connection, path: str) -> bool:
    """Raise ``BrokerUnavailable`` unless ``path`` is a qdone store (or empty) that
    this qdone can use; whether it is whole: of this schema version, with every
    table, index and column of ``SCHEMA`` and ``ADDED_COLUMNS``."""
    app_id, version = _store_marks(conn)
    names = {row[0] for row in conn.execute("select name from sqlite_master")}
    if app_id != APPLICATION_ID and (app_id != 0 or names):
        raise BrokerUnavailable(f"{path} is not a qdone store (another application's database)")
    if version > SCHEMA_VERSION:
        raise BrokerUnavailable(
            f"{path} is a qdone store of schema {version}, newer than this qdone; upgrade qdone"
        )
    return (
        app_id == APPLICATION_ID
        and version == SCHEMA_VERSION
        and names.issuperset(SCHEMA)
        and not _missing_columns(conn)
    )


def init_store(conn: Connection, path: str) -> None:
    """Check that ``path`` is a qdone store (or empty), then create what it lacks of
    the schema. A whole store is only read (opening it takes no write lock), unless
    this process cannot write the file: the transaction then fails here, with the
    error every write would meet (one line, not one per job)."""
    whole = check_store(conn, path)
    conn.execute("pragma journal_mode = wal")
    if whole and os.access(path, os.W_OK):
        return
    with transaction(conn):
        for statement in SCHEMA.values():
            conn.execute(statement)
        for table, column, declaration in _missing_columns(conn):
            conn.execute(f"alter table {table} add column {column} {declaration}")
        conn.execute(f"pragma application_id = {APPLICATION_ID}")
        conn.execute(f"pragma user_version = {SCHEMA_VERSION}")


#: Columns added since a table was first created: (table, column, declaration). A
#: nullable column needs no new schema version: older qdone ignores it.
ADDED_COLUMNS: tuple[tuple[str, str, str], ...] = (("messages", "moved_at", "real"),)


def _missing_columns(conn: sqlite3.Connection) -> list[tuple[str, str, str]]:
    """The ``ADDED_COLUMNS`` a store made by an older qdone lacks (a table not
    made yet lacks none: it is made with them)."""
    missing = []
    for table, column, declaration in ADDED_COLUMNS:
        present = {row[1] for row in conn.execute(f"pragma table_info({table})")}
        if present and column not in present:
            missing.append((table, column, declaration))
    return missing


def _store_marks(conn: sqlite3.Connection) -> tuple[int, int]:
    app_id = int(conn.execute("pragma application_id").fetchone()[0])
    version = int(conn.execute("pragma user_version").fetchone()[0])
    return app_id, version


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
                digits = os.urandom(10).hex()
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
