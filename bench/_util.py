"""Shared by the benchmarks: a moto server in its own process on loopback, its CPU
time, timing, rounds, and the rows of the one table that ``report.py`` writes."""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, astuple, dataclass, field
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

ROUNDS = 3  # runs per timed figure unless --rounds says otherwise


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process (all its threads) has used so far,
    from ``/proc/<pid>/stat``."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()  # after "comm", which may hold spaces
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of stat(5)
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Moto:
    """A running moto server: its URL and process id."""

    url: str
    pid: int

    def cpu(self) -> float:
        """CPU seconds the server has used since it started."""
        return cpu_seconds(self.pid)


@contextmanager
def moto_server() -> Iterator[Moto]:
    """Start moto's server on a free loopback port, without its per-call scan of
    every message (``moto_fast.py``); yield its URL and pid."""
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("moto_fast.py")),
            "-H",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(url + "/moto-api/", timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield Moto(url, proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextmanager
def cpu_samples(pid: int, every: float = 0.02) -> Iterator[list[tuple[float, float]]]:
    """Sample a process's CPU seconds every ``every`` seconds in a thread while the
    block runs: yields the list of ``(time.time(), cpu seconds)`` being filled."""
    samples: list[tuple[float, float]] = []
    stop = threading.Event()

    def sample() -> None:
        while True:
            samples.append((time.time(), cpu_seconds(pid)))
            if stop.wait(every):
                samples.append((time.time(), cpu_seconds(pid)))
                return

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join()


def cpu_between(samples: list[tuple[float, float]], start: float, end: float) -> float:
    """CPU seconds used from ``start`` to ``end`` (``time.time()`` values), by linear
    interpolation between the samples around each."""

    def at(when: float) -> float:
        i = bisect.bisect_left(samples, (when, -1.0))
        if i == 0:
            return samples[0][1]
        if i == len(samples):
            return samples[-1][1]
        (t0, c0), (t1, c1) = samples[i - 1], samples[i]
        return c0 + (c1 - c0) * (when - t0) / (t1 - t0) if t1 > t0 else c1

    return at(end) - at(start)


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def in_turn(round_no: int, runs: Sequence[T]) -> list[T]:
    """``runs`` in order on even rounds and reversed on odd ones, so that a drift in
    the machine's load over a round falls on each of the compared runs alike."""
    return list(runs) if round_no % 2 == 0 else list(reversed(runs))


def medians(rounds: list[dict[str, float]]) -> dict[str, float]:
    """Per key, the median over the rounds."""
    return {key: median([r[key] for r in rounds]) for key in rounds[0]}


def qdone_exe() -> str:
    """The ``qdone`` script of this Python (not a version manager's shim in front of
    it, which would add its own start-up to every timing), else the one on PATH."""
    beside = Path(sys.executable).with_name("qdone")
    return str(beside) if beside.exists() else shutil.which("qdone") or "qdone"


def moto_note(cpu: float, seconds: float, busy: float, count: int, unit: str, run: str) -> str:
    """Moto's CPU time during a run, e.g. ``moto CPU 2.18 s in the -c 10 job span of
    2.40 s (91%) = 10.9 ms/job``: a moto on one core cannot serve the same calls in
    less time, whatever the client's concurrency."""
    return (
        f"moto CPU {cpu:.2f} s in {run} of {seconds:.2f} s ({busy:.0%}) "
        f"= {cpu / count * 1000:.1f} ms/{unit}"
    )


@dataclass(frozen=True)
class Row:
    """One figure of the table: what was measured, qdone's figure, the limit or the
    baseline it is set against, their ratio and the target. ``rounds`` keeps the
    per-round values behind the medians (JSON only)."""

    what: str
    qdone: str
    baseline: str = ""
    ratio: str = ""
    target: str = ""
    rounds: list[dict[str, float]] = field(default_factory=list)

    def cells(self) -> tuple[str, ...]:
        return tuple(str(c).replace("|", "\\|") for c in astuple(self)[:5])


def table(rows: Sequence[Row], rounds: int | None) -> list[str]:
    """The rows as one Markdown table; ``rounds`` is None where nothing is timed."""
    head = (
        ("what", "qdone", "limit / baseline", "ratio", "target")
        if rounds is None
        else (
            "what",
            f"qdone (median of {rounds})",
            "limit / baseline (same rounds)",
            "ratio (median of per-round ratios)",
            "target",
        )
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return lines + ["| " + " | ".join(row.cells()) + " |" for row in rows]


def bench_args(doc: str | None) -> argparse.Namespace:
    """``--rounds N``, ``--quick`` and ``--json``, shared by the timed benchmarks."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, help=f"runs per figure ({ROUNDS}; 1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="fewer jobs and rounds")
    parser.add_argument("--json", action="store_true", help="print rows as JSON lines")
    args = parser.parse_args()
    if args.rounds is None:
        args.rounds = 1 if args.quick else ROUNDS
    if args.rounds < 1:
        parser.error("--rounds must be 1 or more")
    return args


def command(script: str) -> str:
    """The command line that reruns this script, without ``--json``."""
    return " ".join(["python", f"bench/{script}", *(a for a in sys.argv[1:] if a != "--json")])


def machine() -> str:
    """Cores, CPU model, Python and OS, for a table's header."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = f" ({line.split(':', 1)[1].strip()})"
                break
    return (
        f"{os.cpu_count()} cores{model}, Python {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}"
    )


def progress(row: Row) -> None:
    """One line on stderr as each figure is done."""
    print(f"  {row.what} | {row.qdone} | {row.baseline} | {row.ratio}", file=sys.stderr, flush=True)


def emit(rows: Sequence[Row], args: argparse.Namespace, script: str) -> None:
    """Print the rows: JSON lines with ``--json`` (for report.py), else a Markdown
    table under the command that made it."""
    if args.json:
        for row in rows:
            print(json.dumps(asdict(row)))
        return
    rounds = getattr(args, "rounds", None)
    runs = f"; {rounds} round(s)" if rounds else ""
    print(f"Made by `{command(script)}`: {machine()}{runs}.\n")
    print("\n".join(table(rows, rounds)))


@contextmanager
def latency_proxy(target: str, delay: float) -> Iterator[str]:
    """A TCP proxy on loopback in front of ``target`` (``http://127.0.0.1:PORT``) that
    holds every chunk ``delay / 2`` seconds each way: a network round trip of about
    ``delay`` per request, as between a machine and SQS. Yields the proxy's URL."""
    host, port = target.rsplit("//", 1)[1].split(":")
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    stop = threading.Event()

    def pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                time.sleep(delay / 2)
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def accept() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection((host, int(port)))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=pump, args=(a, b), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        listener.close()
