"""Workers that crash or are stopped: ``python -m qdone worker`` as subprocesses.

Jobs record their runs by appending one line per event to a log (one
``O_APPEND`` write each, so lines from concurrent jobs never mix). A worker
killed with SIGKILL leaves its jobs running in their own sessions; they write
their pid (their process group's id) to a file, and the test kills those groups.

The worker hides a received message for ``min(30, kill-after + 3 + 10)``
seconds, so ``-k 3`` makes a dead worker's messages visible again after 16 s.

Each worker has one slot more than its share of the 20 jobs: a worker listening
to two queues keeps one slot in a long poll of the queue it has emptied, so
``-c 20`` would run 19 of them until a slot frees (by design: a receive reserves
the slots its messages will run in).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qdone.batchfile import BatchLine
from qdone.broker.base import Broker, Receipt
from qdone.broker.sqlite import SqliteBroker
from qdone.broker.sqs import SqsBroker
from qdone.config import Options, QueueOptions
from qdone.enqueue import enqueue_batch
from qdone.queues import ensure_queue

from .processes import gone, wait_for


def visibility(kill_after: int) -> int:
    """How long the worker hides a message it received (see the module docstring)."""
    return min(30, kill_after + 3 + 10)


# -- plumbing ---------------------------------------------------------------------


class Workers:
    """Worker subprocesses (output to files: a full pipe would stall a worker), and
    the process groups of jobs they left behind; all killed at the end of the test."""

    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.tmp_path = tmp_path
        self.env = env
        self.procs: list[subprocess.Popen[bytes]] = []
        self.orphans: set[int] = set()

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        n = len(self.procs)
        with (
            open(self.tmp_path / f"worker{n}.out", "wb") as out,
            open(self.tmp_path / f"worker{n}.err", "wb") as err,
        ):
            proc = subprocess.Popen(
                [sys.executable, "-m", "qdone", "worker", *args],
                env=self.env,
                stdout=out,
                stderr=err,
            )
        self.procs.append(proc)
        return proc

    def output(self, proc: subprocess.Popen[bytes]) -> tuple[str, str]:
        n = self.procs.index(proc)
        out = (self.tmp_path / f"worker{n}.out").read_text()
        return out, (self.tmp_path / f"worker{n}.err").read_text()

    def listening(self, proc: subprocess.Popen[bytes]) -> bool:
        return '"LISTENING"' in self.output(proc)[0]

    def run(self, *args: str, timeout: float = 60) -> tuple[str, str]:
        """Run a worker to its end; its stdout and stderr."""
        proc = self.start(*args)
        proc.wait(timeout)
        out, err = self.output(proc)
        assert proc.returncode == 0, err
        assert "Traceback" not in err
        return out, err

    def kill_orphans(self, pids: Iterator[int]) -> list[int]:
        """SIGKILL these job process groups; those that were gone already."""
        gone = []
        for pid in pids:
            self.orphans.add(pid)
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                gone.append(pid)
        return gone

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        for pid in self.orphans:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


def lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def counts(broker: Broker, name: str) -> tuple[int, int]:
    """(visible, in flight) messages of ``name``, asked of the store directly."""
    a = broker.get_queue_attributes(
        broker.get_queue_url(name),
        ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )
    return int(a["ApproximateNumberOfMessages"]), int(a["ApproximateNumberOfMessagesNotVisible"])


def take_all(broker: Broker, name: str) -> Counter[str]:
    """The bodies of every visible message of ``name``, received and deleted."""
    url = broker.get_queue_url(name)
    bodies: Counter[str] = Counter()
    while batch := broker.receive(url, 10, 60, 0):
        bodies.update(m.body for m in batch)
        broker.delete_batch(url, [Receipt(str(n), m.receipt) for n, m in enumerate(batch)])
    return bodies


def put(
    broker: Broker, options: Options, queue: str, commands: list[str], retries: int = 0
) -> None:
    batch = [BatchLine("jobs", n + 1, queue, c) for n, c in enumerate(commands)]
    outcome = enqueue_batch(broker, options, QueueOptions(retries=retries), batch)
    assert (outcome.sent, outcome.failed) == (len(commands), [])


@pytest.fixture
def sqlite_env(sqlite_url: str) -> dict[str, str]:
    return {**os.environ, "QDONE_BROKER": sqlite_url}


@pytest.fixture
def store(sqlite_url: str) -> Iterator[Broker]:
    broker = SqliteBroker(Path(sqlite_url.removeprefix("sqlite://")))
    yield broker
    broker.close()


@pytest.fixture(params=["sqlite", "sqs"])
def backend(
    request: pytest.FixtureRequest, sqlite_url: str, prefix: str
) -> Iterator[tuple[Broker, Options, dict[str, str]]]:
    """(a broker to inspect the queues, the options, the workers' environment)."""
    if request.param == "sqlite":
        broker: Broker = SqliteBroker(Path(sqlite_url.removeprefix("sqlite://")))
        yield broker, Options(), {**os.environ, "QDONE_BROKER": sqlite_url}
    else:
        endpoint = request.getfixturevalue("moto_endpoint")
        broker = SqsBroker(region="us-east-1", endpoint_url=endpoint)
        env = {
            **os.environ,
            "QDONE_BROKER": "sqs",
            "QDONE_ENDPOINT_URL": endpoint,
            "QDONE_PREFIX": prefix,
        }
        yield broker, Options(prefix=prefix), env
    broker.close()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], Workers]]:
    made: list[Workers] = []

    def make(env: dict[str, str]) -> Workers:
        made.append(Workers(tmp_path, env))
        return made[-1]

    yield make
    for w in made:
        w.cleanup()


