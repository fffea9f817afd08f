"""A SQLite store's connections: the file made and checked on first use, one
connection per thread (sharing the lock of the process's writers), read-only where
the store cannot be written and the caller only reads; all closed together."""

from __future__ import annotations

import os
import sqlite3
import threading

from ..errors import BrokerError
from . import sqlite_schema as schema
from . import sqlite_send as sending

__all__ = ["Connections"]


class Connections:
    """The connections of one ``SqliteBroker`` to the store at ``path``.

    ``reads_only``: a store that cannot be written (a read-only file system or
    file) is opened read-only, for commands that only look (``monitor``)."""

    def __init__(self, path: str, *, reads_only: bool = False) -> None:
        self.path = path
        self.json_each = False  # whether this SQLite has json_each (see sqlite_send)
        self.read_only = False  # opened read-only: this process cannot write it
        self._reads_only = reads_only
        self._local = threading.local()
        self._lock = threading.Lock()
        self._writers = threading.RLock()  # see schema.transaction
        self._connections: list[schema.Connection] = []
        self._opened = False

    def open(self) -> None:
        """Create (or check) the store, once."""
        with self._lock:
            if self._opened:
                return
            schema.create_file(self.path)
            conn: schema.Connection | None = None
            try:
                conn = schema.connect(self.path, self._writers)
                schema.init_store(conn, self.path)
                self.json_each = sending.has_json_each(conn)
            except (sqlite3.Error, BrokerError) as exc:
                if conn is not None:
                    conn.close()
                if isinstance(exc, sqlite3.Error):
                    conn = self._open_read_only(exc)
                else:
                    raise
            self._connections.append(conn)
            self._local.conn = conn
            self._opened = True

    def _open_read_only(self, exc: sqlite3.Error) -> schema.Connection:
        """The store could not be opened for writing: open it read-only if it is a
        qdone store that can be read, else raise the error of the first try. A
        command that writes then fails on its first write ("cannot write")."""
        text = str(exc)
        cannot_write = "readonly" in text or "unable to open" in text
        if not (self._reads_only and cannot_write and os.path.isfile(self.path)):
            raise schema.mapped_error(exc, self.path) from exc
        try:
            conn = schema.connect_read_only(self.path)
        except sqlite3.Error:
            raise schema.mapped_error(exc, self.path) from exc
        self.read_only = True
        self.json_each = sending.has_json_each(conn)
        return conn

    def get(self) -> schema.Connection:
        """This thread's connection, the store opened first if need be."""
        conn: schema.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            if not self._opened:
                self.open()
                return self.get()
            if self.read_only:
                conn = schema.connect_read_only(self.path)
            else:
                conn = schema.connect(self.path, self._writers)
            with self._lock:
                self._connections.append(conn)
            self._local.conn = conn
        return conn

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()
        self._local = threading.local()
