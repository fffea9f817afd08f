"""Benchmark: one worker on many queues (issue 12's "Done when").

Starts a moto server on loopback (never AWS) and a redis-server on loopback,
creates QUEUES empty queue pairs matched by one wildcard (``pq*``), then measures:

- the threads of a ``-c 1`` worker (the installed CLI, read from /proc);
- the SQS calls an idle ``-c 1`` worker makes in IDLE seconds, per minute, and
  the time a job enqueued to a random queue takes to start (PROBES probes, the
  worst counted);
- a restarted ``-c 1`` worker: the time from its start to the start of jobs that
  were already waiting, each on a random queue (PROBES of them, the worst counted);
- 500 jobs on 5 busy queues among all the queues against a worker on just those
  5 (``-c 10``): the time from the jobs' enqueue to the last job's end, once the
  5 queues have each just run a job (busy: had work in the last seconds);
- three ``--active-only`` workers sharing Redis against one alone: their
  GetQueueAttributes calls in FLEET seconds;
- with Redis on both sides: the time from a send and its wake-up (as ``qdone
  enqueue --cache-uri`` makes them) to the job's start, and from the start of a
  ``qdone enqueue --cache-uri`` process, PROBES probes each, worst counted;
- Redis killed mid-run: jobs enqueued before and after the kill, all run.

Workers other than the thread count run in this process (``qdone.worker.Worker``,
the code the CLI runs) so that their calls are counted exactly by their broker.

Run:  python bench/bench_queues.py [--queues 500] [--idle 60] [--fleet 40]
      [--probes 3] [--jobs 500] [--only threads,idle,restart,busy,fleet,wake,redis]
      [--quick] [--json]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _util import Moto, Row, emit, free_port, median, moto_server, progress, qdone_exe

from qdone.broker.base import SendEntry
from qdone.broker.sqs import SqsBroker
from qdone.cache import Cache, open_cache
from qdone.config import Options, QueueOptions
from qdone.queues import ensure_queue
from qdone.worker import Worker
from qdone.worker.checks import CachedCounts, CacheWakes
from qdone.worker.events import Event, JobStarted, JobSucceeded, WorkerSettings

QDONE = qdone_exe()
OPTIONS = Options(broker="sqs")
ROWS: list[Row] = []
PARTS = ("threads", "idle", "restart", "busy", "fleet", "wake", "redis")


def add(row: Row) -> None:
    ROWS.append(row)
    progress(row)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--queues", type=int, default=500, help="queue pairs (500)")
    parser.add_argument("--idle", type=float, default=60, help="idle seconds measured (60)")
    parser.add_argument("--fleet", type=float, default=40, help="seconds per fleet run (40)")
    parser.add_argument("--probes", type=int, default=3, help="pickup probes (3)")
    parser.add_argument("--jobs", type=int, default=500, help="jobs on the 5 busy queues (500)")
    parser.add_argument("--quick", action="store_true", help="100 queues, shorter runs")
    parser.add_argument(
        "--only", default=",".join(PARTS), help=f"parts to run, of {','.join(PARTS)} (all)"
    )
    parser.add_argument("--json", action="store_true", help="print rows as JSON lines")
    args = parser.parse_args()
    if args.quick:
        args.queues, args.idle, args.fleet, args.probes, args.jobs = 100, 20, 20, 2, 200
    return args


# -- the servers ---------------------------------------------------------------------


@contextmanager
def redis_server() -> Iterator[tuple[str, Callable[[], None]]]:
    """A redis-server on a free loopback port: its URI and a function that kills it."""
    program = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="bench-redis-")
    proc = subprocess.Popen(
        [program, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", workdir],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def kill() -> None:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)

    try:
        uri = f"redis://127.0.0.1:{port}/0"
        with open_cache(uri) as probe:
            for _ in range(100):
                if probe.client.ping():
                    break
                time.sleep(0.05)
        yield uri, kill
    finally:
        kill()
        shutil.rmtree(workdir, ignore_errors=True)


def make_queues(moto: Moto, n: int) -> list[str]:
    broker = SqsBroker(endpoint_url=moto.url)
    names = [f"pq{i:04}" for i in range(n)]
    for name in names:
        ensure_queue(broker, OPTIONS, QueueOptions(), name)
    return names


# -- in-process workers ----------------------------------------------------------------


class Run:
    """A worker on its own thread, its own broker (its call counts) and its events."""

    def __init__(self, moto: Moto, queues: tuple[str, ...], **kw: Any) -> None:
        self.broker = SqsBroker(endpoint_url=moto.url)
        cache: Cache | None = kw.pop("cache", None)
        self.events: list[tuple[float, Event]] = []
        self.lock = threading.Lock()
        extra: dict[str, Any] = {}
        if cache is not None:
            extra = {"counts": CachedCounts(cache, self.broker), "wakes": CacheWakes(cache)}
        settings = WorkerSettings(queues=queues, **kw)
        self.worker = Worker(self.broker, OPTIONS, settings, on_event=self.record, **extra)
        self.thread = threading.Thread(target=self.worker.run, daemon=True)
        self.thread.start()

    def record(self, event: Event) -> None:
        with self.lock:
            self.events.append((time.monotonic(), event))

    def of(self, kind: type[Any]) -> list[tuple[float, Any]]:
        with self.lock:
            return [(t, e) for t, e in self.events if isinstance(e, kind)]

    def calls(self) -> dict[str, int]:
        return self.broker.calls.by_action("SQS")

    def stop(self) -> None:
        self.worker.stop()
        self.thread.join(60)


def wait(check: Callable[[], bool], limit: float) -> bool:
    end = time.monotonic() + limit
    while not check():
        if time.monotonic() > end:
            return False
        time.sleep(0.02)
    return True


def send(moto: Moto, name: str, body: str, count: int = 1) -> None:
    broker = SqsBroker(endpoint_url=moto.url)
    url = broker.get_queue_url(f"qdone_{name}")
    for i in range(0, count, 10):
        entries = [SendEntry(str(j), body) for j in range(min(10, count - i))]
        broker.send_batch(url, entries)


def started_after(run: Run, marker: str, sent: float, limit: float) -> float:
    """Seconds from ``sent`` to the start of the job ``marker`` (inf: not within)."""
    found: list[float] = []

    def started() -> bool:
        found[:] = [t for t, e in run.of(JobStarted) if e.command == marker]
        return bool(found)

    return (found[0] - sent) if wait(started, limit) else float("inf")


def pickup(run: Run, moto: Moto, names: list[str], rng: random.Random, limit: float) -> float:
    """Seconds from a job's enqueue to its start, on a random queue."""
    name = rng.choice(names)
    marker = f"true probe-{rng.getrandbits(32):08x}"
    sent = time.monotonic()
    send(moto, name, marker)
    return started_after(run, marker, sent, limit)


