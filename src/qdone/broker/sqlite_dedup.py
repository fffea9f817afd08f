"""Deduplication windows and run claims in the SQLite store's own tables: the same
semantics as in Redis (see ``qdone.dedup``), for a store shared by the processes
of one machine, with no Redis."""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

from ..errors import BrokerError
from . import sqlite_schema as schema

__all__ = ["DEDUP_SCHEMA", "SqliteDedup"]

log = logging.getLogger("qdone.cache.dedup")
T = TypeVar("T")

DEDUP_SCHEMA: tuple[str, ...] = (
    """create table if not exists dedup_windows (
        id text primary key,        -- QdoneDeduplicationId
        copies integer not null,    -- enqueues counted in the window (the first was sent)
        expires real not null
    ) without rowid""",
    "create index if not exists dedup_windows_expires on dedup_windows (expires)",
    """create table if not exists dedup_claims (
        key text primary key,       -- deduplication id and token
        holder text not null,       -- the message id whose job runs, or 'done'
        expires real not null
    ) without rowid""",
    "create index if not exists dedup_claims_expires on dedup_claims (expires)",
)

_OPEN = (
    "insert into dedup_windows (id, copies, expires) values (?, 1, ?) "
    "on conflict (id) do update set copies = copies + 1 returning copies"
)


class SqliteDedup:
    """A ``DedupStore`` in the store at ``path``. Errors are logged (one line) and
    answered as "no answer"; the broker's own calls report the store's trouble."""

    def __init__(
        self, connect: Callable[[], schema.Connection], path: str, clock: Callable[[], float]
    ) -> None:
        self.connect = connect
        self.path = path
        self.clock = clock
        self._ready = False  # tables made on first use: the store may not exist yet
        self._lock = threading.Lock()

    def _conn(self) -> schema.Connection:
        conn = self.connect()
        with self._lock:
            if not self._ready:
                with schema.transaction(conn):
                    for statement in DEDUP_SCHEMA:
                        conn.execute(statement)
                self._ready = True
        return conn

    def open_windows(self, ids: Sequence[str], period: int, stats: bool) -> list[int] | None:
        now = self.clock()

        def run(conn: schema.Connection) -> list[int]:
            conn.execute("delete from dedup_windows where expires <= ?", (now,))
            return [int(conn.execute(_OPEN, (ident, now + period)).fetchone()[0]) for ident in ids]

        return self._write(run)

    def close_windows(self, ids: Sequence[str]) -> bool:
        def run(conn: schema.Connection) -> bool:
            conn.executemany("delete from dedup_windows where id = ?", [(i,) for i in ids])
            return True

        return bool(self._write(run))

    def claim(self, key: str, holder: str, ttl: int) -> bool | None:
        now = self.clock()

        def run(conn: schema.Connection) -> bool:
            row = conn.execute(
                "select holder from dedup_claims where key = ? and expires > ?", (key, now)
            ).fetchone()
            if row is not None and row[0] != holder:
                return False
            conn.execute(
                "insert or replace into dedup_claims (key, holder, expires) values (?, ?, ?)",
                (key, holder, now + ttl),
            )
            return True

        return self._write(run)

    def finish(self, key: str, done_ttl: int | None) -> bool:
        now = self.clock()

        def run(conn: schema.Connection) -> bool:
            conn.execute("delete from dedup_claims where expires <= ?", (now,))
            if done_ttl is None:
                conn.execute("delete from dedup_claims where key = ?", (key,))
            else:
                conn.execute(
                    "insert or replace into dedup_claims (key, holder, expires) "
                    "values (?, 'done', ?)",
                    (key, now + done_ttl),
                )
            return True

        return bool(self._write(run))

    def copies(self, ident: str) -> int:
        """Enqueues counted in the open window of ``ident`` (0: none open)."""
        row = (
            self._conn()
            .execute(
                "select copies from dedup_windows where id = ? and expires > ?",
                (ident, self.clock()),
            )
            .fetchone()
        )
        return int(row[0]) if row else 0

    def _write(self, run: Callable[[schema.Connection], T]) -> T | None:
        try:
            with schema.transaction(self._conn()) as conn:
                return run(conn)
        except (sqlite3.Error, BrokerError) as exc:
            log.warning("deduplication in the qdone store %s failed: %s", self.path, exc)
            return None