# -- SIGKILL ----------------------------------------------------------------------


def stuck_job(log: Path, pids: Path, i: int) -> str:
    """Job ``i``: logs its run (and its worker's pid); on its first receive it
    writes its pid and sleeps until killed, on a later one it succeeds."""
    return (
        f'echo "$QDONE_JOB_ID $QDONE_RECEIVE_COUNT {i} $PPID" >> {log}; '
        '[ "$QDONE_RECEIVE_COUNT" -gt 1 ] && exit 0; '
        f"echo $$ > {pids}/$QDONE_JOB_ID; exec sleep 300"
    )


def survivors(pids: list[int]) -> dict[int, str]:
    """What each live pid of ``pids`` is: its /proc stat line (state, parent, group)
    and command line."""
    found = {}
    for pid in pids:
        if not gone(pid):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text().strip()
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError as exc:
                stat, cmd = str(exc), b""
            found[pid] = f"{stat} | {cmd.decode(errors='replace')}"
    return found


def crash_and_recover(
    broker: Broker,
    options: Options,
    workers: Workers,
    tmp_path: Path,
    worker_args: list[list[str]],
    kill_after: int = 3,
) -> None:
    """20 stuck jobs, 10 on ``crash`` (no retries) and 10 on ``crashr`` (``retries
    1``), taken by the workers started with ``worker_args``; SIGKILL them all mid-job;
    once the messages are visible again, a draining worker finishes the work."""
    log, pids = tmp_path / "runs.log", tmp_path / "pids"
    pids.mkdir()
    commands = {
        q: [stuck_job(log, pids, i) for i in range(k, k + 10)]
        for q, k in (("crash", 0), ("crashr", 10))
    }
    ensure_queue(broker, options, QueueOptions(), "crash")
    ensure_queue(broker, options, QueueOptions(retries=1), "crashr")
    procs = [
        workers.start("-k", str(kill_after), "-w", "1", *args, "crash", "crashr")
        for args in worker_args
    ]
    # Enqueued once every worker listens, so that all jobs start within a moment.
    wait_for(lambda: all(workers.listening(p) for p in procs), 20, "the workers to listen")
    put(broker, options, "crash", commands["crash"])
    put(broker, options, "crashr", commands["crashr"], retries=1)
    wait_for(lambda: len(list(pids.iterdir())) == 20, 15, "20 jobs to start")
    wait_for(lambda: all(p.read_text().strip() for p in pids.iterdir()), 5, "their pids")
    for proc in procs:
        proc.send_signal(signal.SIGKILL)
    for proc in procs:
        proc.wait(10)
    # Every job dies with its worker (the worker's keeper kills their groups).
    jobs = [int(p.read_text()) for p in pids.iterdir()]
    try:
        wait_for(lambda: all(gone(pid) for pid in jobs), 15, "the jobs to die with the workers")
    except AssertionError as exc:  # say which survived, and what they are
        raise AssertionError(f"{exc}: {survivors(jobs)}") from None
    workers.kill_orphans(iter(jobs))  # in case they did not
    names = [f"{options.prefix}crash", f"{options.prefix}crashr"]
    assert [counts(broker, n) for n in names] == [(0, 10), (0, 10)]
    killed_at = time.monotonic()

    wait_for(
        lambda: [counts(broker, n) for n in names] == [(10, 0), (10, 0)],
        visibility(kill_after) + 10,
        "the messages to be visible again",
    )
    assert time.monotonic() - killed_at > visibility(kill_after) - 4  # hidden until then
    wait = "0" if broker.service == "SQLite" else "1"
    _out, err = workers.run("-k", str(kill_after), "--drain", "-w", wait, "crash", "crashr")

    runs = Counter((job, int(attempt), int(i)) for job, attempt, i, _ in lines(log))
    assert {int(ppid) for _, _, _, ppid in lines(log)} >= {p.pid for p in procs}
    assert all(n == 1 for n in runs.values())
    first = {i for _, attempt, i in runs if attempt == 1}
    second = {i for _, attempt, i in runs if attempt == 2}
    assert (first, second) == (set(range(20)), set(range(10, 20)))  # crashr re-ran
    assert take_all(broker, f"{options.prefix}crash_failed") == Counter(commands["crash"])
    assert take_all(broker, f"{options.prefix}crashr_failed") == Counter()
    for name in names:
        assert counts(broker, name) == (0, 0)
    assert "Ran 10 jobs: 10 succeeded, 0 failed" in err


