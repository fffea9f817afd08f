"""The benchmarks' SQLite floor (``bench/bench_enqueue.py``) builds qdone's own
schema and inserts into it: it must follow the schema as it changes, or
``bench/report.py`` stops at it."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"


def test_bare_sqlite_floor_inserts_into_qdones_schema(tmp_path: Path) -> None:
    sys.path.insert(0, str(BENCH))
    try:
        import bench_enqueue
    finally:
        sys.path.remove(str(BENCH))
    seconds = bench_enqueue._bare_sqlite(tmp_path / "bare.db", 50)
    assert seconds >= 0
    with sqlite3.connect(tmp_path / "bare.db") as db:
        assert db.execute("select count(*) from messages").fetchone() == (50,)
