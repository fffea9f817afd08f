"""Enqueue benchmark: API calls and wall time of enqueue and enqueue-batch.

Run:  python bench/bench_enqueue.py   (starts its own moto server on loopback)

Prints figures; asserts nothing. Ratios compare runs made in the same process,
one after the other, on the same server.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _util import latency_proxy, median, moto_server, timed

from qdone.batchfile import BatchLine
from qdone.broker.sqlite import SqliteBroker
from qdone.broker.sqlite_schema import SCHEMA
from qdone.broker.sqs import SqsBroker
from qdone.config import Options, QueueOptions
from qdone.enqueue import enqueue, enqueue_batch

ROUNDS = 3
RTT = 0.02  # seconds: a round trip between a machine and SQS in its region


def calls(broker: SqsBroker | SqliteBroker) -> str:
    counts = broker.calls.by_action(broker.service)
    return f"{sum(counts.values())} ({', '.join(f'{a} {n}' for a, n in counts.items())})"


def jobs(queues: list[str], n: int) -> list[BatchLine]:
    return [BatchLine("bench", i + 1, queues[i % len(queues)], f"echo job {i}") for i in range(n)]


def sqs_enqueue(endpoint: str) -> None:
    options = Options(prefix=f"b{uuid.uuid4().hex[:6]}_")
    new = SqsBroker(endpoint_url=endpoint)
    _, t_new = timed(lambda: enqueue(new, options, QueueOptions(), "one", "true"))
    old = SqsBroker(endpoint_url=endpoint)
    _, t_old = timed(lambda: enqueue(old, options, QueueOptions(), "one", "true"))
    print(f"| enqueue, new queue | {calls(new)} | {t_new * 1000:.0f} ms |")
    print(f"| enqueue, existing queue | {calls(old)} | {t_old * 1000:.0f} ms |")


def sqs_batch(endpoint: str, n_queues: int, where: str) -> None:
    concurrent, sequential = [], []
    for _ in range(ROUNDS):
        for label, results in (("concurrent", concurrent), ("sequential", sequential)):
            options = Options(prefix=f"b{uuid.uuid4().hex[:6]}_")
            broker = SqsBroker(endpoint_url=endpoint)
            if label == "sequential":
                broker.send_concurrency = 1
            names = [f"q{i}" for i in range(n_queues)]
            _, seconds = timed(
                lambda b=broker, o=options, q=names: enqueue_batch(
                    b, o, QueueOptions(), jobs(q, 1000)
                )
            )
            results.append((seconds, calls(broker)))
    t_con, t_seq = median([s for s, _ in concurrent]), median([s for s, _ in sequential])
    print(
        f"| enqueue-batch 1,000 lines, {n_queues} new queue(s), {where} | {concurrent[0][1]} | "
        f"{t_con:.2f} s (sequential sender: {t_seq:.2f} s, ratio {t_con / t_seq:.2f}) |"
    )


def sqlite_batch(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ours, bare = [], []
        for r in range(ROUNDS):
            broker = SqliteBroker(Path(tmp) / f"q{r}.db")
            lines = jobs(["load"], n)
            _, seconds = timed(
                lambda b=broker, j=lines: enqueue_batch(b, Options(), QueueOptions(), j)
            )
            ours.append(seconds)
            broker.close()
            bare.append(_bare_sqlite(Path(tmp) / f"bare{r}.db", n))
        t_ours, t_bare = median(ours), median(bare)
        print(
            f"| enqueue-batch {n:,} lines, SQLite | {n // 10:,} batches in {-(-n // 5000):,} "
            "transactions | "
            f"{t_ours:.2f} s, {n / t_ours:,.0f} lines/s (bare executemany: {n / t_bare:,.0f}/s, "
            f"ratio {t_bare / t_ours:.2f}) |"
        )


def _bare_sqlite(path: Path, n: int) -> float:
    """The floor: one executemany of the same rows, into qdone's own schema, in one
    transaction."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("pragma journal_mode = wal")
    for statement in SCHEMA:
        db.execute(statement)
    rows = [(1, uuid.uuid4().hex, f"echo job {i}", None, None, 0.0, 0.0) for i in range(n)]
    insert = (
        "insert into messages (qid, message_id, body, attributes, group_id, sent_at,"
        " visible_at) values (?, ?, ?, ?, ?, ?, ?)"
    )

    def run() -> None:
        db.execute("begin")
        db.executemany(insert, rows)
        db.execute("commit")

    _, seconds = timed(run)
    db.close()
    return seconds


def startup() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "XDG_DATA_HOME": tmp}
        for label, args in (
            ("qdone --version", ["--version"]),
            ("qdone enqueue (SQLite)", ["enqueue", "q", "true"]),
        ):
            times = [
                timed(
                    lambda a=args: subprocess.run(
                        [sys.executable, "-m", "qdone", *a],
                        env=env,
                        capture_output=True,
                        check=True,
                    )
                )[1]
                for _ in range(5)
            ]
            print(f"| {label} | process start to exit | {median(times) * 1000:.0f} ms |")


def main() -> None:
    print("# qdone enqueue benchmark: python bench/bench_enqueue.py")
    print(f"# {os.cpu_count()} cores; medians of {ROUNDS} rounds; moto server on loopback\n")
    print("| operation | API calls | wall time |")
    print("|---|---|---|")
    startup()
    with moto_server() as endpoint:
        sqs_enqueue(endpoint)
        sqs_batch(endpoint, 1, "moto")
        sqs_batch(endpoint, 10, "moto")
        # moto spends ~20 ms of CPU per SendMessageBatch under one lock, so on it
        # batches in flight at once cannot overlap; a real network round trip can.
        with latency_proxy(endpoint, RTT) as remote:
            sqs_batch(remote, 1, f"moto + {RTT * 1000:.0f} ms round trip")
            sqs_batch(remote, 10, f"moto + {RTT * 1000:.0f} ms round trip")
    sqlite_batch(10_000)
    sqlite_batch(100_000)


if __name__ == "__main__":
    main()
