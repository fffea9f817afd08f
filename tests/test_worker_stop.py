"""How a worker's jobs end when the worker does (issue 10, items 3 and 4): killed
with SIGKILL (the OOM killer), its jobs die with it; stopped the way a service
manager does it, a job killed by the stop is not a failure, and neither is a job
the worker kills itself at a second signal."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qdone.config import Options
from qdone.worker import Worker
from qdone.worker.events import Event, JobFailed, JobInterrupted, JobStarted, WorkerSettings

from .processes import gone, wait_for
from .sites import QDONE, Site


def pids(path: Path) -> list[int]:
    return [int(x) for x in path.read_text().split()] if path.exists() else []


@pytest.fixture
def marks(tmp_path: Path) -> Iterator[Path]:
    """A directory where jobs write their pids; every group named there is killed
    at the end, whatever the test did."""
    path = tmp_path / "marks"
    path.mkdir()
    yield path
    for file in path.glob("*.pids"):
        for pid in pids(file):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def start_worker(site: Site, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [QDONE, "worker", "-w", site.wait, *args],
        env=site.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def job_writing_pids(marks: Path, name: str, seconds: int = 60) -> str:
    """A job whose shell, and a background and a foreground child of it, write their
    pids to ``marks/name.pids``, then sleep."""
    file = marks / f"{name}.pids"
    return (
        f"echo $$ >> {file}; sleep {seconds} & echo $! >> {file}; "
        f"sh -c 'echo $$ >> {file}; exec sleep {seconds}'; wait"
    )


def test_jobs_die_with_a_worker_killed_by_sigkill(site: Site, marks: Path) -> None:
    site.enqueue("die", job_writing_pids(marks, "a"))
    site.enqueue("die", job_writing_pids(marks, "b"))
    proc = start_worker(site, "-c", "2", "die")
    try:
        wait_for(
            lambda: len(pids(marks / "a.pids")) == len(pids(marks / "b.pids")) == 3, 30, "jobs"
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        every = pids(marks / "a.pids") + pids(marks / "b.pids")
        wait_for(lambda: all(gone(pid) for pid in every), 15, "the jobs to die")
    finally:
        proc.kill()
        proc.communicate(timeout=10)


def test_a_worker_that_ends_well_kills_nothing_left_running(site: Site, marks: Path) -> None:
    """A job's background child that outlives it is the job's business: the worker
    ending normally does not kill it."""
    file = marks / "bg.pids"
    site.enqueue("bg", f"sleep 30 >/dev/null 2>&1 & echo $! >> {file}")
    result = site.qdone("worker", "--drain", "-w", site.wait, "bg")
    assert result.returncode == 0, result.stderr
    [pid] = pids(file)
    time.sleep(1)
    assert not gone(pid)


def events(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def stop_like_a_service(proc: subprocess.Popen[str], groups: list[int], jobs_first: bool) -> None:
    """SIGTERM to the worker and to its jobs' process groups at once, as systemd's
    default ``KillMode=control-group`` does (in either order)."""
    if not jobs_first:
        proc.send_signal(signal.SIGTERM)
    for group in groups:
        os.killpg(group, signal.SIGTERM)
    if jobs_first:
        proc.send_signal(signal.SIGTERM)


@pytest.mark.parametrize("fifo", [False, True], ids=["standard", "fifo"])
@pytest.mark.parametrize("jobs_first", [False, True], ids=["worker-first", "jobs-first"])
def test_a_job_killed_by_the_service_stop_goes_back_without_using_an_attempt(
    site: Site, marks: Path, fifo: bool, jobs_first: bool
) -> None:
    file = marks / "svc.pids"
    command = f"echo $$ >> {file}; sleep 60; echo finished"
    extra = ("--fifo",) if fifo else ()
    site.enqueue("svc", command, *extra)
    proc = start_worker(site, "-k", "120", *extra, "svc")
    wait_for(lambda: len(pids(file)) == 1, 30, "the job to start")
    stop_like_a_service(proc, pids(file), jobs_first)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    kinds = [e["event"] for e in events(out)]
    assert "JOB_INTERRUPTED" in kinds and "JOB_FAILED" not in kinds, out
    name = "svc.fifo" if fifo else "svc"
    failed = "svc_failed.fifo" if fifo else "svc_failed"
    assert site.counts(failed) == (0, 0)
    # The message is back, as a fresh copy: this receive is its first.
    assert site.take(name) == [(command, 1)]


def test_a_stop_that_signals_only_the_worker_lets_the_job_finish(site: Site, marks: Path) -> None:
    """systemd with ``KillMode=mixed``: SIGTERM to the worker alone; the job ends on
    its own, its message is deleted."""
    file = marks / "mixed.pids"
    site.enqueue("mixed", f"echo $$ >> {file}; sleep 1; echo finished")
    proc = start_worker(site, "mixed")
    wait_for(lambda: len(pids(file)) == 1, 30, "the job to start")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    [done] = [e for e in events(out) if e["event"] == "JOB_SUCCEEDED"]
    assert done["stdout"] == "finished\n"
    assert site.counts("mixed") == (0, 0) and site.counts("mixed_failed") == (0, 0)


def test_a_job_killed_by_a_signal_while_the_worker_runs_on_fails(site: Site) -> None:
    site.enqueue("self", "kill -TERM $$")
    result = site.qdone("worker", "--drain", "-w", site.wait, "self")
    assert result.returncode == 1, result.stderr
    [failed] = [e for e in events(result.stdout) if e["event"] == "JOB_FAILED"]
    assert failed["killSignal"] == "SIGTERM"
    assert site.counts("self_failed") == (1, 0)


@pytest.mark.parametrize("fifo", [False, True], ids=["standard", "fifo"])
def test_a_job_killed_by_a_second_signal_goes_back_without_using_an_attempt(
    site: Site, marks: Path, tmp_path: Path, fifo: bool
) -> None:
    """Two SIGTERMs to the worker alone: it kills its job itself, and the job's
    message goes back as a fresh copy, which a new worker runs once, as its first
    attempt; nothing reaches the failed queue."""
    file, runs, done = marks / "two.pids", marks / "two.runs", marks / "two.done"
    command = (
        f"echo $QDONE_RECEIVE_COUNT >> {runs}; [ -e {done} ] && exit 0; echo $$ >> {file}; sleep 30"
    )
    extra = ("--fifo",) if fifo else ()
    site.enqueue("two", command, *extra)
    out = tmp_path / "worker.out"
    with out.open("w") as sink:
        proc = subprocess.Popen(
            [QDONE, "worker", "-w", site.wait, "-k", "120", *extra, "two"],
            env=site.env,
            stdout=sink,
            stderr=subprocess.PIPE,
            text=True,
        )
    try:
        wait_for(lambda: len(pids(file)) == 1, 30, "the job to start")
        proc.send_signal(signal.SIGTERM)
        wait_for(lambda: "WORKER_WAITING" in out.read_text(), 30, "the first signal's stop")
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 130, err
    lines = events(out.read_text())
    kinds = [e["event"] for e in lines]
    assert "JOB_FAILED" not in kinds, lines
    [back] = [e for e in lines if e["event"] == "JOB_INTERRUPTED"]
    assert back["killed"] is True and back["killSignal"] == "SIGKILL", back
    assert back["sentBackAs"] != back["job"], back
    summary = lines[-1]
    assert summary["event"] == "WORKER_SUMMARY", kinds
    assert (summary["interrupted"], summary["failed"], summary["killed"]) == (1, 0, True)
    name = "two.fifo" if fifo else "two"
    failed = "two_failed.fifo" if fifo else "two_failed"
    assert site.counts(failed) == (0, 0)
    assert site.counts(name) == (1, 0)  # the copy; the received message is deleted
    done.touch()
    again = site.qdone("worker", "--drain", "-w", site.wait, *extra, "two")
    assert again.returncode == 0, again.stderr
    assert runs.read_text().split() == ["1", "1"]  # the copy ran as a first attempt
    assert site.counts(name) == (0, 0) and site.counts(failed) == (0, 0)


def test_the_rest_of_a_fifo_chain_goes_back_too_at_a_second_signal(site: Site, marks: Path) -> None:
    """Two messages of one FIFO group, received together: the second signal kills
    the first's job while the second waits its turn. Both go back as fresh copies,
    in their order, neither using an attempt."""
    first = f"echo $$ >> {marks / 'chain.pids'}; sleep 30"
    site.enqueue_many("chain", [first, "echo second"], "--fifo", "-g", "g")
    seen: list[Event] = []

    def on_event(event: Event) -> None:
        seen.append(event)
        if isinstance(event, JobStarted):
            worker.kill()

    settings = WorkerSettings(queues=("chain",), fifo=True, concurrency=2, kill_after=120)
    worker = Worker(site.broker, Options(prefix=site.prefix), settings, on_event=on_event)
    try:
        assert worker.poll_once(wait_time=int(site.wait)) == 2
    finally:
        worker.close()
    [back] = [e for e in seen if isinstance(e, JobInterrupted)]
    assert back.killed and back.sent_back_as is not None, back
    assert not [e for e in seen if isinstance(e, JobFailed)], seen
    assert site.counts("chain_failed.fifo") == (0, 0)
    assert site.take("chain.fifo") == [(first, 1), ("echo second", 1)]
