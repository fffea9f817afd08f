"""Worker benchmark: API calls per job, throughput, wildcard fan-in, memory.

Run:  python bench/bench_worker.py [--rounds 3] [--quick] [--json]
(starts its own moto server on loopback)

Prints one Markdown table (JSON lines with --json); asserts nothing. Every measured
run is the installed ``qdone`` CLI in a subprocess, and every timed figure is the
median of --rounds runs; each round runs the compared commands back to back (in
turn, the order flipped every other round), and a ratio is the median of the
per-round ratios. The SQS throughput runs go to moto directly and again through
``latency_proxy`` (a 20 ms round trip, as from a machine to SQS in its region).
Moto's own CPU time within the jobs' span is sampled from /proc: moto (without
its per-call scan of every message: ``moto_fast.py``) serves calls one at a time
on one core, so a worker cannot drain it faster than moto's CPU time for those calls.

Targets (issue 3): <= 0.35 SQS calls per job and >= 5x the jobs/s of
--concurrency 1 at --concurrency 10; no queue waiting for another's long poll;
SQLite >= 70% of xargs -P2; flat peak RSS < 100 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _util import (
    Moto,
    Row,
    bench_args,
    cpu_between,
    cpu_samples,
    emit,
    in_turn,
    latency_proxy,
    median,
    medians,
    moto_note,
    moto_server,
    progress,
    qdone_exe,
)

QDONE = qdone_exe()
RTT = 0.02  # seconds: a round trip between a machine and SQS in its region
ROWS: list[Row] = []


def add(row: Row) -> None:
    ROWS.append(row)
    progress(row)


def run(args: list[str], env: dict[str, str], stdin: str | None = None) -> tuple[str, str, float]:
    """Run a command to its end: stdout, stderr, wall seconds."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        args,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = proc.communicate(stdin)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{args[:3]} exited {proc.returncode}: {err[-2000:]}")
    return out, err, wall


def run_rss(args: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one process, via wait4."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{args[:3]} exited {proc.returncode}: {err[-2000:]!r}")
    return time.perf_counter() - start, usage.ru_maxrss


def enqueue_batch(env: dict[str, str], lines: list[str]) -> None:
    run([QDONE, "enqueue-batch", "-"], env, "\n".join(lines) + "\n")


def worker_calls(err: str, service: str = "SQS") -> tuple[int, str]:
    match = re.search(rf"Used (\d+) {service} [^:]*: (.*)", err)
    return (int(match.group(1)), match.group(2)) if match else (0, "?")


def job_span(out: str) -> tuple[float, float]:
    """Epoch seconds of the first event and of the last job's end, from the JSON lines."""
    stamps = [
        datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).timestamp()
        for e in map(json.loads, out.splitlines())
        if e["event"] in ("LISTENING", "JOB_SUCCEEDED", "JOB_FAILED")
    ]
    return (min(stamps), max(stamps)) if stamps else (0.0, 0.0)


def drain(moto: Moto, env: dict[str, str], *args: str) -> tuple[dict[str, float], str]:
    """One ``worker --drain`` run: wall and job-span seconds, moto's CPU seconds within
    the span, SQS calls; and the calls by action."""
    with cpu_samples(moto.pid) as samples:
        out, err, wall = run([QDONE, "worker", "-v", "--drain", *args], env)
    first, last = job_span(out)
    calls, detail = worker_calls(err)
    figures = {
        "wall": wall,
        "span": last - first,
        "cpu": cpu_between(samples, first, last),
        "calls": float(calls),
    }
    return figures, detail


def typical(runs: list[tuple[float, str]]) -> tuple[float, str]:
    """Of (count, detail) pairs, the one whose count is nearest the median count."""
    middle = median([count for count, _ in runs])
    return min(runs, key=lambda run: abs(run[0] - middle))


def bench_sqs_concurrency(moto: Moto, env: dict[str, str], n: int, where: str, rounds: int) -> None:
    """Drain ``n`` jobs from one queue at --concurrency 1 and 10."""
    results: list[dict[str, float]] = []
    details: dict[int, list[tuple[float, str]]] = {1: [], 10: []}
    for r in range(rounds):
        figures = {}
        for conc in in_turn(r, (1, 10)):
            queue = f"c{conc}_{uuid.uuid4().hex[:6]}"
            enqueue_batch(env, [f"{queue} true"] * n)
            got, detail = drain(moto, env, "-w", "1", "--concurrency", str(conc), queue)
            figures.update({f"{key}{conc}": value for key, value in got.items()})
            details[conc].append((got["calls"], detail))
        figures["ratio"] = figures["span1"] / figures["span10"]  # jobs/s over jobs/s
        figures["busy10"] = figures["cpu10"] / figures["span10"]
        figures["bound"] = figures["span1"] / figures["cpu10"]
        results.append(figures)
    m = medians(results)
    note = moto_note(m["cpu10"], m["span10"], m["busy10"], n, "job", "the -c 10 job span")
    add(
        Row(
            f"drain {n} `true` jobs from one queue, {where}: jobs/s, -c 10 vs -c 1",
            f"{n / m['span10']:.1f} jobs/s (jobs span {m['span10']:.2f} s; "
            f"{m['wall10']:.2f} s wall)",
            f"-c 1: {n / m['span1']:.1f} jobs/s (jobs span {m['span1']:.2f} s; "
            f"{m['wall1']:.2f} s wall)",
            f"{m['ratio']:.1f}x; {note}: ≤ {n / m['cpu10']:.0f} jobs/s, ratio ≤ {m['bound']:.1f}x",
            "≥ 5x",
            results,
        )
    )
    sends = n // 10
    for conc in (10, 1):
        calls, detail = typical(details[conc])
        per_job = (calls + sends) / n
        add(
            Row(
                f"SQS calls per job, drain {n} jobs, -c {conc}, {where} "
                "(with enqueue-batch's sends)",
                f"{per_job:.3f}: worker {calls:.0f} ({detail}) + {sends} SendMessageBatch",
                "0.300: 1 SendMessageBatch, 1 ReceiveMessage, 1 DeleteMessageBatch per 10 jobs",
                f"{per_job / 0.3:.2f}x",
                "≤ 0.35" if conc == 10 else "none (-c 1 receives one message per call)",
                results,
            )
        )