@pytest.mark.slow
def test_sigkill_a_worker_mid_jobs_loses_nothing(
    backend: tuple[Broker, Options, dict[str, str]],
    workers: Callable[[dict[str, str]], Workers],
    tmp_path: Path,
) -> None:
    broker, options, env = backend
    crash_and_recover(broker, options, workers(env), tmp_path, [["-c", "21"]])


@pytest.mark.slow
def test_sigkill_four_workers_sharing_a_store_loses_nothing(
    store: Broker,
    sqlite_env: dict[str, str],
    workers: Callable[[dict[str, str]], Workers],
    tmp_path: Path,
) -> None:
    """Four workers, each with a job on the store when all are killed."""
    crash_and_recover(store, Options(), workers(sqlite_env), tmp_path, [["-c", "6"]] * 4)


# -- SIGTERM ----------------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_mid_drain_finishes_running_jobs_and_loses_nothing(
    store: Broker,
    sqlite_env: dict[str, str],
    workers: Callable[[dict[str, str]], Workers],
    tmp_path: Path,
) -> None:
    log = tmp_path / "runs.log"
    commands = [f"echo S {i} >> {log}; sleep 0.05; echo E {i} >> {log}" for i in range(500)]
    put(store, Options(), "term", commands)
    w = workers(sqlite_env)
    proc = w.start("--drain", "-w", "0", "-c", "4", "term")

    def running_now() -> set[str]:
        seen = lines(log)
        return {i for kind, i in seen if kind == "S"} - {i for kind, i in seen if kind == "E"}

    # Signal once 100 jobs ran and some job is running (between two jobs none is).
    wait_for(lambda: len(lines(log)) >= 200 and bool(running_now()), 30, "100 jobs to run")
    running = running_now()
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    out, err = w.output(proc)
    assert proc.returncode == 0, err
    assert running, "no job was running at the signal"

    events = Counter((kind, int(i)) for kind, i in lines(log))
    started = {i for kind, i in events if kind == "S"}
    ended = {i for kind, i in events if kind == "E"}
    assert all(n == 1 for n in events.values())  # none ran twice
    assert started == ended and {int(i) for i in running} <= ended  # running jobs finished
    assert 100 <= len(ended) < 500
    assert counts(store, "qdone_term_failed") == (0, 0)
    # The rest wait in the main queue, visible: the ones that ran were deleted.
    assert counts(store, "qdone_term") == (500 - len(ended), 0)
    left = take_all(store, "qdone_term")
    assert left == Counter(commands[i] for i in range(500) if i not in ended)
    summary = [json.loads(x) for x in out.splitlines() if '"WORKER_SUMMARY"' in x]
    assert summary and summary[0]["succeeded"] == len(ended)


# -- four workers, one store ------------------------------------------------------

MANY = 5_000


@pytest.mark.slow
def test_four_workers_on_one_store_run_each_job_exactly_once(
    store: Broker,
    sqlite_env: dict[str, str],
    workers: Callable[[dict[str, str]], Workers],
    tmp_path: Path,
) -> None:
    ids = tmp_path / "ids"
    put(store, Options(), "many", [f"echo {i} >> {ids}" for i in range(MANY)])
    w = workers(sqlite_env)
    started = time.monotonic()
    procs = [w.start("--drain", "-w", "0", "-c", "4", "many") for _ in range(4)]
    for proc in procs:
        proc.wait(90)
    print(f"4 workers drained {MANY} jobs in {time.monotonic() - started:.1f} s")
    for proc in procs:
        _out, err = w.output(proc)
        assert proc.returncode == 0, err
        assert "Traceback" not in err
    ran = Counter(int(x) for x in ids.read_text().split())
    assert sorted(ran) == list(range(MANY))
    assert [i for i, n in ran.items() if n > 1] == []
    assert counts(store, "qdone_many") == (0, 0)
    assert counts(store, "qdone_many_failed") == (0, 0)