def per_minute(calls: dict[str, int], seconds: float) -> str:
    total = sum(calls.values())
    detail = ", ".join(f"{k} {v * 60 / seconds:.0f}" for k, v in sorted(calls.items()))
    return f"{total * 60 / seconds:.0f} ({detail})"


def diff(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


# -- the measures --------------------------------------------------------------------


def threads_of_a_worker(moto: Moto, n: int) -> None:
    env = {**os.environ, "QDONE_BROKER": "sqs", "AWS_ENDPOINT_URL_SQS": moto.url}
    proc = subprocess.Popen(
        [QDONE, "worker", "pq*", "-c", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    most = 0
    try:
        for _ in range(50):  # 10 s
            time.sleep(0.2)
            status = Path(f"/proc/{proc.pid}/status").read_text()
            most = max(most, int(status.split("Threads:")[1].split()[0]))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    add(Row(f"threads of `qdone worker 'pq*' -c 1` on {n} queues", str(most), "", "", "<= 13"))


def idle_and_pickup(moto: Moto, names: list[str], args: argparse.Namespace) -> None:
    run = Run(moto, ("pq*",), concurrency=1)
    try:
        time.sleep(args.idle)
        calls = run.calls()
        add(
            Row(
                f"SQS calls a minute of an idle `-c 1` worker on {len(names)} queues "
                f"(first {args.idle:.0f} s from start)",
                per_minute(calls, args.idle),
                "Node qdone 1.7.1: 3 (default), 3,000 (--active-only); this worker before: 556",
                "",
                "<= 700",
            )
        )
        rng = random.Random(12)
        times = [pickup(run, moto, names, rng, 120) for _ in range(args.probes)]
        add(
            Row(
                f"a job on a random one of {len(names)} idle queues starts after "
                f"(worst of {args.probes})",
                f"{max(times):.1f} s ({', '.join(f'{t:.1f}' for t in times)})",
                "before: more than 90 s; Node qdone: up to 500 x 20 s",
                "",
                "<= 60 s",
            )
        )
    finally:
        run.stop()


def waiting_at_start(moto: Moto, names: list[str], probes: int) -> None:
    rng = random.Random(21)
    markers = [f"true waiting-{rng.getrandbits(32):08x}" for _ in range(probes)]
    for marker in markers:
        send(moto, rng.choice(names), marker)
    start = time.monotonic()
    run = Run(moto, ("pq*",), concurrency=1)
    try:
        times = [started_after(run, marker, start, 120) for marker in markers]
    finally:
        run.stop()
    add(
        Row(
            f"a restarted `-c 1` worker on {len(names)} queues starts jobs already waiting, "
            f"each on a random queue, after (worst of {probes})",
            f"{max(times):.1f} s ({', '.join(f'{t:.1f}' for t in sorted(times))})",
            "",
            "",
            "",
        )
    )


def busy_run(moto: Moto, queues: tuple[str, ...], busy: list[str], jobs: int) -> float:
    run = Run(moto, queues, concurrency=10)
    try:
        # The queues become busy: each runs a job (found by a check among many),
        # then all run one more together, so that each had work in the last seconds.
        for rounds in (1, 2):
            for name in busy:
                send(moto, name, "true")
            wait(lambda n=rounds: len(run.of(JobSucceeded)) >= n * len(busy), 120)
        start = time.monotonic()
        for name in busy:
            send(moto, name, "true", jobs // len(busy))
        wait(lambda: len(run.of(JobSucceeded)) >= 2 * len(busy) + jobs, 300)
        return run.of(JobSucceeded)[-1][0] - start
    finally:
        run.stop()


def busy_among_many(moto: Moto, names: list[str], jobs: int) -> None:
    busy = names[:5]
    seconds = {
        "alone": busy_run(moto, tuple(busy), busy, jobs),
        "among": busy_run(moto, ("pq*",), busy, jobs),
    }
    ratio = seconds["among"] / seconds["alone"]
    add(
        Row(
            f"{jobs} jobs on 5 busy queues among {len(names)}, `-c 10`, enqueue to last end",
            f"{seconds['among']:.2f} s",
            f"{seconds['alone']:.2f} s (a worker on just the 5)",
            f"{ratio:.2f}x",
            "<= 1.25x",
        )
    )


def fleet_worker(argv: list[str]) -> None:
    """``--fleet-worker MOTO_URL REDIS_URI SECONDS``: one ``--active-only --cache-uri``
    worker in this process for SECONDS; prints its GetQueueAttributes calls."""
    url, uri, seconds = argv[0], argv[1], float(argv[2])
    with open_cache(uri, "fleet:") as cache:
        run = Run(Moto(url, 0), ("pq*",), active_only=True, cache=cache)
        time.sleep(seconds)
        print(run.calls().get("GetQueueAttributes", 0), flush=True)
        run.stop()


def fleet_checks(moto: Moto, uri: str, n: int, seconds: float) -> None:
    """Each worker in a process of its own, as a fleet's are."""
    counts = {}
    for size in (1, 3):
        with open_cache(uri) as cache:
            cache.client.flushdb()  # the three do not start from the one's checks
        procs = [
            subprocess.Popen(
                [sys.executable, __file__, "--fleet-worker", moto.url, uri, str(seconds)],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            for _ in range(size)
        ]
        counts[size] = sum(int(p.communicate(timeout=seconds + 120)[0].split()[-1]) for p in procs)
    ratio = counts[3] / counts[1]
    add(
        Row(
            f"GetQueueAttributes of three `--active-only --cache-uri` workers on {n} queues "
            f"(processes of their own), {seconds:.0f} s",
            f"{counts[3]:,}",
            f"{counts[1]:,} (one such worker alone)",
            f"{ratio:.2f}x",
            "<= 1.3x",
        )
    )


def cache_pickup(moto: Moto, uri: str, names: list[str], probes: int) -> None:
    env = {**os.environ, "QDONE_BROKER": "sqs", "AWS_ENDPOINT_URL_SQS": moto.url}
    with open_cache(uri, "qdone:") as cache:
        run = Run(moto, ("pq*",), cache=cache)
        rng = random.Random(5)
        cli, cli_run, sent = [], [], []
        try:
            time.sleep(3)  # listening and subscribed
            for _ in range(probes):
                name, marker = rng.choice(names), f"true wake-{rng.getrandbits(32):08x}"
                start = time.monotonic()
                subprocess.run(
                    [QDONE, "enqueue", "--cache-uri", uri, name, marker], env=env, check=True
                )
                cli_run.append(time.monotonic() - start)
                cli.append(started_after(run, marker, start, 120))
                time.sleep(2)
                # The same as enqueue does it, in this process: send, then PUBLISH.
                marker = f"true wake-{rng.getrandbits(32):08x}"
                start = time.monotonic()
                send(moto, name, marker)
                cache.notify([f"qdone_{name}"])
                sent.append(started_after(run, marker, start, 120))
                time.sleep(2)
        finally:
            run.stop()
    add(
        Row(
            f"with --cache-uri on both sides, a job sent (SendMessage, then PUBLISH, as "
            f"enqueue does) to one of {len(names)} idle queues starts after (worst of {probes})",
            f"{max(sent):.2f} s ({', '.join(f'{t:.2f}' for t in sent)})",
            "",
            "",
            "<= 2 s",
        )
    )
    add(
        Row(
            f"the same from the start of a `qdone enqueue --cache-uri` process (worst of {probes})",
            f"{max(cli):.2f} s ({', '.join(f'{t:.2f}' for t in cli)})",
            f"the enqueue process alone ran {median(cli_run):.2f} s (median)",
            "",
            "<= 2 s",
        )
    )


def redis_killed(moto: Moto, uri: str, kill: Callable[[], None], names: list[str]) -> None:
    rng = random.Random(9)
    with open_cache(uri, "k:", timeout=0.5) as cache:
        run = Run(moto, ("pq*",), concurrency=4, cache=cache)
        try:
            time.sleep(2)
            chosen = rng.sample(names, 10)
            for name in chosen:
                send(moto, name, "true", 5)
            cache.notify([f"qdone_{n}" for n in chosen])  # as enqueue would
            wait(lambda: len(run.of(JobSucceeded)) >= 25, 120)
            kill()
            for name in rng.sample(names, 10):
                send(moto, name, "true", 5)
            done = wait(lambda: len(run.of(JobSucceeded)) >= 100, 240)
            ran = len(run.of(JobSucceeded))
        finally:
            run.stop()
    add(
        Row(
            "Redis killed mid-run (after 25 of 50 jobs; 50 more sent after): jobs run",
            f"{ran} of 100",
            "",
            "",
            "100 of 100" + ("" if done else " (not all within 240 s)"),
        )
    )


def main() -> None:
    if sys.argv[1:2] == ["--fleet-worker"]:
        fleet_worker(sys.argv[2:])
        return
    args = parse()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    with moto_server() as moto, redis_server() as (uri, kill):
        names = make_queues(moto, args.queues)
        parts = args.only.split(",")
        if "threads" in parts:
            threads_of_a_worker(moto, args.queues)
        if "idle" in parts:
            idle_and_pickup(moto, names, args)
        if "restart" in parts:
            waiting_at_start(moto, names, args.probes)
        if "busy" in parts:
            busy_among_many(moto, names, args.jobs)
        if "fleet" in parts:
            fleet_checks(moto, uri, args.queues, args.fleet)
        if "wake" in parts:
            cache_pickup(moto, uri, names, args.probes)
        if "redis" in parts:
            redis_killed(moto, uri, kill, names)
    emit(ROWS, args, "bench_queues.py")


if __name__ == "__main__":
    main()