def bench_wildcard(moto: Moto, env: dict[str, str], queues: int, per: int, rounds: int) -> None:
    """Drain ``queues`` queues of ``per`` jobs through one wildcard, with a 20 s long
    poll and with a 2 s one: a long poll on an empty queue should hold up no other."""
    results = []
    for r in range(rounds):
        figures = {}
        for wait in in_turn(r, (20, 2)):
            stem = f"w{uuid.uuid4().hex[:6]}"
            enqueue_batch(env, [f"{stem}{q} true" for q in range(queues) for _ in range(per)])
            got, _ = drain(moto, env, "-w", str(wait), "--concurrency", "10", f"{stem}*")
            figures.update({f"{key}{wait}": value for key, value in got.items()})
        figures["ratio"] = figures["wall20"] / figures["wall2"]
        figures["busy20"] = figures["cpu20"] / figures["span20"]
        results.append(figures)
    m = medians(results)
    note = moto_note(
        m["cpu20"], m["span20"], m["busy20"], queues * per, "job", "the -w 20 job span"
    )
    add(
        Row(
            f"drain {queues} queues x {per} `true` jobs through one wildcard, moto, -c 10: "
            "wall time, -w 20 vs -w 2",
            f"{m['wall20']:.2f} s (jobs span {m['span20']:.2f} s; {m['calls20']:.0f} SQS calls)",
            f"-w 2: {m['wall2']:.2f} s (jobs span {m['span2']:.2f} s; {m['calls2']:.0f} SQS calls)",
            f"{m['ratio']:.2f}x; {note}",
            "≈ 1x (no queue waits on another's long poll); "
            "Node qdone 1.7.1: 14.8 s (not measured here)",
            results,
        )
    )


def bench_sqlite(tmp: Path, n: int, small: int, rounds: int) -> None:
    """Drain ``n`` jobs from SQLite at -c 2 against ``xargs -P2`` running the same
    commands; the worker's peak RSS there and on ``small`` jobs."""
    results = []
    for r in range(rounds):
        figures: dict[str, float] = {}
        for label in in_turn(r, ("qdone", "xargs", "small")):
            if label == "xargs":
                start = time.perf_counter()
                subprocess.run(["xargs", "-P2", "-n1", "sh", "-c"], input=b"true\n" * n, check=True)
                figures["xargs"] = time.perf_counter() - start
                continue
            jobs = n if label == "qdone" else small
            env = {**os.environ, "QDONE_BROKER": f"sqlite:///{tmp / f'{label}{r}.db'}"}
            enqueue_batch(env, ["rate true"] * jobs)
            wall, rss = run_rss(
                [QDONE, "worker", "--drain", "-w", "0", "--concurrency", "2", "rate"], env
            )
            figures[label], figures[f"{label}_rss"] = wall, rss / 1024
        figures["ratio"] = figures["xargs"] / figures["qdone"]  # jobs/s over jobs/s
        figures["rss_ratio"] = figures["qdone_rss"] / figures["small_rss"]
        results.append(figures)
    m = medians(results)
    add(
        Row(
            f"drain {n:,} `true` jobs from SQLite, -c 2: jobs/s",
            f"{n / m['qdone']:,.1f} jobs/s ({m['qdone']:.2f} s, process start to exit)",
            f"`xargs -P2 -n1 sh -c`: {n / m['xargs']:,.1f} jobs/s ({m['xargs']:.2f} s)",
            f"{m['ratio']:.0%}",
            "≥ 70%",
            results,
        )
    )
    add(
        Row(
            f"worker peak RSS, SQLite, -c 2: {n:,} jobs vs {small:,}",
            f"{m['qdone_rss']:.1f} MB",
            f"{small:,} jobs: {m['small_rss']:.1f} MB",
            f"{m['rss_ratio']:.2f}x",
            "flat (≈ 1x), < 100 MB",
            results,
        )
    )


def sqs_env(endpoint: str) -> dict[str, str]:
    return {
        **os.environ,
        "QDONE_BROKER": "sqs",
        "QDONE_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def main(args: argparse.Namespace) -> None:
    n = 100 if args.quick else 200
    with tempfile.TemporaryDirectory() as tmpdir:
        with moto_server() as moto:
            bench_sqs_concurrency(moto, sqs_env(moto.url), n, "moto", args.rounds)
            with latency_proxy(moto.url, RTT) as proxied:
                where = f"moto + {RTT * 1000:.0f} ms round trip"
                bench_sqs_concurrency(moto, sqs_env(proxied), n, where, args.rounds)
            bench_wildcard(moto, sqs_env(moto.url), 10, 10 if args.quick else 20, args.rounds)
        bench_sqlite(Path(tmpdir), 2_000 if args.quick else 10_000, 1_000, args.rounds)
    emit(ROWS, args, "bench_worker.py")


if __name__ == "__main__":
    main(bench_args(__doc__))
