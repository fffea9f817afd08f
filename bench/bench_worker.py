"""Worker benchmark: API calls per job, throughput, wildcard fan-in, memory.

Run:  python bench/bench_worker.py [--quick]   (starts its own moto server on loopback)

Prints the figures as one Markdown table; asserts nothing. Every measured run is
the installed ``qdone`` CLI in a subprocess. The SQS throughput runs go to moto
directly and again through ``latency_proxy`` (a 20 ms round trip, as from a
machine to SQS in its region): stock moto spends ~12 ms of CPU per received
message, so direct figures measure moto more than the worker.

Targets (issue 3): <= 0.35 SQS calls per job and >= 5x the jobs/s of
--concurrency 1 at --concurrency 10; no queue waiting for another's long poll;
SQLite >= 70% of xargs -P2; flat peak RSS < 100 MB.
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

from _util import latency_proxy, moto_server

QDONE = shutil.which("qdone") or "qdone"
QUICK = "--quick" in sys.argv
ROWS: list[tuple[str, str, str, str]] = []  # benchmark, run, figures, target


def row(bench: str, run: str, figures: str, target: str = "") -> None:
    ROWS.append((bench, run, figures, target))
    print(f"{bench} | {run} | {figures}", file=sys.stderr, flush=True)  # progress


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


def bench_sqs_concurrency(env: dict[str, str], n: int, where: str) -> None:
    bench = f"SQS ({where}): drain {n} `true` jobs, one queue"
    rates = {}
    for conc in (1, 10):
        queue = f"c{conc}_{uuid.uuid4().hex[:6]}"
        enqueue_batch(env, [f"{queue} true"] * n)
        out, err, wall = drain(env, "-w", "1", "--concurrency", str(conc), queue)
        calls, detail = worker_calls(err)
        span = job_span(out)
        rates[conc] = n / span
        row(
            bench,
            f"--concurrency {conc}",
            f"{wall:.2f} s wall, jobs span {span:.2f} s = {n / span:.1f} jobs/s; "
            f"worker SQS calls {calls} = {calls / n:.3f}/job, with the {n // 10} sends "
            f"{(calls + n // 10) / n:.3f}/job [{detail}]",
            "<= 0.35 calls/job" if conc == 10 else "",
        )
    row(bench, "jobs/s ratio c10 / c1", f"{rates[10] / rates[1]:.1f}x", ">= 5x")


def bench_wildcard(env: dict[str, str], queues: int, per: int) -> None:
    bench = f"SQS (moto): {queues} queues x {per} jobs, wildcard, --drain -c 10"
    stem = f"w{uuid.uuid4().hex[:6]}"
    for wait in (20, 2):
        enqueue_batch(env, [f"{stem}{q} true" for q in range(queues) for _ in range(per)])
        out, err, wall = drain(env, "-w", str(wait), "--concurrency", "10", f"{stem}*")
        calls, _ = worker_calls(err)
        span = job_span(out)
        row(
            bench,
            f"-w {wait}",
            f"{wall:.2f} s wall; jobs span {span:.2f} s; exit {wall - span:.2f} s after "
            f"(process start and drain end); {calls} SQS calls",
            "Node qdone 1.7.1: 14.8 s",
        )


def bench_sqlite(tmp: Path, n: int) -> None:
    env = {**os.environ, "QDONE_BROKER": f"sqlite:///{tmp / f'rate{n}.db'}"}
    enqueue_batch(env, ["rate true"] * n)
    wall, _ = run_rss([QDONE, "worker", "--drain", "-w", "0", "--concurrency", "2", "rate"], env)
    start = time.perf_counter()
    subprocess.run(["xargs", "-P2", "-n1", "sh", "-c"], input=("true\n" * n).encode(), check=True)
    xargs = time.perf_counter() - start
    row(
        f"SQLite: drain {n} `true` jobs, -c 2",
        "qdone worker vs xargs -P2 -n1 sh -c",
        f"{n / wall:.1f} jobs/s ({wall:.2f} s) vs {n / xargs:.1f} jobs/s ({xargs:.2f} s) "
        f"= {xargs / wall:.0%}",
        ">= 70%",
    )


def bench_rss(tmp: Path, sizes: tuple[int, ...]) -> None:
    for n in sizes:
        env = {**os.environ, "QDONE_BROKER": f"sqlite:///{tmp / f'rss{n}.db'}"}
        enqueue_batch(env, ["rss true"] * n)
        wall, rss = run_rss(
            [QDONE, "worker", "--drain", "-w", "0", "--concurrency", "2", "rss"], env
        )
        row(
            "Peak RSS of the worker (SQLite, -c 2)",
            f"{n} jobs",
            f"{rss / 1024:.1f} MB ({wall:.1f} s)",
            "flat, < 100 MB",
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


def print_table() -> None:
    print("\n| benchmark | run | figures | target |")
    print("|---|---|---|---|")
    for cells in ROWS:
        print("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")


def main() -> None:
    print("rerun: python bench/bench_worker.py" + (" --quick" if QUICK else ""))
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, qdone at {QDONE}")
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        with moto_server() as endpoint:
            bench_sqs_concurrency(sqs_env(endpoint), 200, "moto")
            with latency_proxy(endpoint, 0.02) as proxied:
                bench_sqs_concurrency(sqs_env(proxied), 200, "moto + 20 ms round trip")
            bench_wildcard(sqs_env(endpoint), 10, 20)
        bench_sqlite(tmp, 2_000 if QUICK else 10_000)
        bench_rss(tmp, (1_000, 2_000) if QUICK else (1_000, 10_000))
    print_table()


if __name__ == "__main__":
    main()
