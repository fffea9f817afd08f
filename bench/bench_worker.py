"""Worker benchmark: API calls per job, throughput, wildcard fan-in, memory.

Run:  python bench/bench_worker.py [--quick]   (starts its own moto server on loopback)

Prints figures; asserts nothing. Every measured run is the installed ``qdone``
CLI in a subprocess. Targets (issue 3): <= 0.35 SQS calls per job and >= 5x
the jobs/s of --concurrency 1 at --concurrency 10; no queue waiting for
another's long poll; SQLite >= 70% of xargs -P2; flat peak RSS < 100 MB.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _util import moto_server

QDONE = shutil.which("qdone") or "qdone"
QUICK = "--quick" in sys.argv


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


def job_span(out: str) -> float:
    """Seconds from the first event to the last job's end, from the JSON lines."""
    stamps = [
        datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).timestamp()
        for e in map(json.loads, out.splitlines())
        if e["event"] in ("LISTENING", "JOB_SUCCEEDED", "JOB_FAILED")
    ]
    return max(stamps) - min(stamps) if stamps else 0.0


def drain(env: dict[str, str], *args: str) -> tuple[str, str, float]:
    return run([QDONE, "worker", "-v", "--drain", *args], env)


def bench_sqs_concurrency(env: dict[str, str], n: int) -> None:
    print(f"\n## SQS (moto): drain {n} `true` jobs from one queue")
    rates = {}
    for conc in (1, 10):
        queue = f"c{conc}_{uuid.uuid4().hex[:6]}"
        enqueue_batch(env, [f"{queue} true"] * n)
        out, err, wall = drain(env, "-w", "1", "--concurrency", str(conc), queue)
        calls, detail = worker_calls(err)
        span = job_span(out)
        rates[conc] = n / span
        print(
            f"--concurrency {conc:>2}: {wall:5.2f} s wall, jobs span {span:5.2f} s "
            f"= {n / span:6.1f} jobs/s; worker SQS calls {calls} = {calls / n:.3f}/job "
            f"(+ {n // 10} sends = {(calls + n // 10) / n:.3f}/job) [{detail}]"
        )
    print(f"jobs/s ratio --concurrency 10 / 1: {rates[10] / rates[1]:.1f}x (target >= 5x)")


def bench_wildcard(env: dict[str, str], queues: int, per: int) -> None:
    print(f"\n## SQS (moto): {queues} queues x {per} jobs through a wildcard")
    stem = f"w{uuid.uuid4().hex[:6]}"
    enqueue_batch(env, [f"{stem}{q} true" for q in range(queues) for _ in range(per)])
    for wait in (20, 2):
        if wait == 2:  # refill for the second run
            enqueue_batch(env, [f"{stem}{q} true" for q in range(queues) for _ in range(per)])
        out, err, wall = drain(env, "-w", str(wait), "--concurrency", "10", f"{stem}*")
        calls, _ = worker_calls(err)
        print(
            f"-w {wait:>2}: {wall:5.2f} s wall (jobs span {job_span(out):5.2f} s, the rest is "
            f"the last long polls); {calls} SQS calls (Node qdone 1.7.1: 14.8 s)"
        )


def bench_sqlite(tmp: Path, n: int) -> None:
    print(f"\n## SQLite: drain {n} `true` jobs, --concurrency 2, vs xargs -P2")
    env = {**os.environ, "QDONE_BROKER": f"sqlite:///{tmp / f'rate{n}.db'}"}
    enqueue_batch(env, ["rate true"] * n)
    wall, _ = run_rss([QDONE, "worker", "--drain", "-w", "0", "--concurrency", "2", "rate"], env)
    start = time.perf_counter()
    subprocess.run(["xargs", "-P2", "-n1", "sh", "-c"], input=("true\n" * n).encode(), check=True)
    xargs = time.perf_counter() - start
    print(
        f"qdone worker: {wall:6.2f} s = {n / wall:7.1f} jobs/s; xargs -P2: {xargs:6.2f} s = "
        f"{n / xargs:7.1f} jobs/s; ratio {xargs / wall:.0%} (target >= 70%)"
    )


def bench_rss(tmp: Path, sizes: tuple[int, ...]) -> None:
    print("\n## Peak RSS of the worker process (SQLite, --concurrency 2)")
    for n in sizes:
        env = {**os.environ, "QDONE_BROKER": f"sqlite:///{tmp / f'rss{n}.db'}"}
        enqueue_batch(env, ["rss true"] * n)
        wall, rss = run_rss(
            [QDONE, "worker", "--drain", "-w", "0", "--concurrency", "2", "rss"], env
        )
        print(f"{n:>6} jobs: peak RSS {rss / 1024:6.1f} MB ({wall:.1f} s) (target flat, < 100 MB)")


def main() -> None:
    print("rerun: python bench/bench_worker.py" + (" --quick" if QUICK else ""))
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, qdone at {QDONE}")
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        with moto_server() as endpoint:
            env = {
                **os.environ,
                "QDONE_BROKER": "sqs",
                "QDONE_ENDPOINT_URL": endpoint,
                "AWS_ACCESS_KEY_ID": "bench",
                "AWS_SECRET_ACCESS_KEY": "bench",
                "AWS_DEFAULT_REGION": "us-east-1",
            }
            bench_sqs_concurrency(env, 200)
            bench_wildcard(env, 10, 20)
        bench_sqlite(tmp, 2_000 if QUICK else 10_000)
        bench_rss(tmp, (1_000, 2_000) if QUICK else (1_000, 10_000))


if __name__ == "__main__":
    main()
