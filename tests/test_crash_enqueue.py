"""SIGKILL ``qdone enqueue-batch`` half-way on SQLite: the store stays consistent and
each line is either wholly enqueued or not at all.

enqueue-batch commits up to 5,000 messages per SQLite transaction, one queue at a
time and in order, so after a kill each queue holds a whole number of transactions:
a prefix of its lines, none twice, none torn.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from qdone.broker.sqlite import SqliteBroker

from .cli_helpers import run_qdone

LINES = 200_000
QUEUES = 2
TRANSACTION = 5_000  # SqliteBroker.batches_per_send batches of 10


def command(i: int) -> str:
    """Line ``i``'s command: its number, a checksum of it, and padding."""
    digest = hashlib.sha1(str(i).encode()).hexdigest()[:12]
    return f"echo {i} {digest} {'x' * 40}"


def valid(body: str) -> bool:
    parts = body.split(" ")
    return len(parts) == 4 and parts[1].isdigit() and body == command(int(parts[1]))


def _count(store: Path) -> int:
    try:
        db = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5)
        try:
            return int(db.execute("select count(*) from messages").fetchone()[0])
        finally:
            db.close()
    except sqlite3.Error:
        return 0  # not created yet


def _kill_half_way(jobs: Path, store: Path) -> int:
    """Start enqueue-batch, SIGKILL it once a quarter of the lines are committed
    (mid-way through a later transaction, most likely); the count seen then."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "qdone",
            "enqueue-batch",
            str(jobs),
            "--broker",
            f"sqlite://{store}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while (seen := _count(store)) < LINES // 4 and time.monotonic() < deadline:
            assert proc.poll() is None, "enqueue-batch ended before it could be killed"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    return seen


@pytest.mark.parametrize("fifo", [False, True], ids=["standard", "fifo"])
def test_sigkill_half_way_leaves_whole_lines_only(tmp_path: Path, fifo: bool) -> None:
    jobs = tmp_path / "jobs.txt"
    suffix = ".fifo" if fifo else ""
    with jobs.open("w") as out:
        out.writelines(f"q{i % QUEUES}{suffix} {command(i)}\n" for i in range(LINES))
    store = tmp_path / "store.db"
    seen = _kill_half_way(jobs, store)

    db = sqlite3.connect(store)
    assert db.execute("pragma integrity_check").fetchall() == [("ok",)]
    rows = db.execute(
        "select q.name, m.body from messages m join queues q using (qid) order by m.id"
    ).fetchall()
    dedup = db.execute("select count(*) from dedup").fetchone()[0]
    db.close()

    assert seen <= len(rows) < LINES, "killed after the whole input was enqueued"
    print(f"killed with {len(rows):,} of {LINES:,} lines enqueued")
    bodies = Counter(body for _, body in rows)
    assert [body for body in bodies if not valid(body)] == []  # no torn or foreign rows
    assert [body for body, n in bodies.items() if n > 1] == []  # none twice
    for k in range(QUEUES):
        expected = [command(i) for i in range(k, LINES, QUEUES)]
        got = [body for name, body in rows if name == f"qdone_q{k}{suffix}"]
        # Whole transactions, and the queue's lines from its first, in order.
        assert len(got) % TRANSACTION == 0 or len(got) == len(expected), len(got)
        assert got == expected[: len(got)]
    assert dedup == (len(rows) if fifo else 0)

    # The store opens cleanly and takes more work.
    broker = SqliteBroker(store)
    try:
        url = broker.get_queue_url(f"qdone_q0{suffix}")
        attributes = broker.get_queue_attributes(url, ["ApproximateNumberOfMessages"])
        assert int(attributes["ApproximateNumberOfMessages"]) == sum(
            1 for name, _ in rows if name == f"qdone_q0{suffix}"
        )
    finally:
        broker.close()
    again = run_qdone("enqueue", "--broker", f"sqlite://{store}", f"q0{suffix}", "echo after")
    assert again.returncode == 0, again.stderr
