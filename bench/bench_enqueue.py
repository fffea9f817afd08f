"""Enqueue benchmark: API calls and throughput of enqueue and enqueue-batch (start-up
is in ``bench_startup.py``).

Run:  python bench/bench_enqueue.py [--rounds 3] [--quick] [--json]
(starts its own moto server on loopback)

Prints one Markdown table (JSON lines with --json); asserts nothing. Every timed
figure is the median of --rounds runs; each round runs the compared commands back
to back (in turn, the order flipped every other round), and a ratio is the median
of the per-round ratios. The moto rows give moto's own CPU time during qdone's run:
moto (without its per-call scan of every message: ``moto_fast.py``) serves calls
one at a time on one core, so no client can make the same calls to it in less time.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import uuid
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _util import (
    Moto,
    Row,
    bench_args,
    emit,
    in_turn,
    latency_proxy,
    medians,
    moto_note,
    moto_server,
    progress,
    timed,
)

from qdone.batchfile import BatchLine
from qdone.broker.sqlite import SqliteBroker
from qdone.broker.sqlite_schema import SCHEMA
from qdone.broker.sqs import SqsBroker
from qdone.config import Options, QueueOptions
from qdone.enqueue import enqueue, enqueue_batch

RTT = 0.02  # seconds: a round trip between a machine and SQS in its region
ROWS: list[Row] = []


def add(row: Row) -> None:
    ROWS.append(row)
    progress(row)


def calls(broker: SqsBroker | SqliteBroker) -> tuple[int, str]:
    """Total calls the broker made, and ``Action n, …``."""
    counts = broker.calls.by_action(broker.service)
    return sum(counts.values()), ", ".join(f"{a} {n}" for a, n in counts.items())


def jobs(queues: list[str], n: int) -> list[BatchLine]:
    return [BatchLine("bench", i + 1, queues[i % len(queues)], f"echo job {i}") for i in range(n)]


def sqs_enqueue(moto: Moto, rounds: int) -> None:
    """One ``enqueue`` in process: to a new queue, then to the same queue again."""
    results, detail = [], {}
    for _ in range(rounds):
        options = Options(prefix=f"b{uuid.uuid4().hex[:6]}_")
        figures = {}
        for key in ("new", "existing"):
            broker = SqsBroker(endpoint_url=moto.url)
            _, seconds = timed(partial(enqueue, broker, options, QueueOptions(), "one", "true"))
            figures[key], (figures[key + "_calls"], detail[key]) = seconds, calls(broker)
            broker.close()
        results.append(figures)
    m = medians(results)
    for key, what in (("new", "a new queue"), ("existing", "an existing queue")):
        add(
            Row(
                f"enqueue 1 job to {what} (moto, in process): wall time, SQS calls",
                f"{m[key] * 1000:.0f} ms; {m[key + '_calls']:.0f} calls ({detail[key]})",
                rounds=results,
            )
        )


def sqs_batch(
    moto: Moto, endpoint: str, lines: int, n_queues: int, where: str, rounds: int
) -> None:
    """enqueue-batch of ``lines`` lines to ``n_queues`` new queues, with qdone's
    concurrent sender against the same code sending one batch at a time."""
    results, detail, in_flight = [], "", 0
    queues = "1 new queue" if n_queues == 1 else f"{n_queues} new queues"
    for r in range(rounds):
        figures = {}
        for label in in_turn(r, ("qdone", "sequential")):
            options = Options(prefix=f"b{uuid.uuid4().hex[:6]}_")
            broker = SqsBroker(endpoint_url=endpoint)
            if label == "sequential":
                broker.send_concurrency = 1
            names = [f"q{i}" for i in range(n_queues)]
            batch = jobs(names, lines)
            cpu_before = moto.cpu()
            _, seconds = timed(partial(enqueue_batch, broker, options, QueueOptions(), batch))
            figures[label], figures[label + "_cpu"] = seconds, moto.cpu() - cpu_before
            if label == "qdone":
                figures["calls"], detail = calls(broker)
                in_flight = broker.send_concurrency
            broker.close()
        figures["ratio"] = figures["sequential"] / figures["qdone"]  # lines/s over lines/s
        figures["busy"] = figures["qdone_cpu"] / figures["qdone"]
        figures["bound"] = figures["sequential"] / figures["qdone_cpu"]
        results.append(figures)
    m = medians(results)
    note = moto_note(m["qdone_cpu"], m["qdone"], m["busy"], lines, "line", "qdone's run")
    add(
        Row(
            f"enqueue-batch {lines:,} lines to {queues}, {where}: lines/s",
            f"{lines / m['qdone']:,.0f} lines/s ({m['qdone']:.2f} s; "
            f"{in_flight} batches in flight)",
            f"one batch in flight: {lines / m['sequential']:,.0f} lines/s "
            f"({m['sequential']:.2f} s)",
            f"{m['ratio']:.2f}x; {note}: ≤ {lines / m['qdone_cpu']:,.0f} lines/s, "
            f"ratio ≤ {m['bound']:.2f}x",
            "≥ 2x (half the time)" if where == "moto" else "",
            results,
        )
    )
    if where == "moto":
        sends, creates = -(-lines // 10), 2 * n_queues
        add(
            Row(
                f"enqueue-batch {lines:,} lines to {queues}: SQS calls",
                f"{m['calls']:.0f} ({detail})",
                f"{sends + creates}: {sends} SendMessageBatch (1 per 10 lines), "
                f"{creates} CreateQueue (a queue and its failed queue per new queue)",
                f"{m['calls'] / (sends + creates):.2f}x",
                f"≤ {sends + creates + n_queues} (one GetQueueUrl per queue more)",
                results,
            )
        )


def sqlite_batch(n: int, rounds: int) -> None:
    """enqueue-batch into SQLite (lines already parsed) against the floor: one
    executemany of the same rows into the same table."""
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            figures = {}
            for label in in_turn(r, ("qdone", "bare")):
                if label == "bare":
                    figures["bare"] = _bare_sqlite(Path(tmp) / f"bare{r}.db", n)
                    continue
                broker = SqliteBroker(Path(tmp) / f"q{r}.db")
                lines = jobs(["load"], n)
                _, figures["qdone"] = timed(
                    partial(enqueue_batch, broker, Options(), QueueOptions(), lines)
                )
                broker.close()
            figures["ratio"] = figures["bare"] / figures["qdone"]
            results.append(figures)
    m = medians(results)
    add(
        Row(
            f"enqueue-batch {n:,} lines to SQLite (lines already parsed; {n // 10:,} batches "
            f"in {-(-n // 5000):,} transactions): lines/s",
            f"{n / m['qdone']:,.0f} lines/s ({m['qdone']:.2f} s)",
            f"one executemany, one transaction: {n / m['bare']:,.0f} lines/s ({m['bare']:.2f} s)",
            f"{m['ratio']:.2f}x",
            "≥ 0.33x" if n == 100_000 else "",
            results,
        )
    )


def _bare_sqlite(path: Path, n: int) -> float:
    """The floor: one executemany of the same rows, into qdone's own schema, in one
    transaction."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("pragma journal_mode = wal")
    for statement in SCHEMA.values():
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


def main(args: argparse.Namespace) -> None:
    lines = 200 if args.quick else 1000
    with moto_server() as moto:
        sqs_enqueue(moto, args.rounds)
        sqs_batch(moto, moto.url, lines, 1, "moto", args.rounds)
        sqs_batch(moto, moto.url, lines, 10, "moto", args.rounds)
        # moto serves one call at a time, so on it batches in flight at once cannot
        # overlap; through a real network round trip they can.
        where = f"moto + {RTT * 1000:.0f} ms round trip"
        with latency_proxy(moto.url, RTT) as remote:
            sqs_batch(moto, remote, lines, 1, where, args.rounds)
            sqs_batch(moto, remote, lines, 10, where, args.rounds)
    for n in (10_000,) if args.quick else (10_000, 100_000):
        sqlite_batch(n, args.rounds)
    emit(ROWS, args, "bench_enqueue.py")


if __name__ == "__main__":
    main(bench_args(__doc__))
