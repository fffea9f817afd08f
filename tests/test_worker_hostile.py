"""The worker against hostile conditions (issue 16): output that cannot be written
(``--archive``), jobs it cannot start, a second signal with jobs running."""

from __future__ import annotations

import errno
import itertools
import os
import resource
import signal
import subprocess
import time
from pathlib import Path

import pytest

from qdone.broker.base import COUNT_NAMES, Broker, SendEntry
from qdone.broker.sqlite import SqliteBroker
from qdone.config import Options, QueueOptions
from qdone.job import Job
from qdone.queues import ensure_queue
from qdone.worker import Worker
from qdone.worker.events import JobNotStarted, JobSucceeded, WorkerSettings
from qdone.worker.handler import Job as HandlerJob

from .test_worker_cli import enqueue, events, queue_counts, start, wait_for


@pytest.fixture
def env(sqlite_url: str) -> dict[str, str]:
    return {**os.environ, "QDONE_BROKER": sqlite_url}


def test_second_signal_summary_comes_after_the_killed_jobs_and_counts_them(
    env: dict[str, str], tmp_path: Path
) -> None:
    for n in range(2):
        enqueue(env, "q", f"touch {tmp_path}/started-{n}; sleep 60")
    proc = start(env, "q", "-c", "2")
    wait_for(lambda: len(list(tmp_path.glob("started-*"))) == 2)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    lines = events(out)
    names = [e["event"] for e in lines]
    assert names.count("JOB_INTERRUPTED") == 2 and "JOB_FAILED" not in names, names
    assert names[-1] == "WORKER_SUMMARY", names
    summary = lines[-1]
    assert summary["interrupted"] == 2 and summary["failed"] == 0, summary
    assert summary["killed"] is True, summary


def test_archive_to_a_closed_stdout_deletes_nothing(env: dict[str, str]) -> None:
    for n in range(5):
        enqueue(env, "q", f"echo {n}")
    result = subprocess.run(
        ["qdone", "worker", "q", "--archive", "--drain"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
        check=False,
        preexec_fn=lambda: os.close(1),
    )
    assert "Traceback" not in result.stderr
    assert result.returncode != 0, result.stderr
    assert sum(queue_counts(env, "qdone_q")) == 5
    assert sum(queue_counts(env, "qdone_q_failed")) == 0


def _env_for(broker: Broker, prefix: str, request: pytest.FixtureRequest) -> dict[str, str]:
    """The environment that points ``qdone`` at ``broker``, with queues under ``prefix``."""
    env = {**os.environ, "QDONE_PREFIX": prefix}
    if isinstance(broker, SqliteBroker):
        return {**env, "QDONE_BROKER": f"sqlite://{broker.path}"}
    endpoint = request.getfixturevalue("moto_endpoint")
    return {**env, "QDONE_BROKER": "sqs", "QDONE_ENDPOINT_URL": endpoint}


def _held(broker: Broker, name: str) -> int:
    """Messages in queue ``name``: visible, in flight or delayed."""
    counts = broker.get_queue_attributes(broker.get_queue_url(name))
    return sum(int(counts[k]) for k in COUNT_NAMES)


def test_archive_to_a_full_device_deletes_nothing(
    broker: Broker, prefix: str, request: pytest.FixtureRequest
) -> None:
    env = _env_for(broker, prefix, request)
    for n in range(5):
        enqueue(env, "q", f"echo {n}")
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            ["qdone", "worker", "q", "--archive", "--drain"],
            env=env,
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    assert "Traceback" not in result.stderr
    assert result.returncode == 1, result.stderr
    assert "No space left on device" in result.stderr
    # Nothing deleted. The one command that could not be written was received, so
    # with no attempt left it moves to the failed queue, body intact.
    main, failed = _held(broker, f"{prefix}q"), _held(broker, f"{prefix}q_failed")
    assert (main, failed) in ((5, 0), (4, 1)), (main, failed)


def test_a_job_that_cannot_start_goes_back_without_using_an_attempt(
    broker: Broker, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Out of open files at one start: not the job's fault. The message comes back
    as a fresh copy (no attempt used), the worker runs fewer jobs at once, says so
    once, and every job runs; none reaches the failed queue."""
    options = Options(prefix=prefix)
    url = ensure_queue(broker, options, QueueOptions(), "q").url
    for n in range(3):
        broker.send(url, SendEntry("0", f"sleep 0.3; echo {n}"))
    starts = itertools.count(1)
    real_start = Job.start

    def start(job: Job) -> None:
        if next(starts) == 2:
            raise OSError(errno.EMFILE, "Too many open files")
        real_start(job)

    monkeypatch.setattr(Job, "start", start)
    seen: list[object] = []
    settings = WorkerSettings(queues=("q",), concurrency=3, drain=True)
    summary = Worker(broker, options, settings, on_event=seen.append).run()
    not_started = [e for e in seen if isinstance(e, JobNotStarted)]
    assert len(not_started) == 1 and not_started[0].sent_back_as is not None
    assert 1 <= not_started[0].concurrency < 3
    assert (summary.succeeded, summary.failed) == (3, 0)
    assert _held(broker, f"{prefix}q_failed") == 0
    attempts = [e.attempt for e in seen if isinstance(e, JobSucceeded)]
    assert attempts == [1, 1, 1]  # the copy ran as a first attempt


def test_worker_under_a_low_open_files_limit_runs_every_job(env: dict[str, str]) -> None:
    """``ulimit -n 1024`` (soft and hard) and ``-c 600``: the worker runs at most what
    fits, says so, and every job runs; none lands in the failed queue."""
    lines = "".join(f"q sleep 2; echo {n}\n" for n in range(600))
    batch = subprocess.run(
        ["qdone", "enqueue-batch", "-"], input=lines, env=env, capture_output=True, text=True
    )
    assert batch.returncode == 0, batch.stderr

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))

    result = subprocess.run(
        ["qdone", "worker", "q", "--drain", "-c", "600"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
        preexec_fn=low_limit,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    warnings = [e["message"] for e in events(result.stdout) if e["event"] == "WARNING"]
    assert any("the limit of open files (ulimit -n) is 1024" in w for w in warnings), warnings
    assert "Ran 600 jobs: 600 succeeded, 0 failed" in result.stderr
    assert sum(queue_counts(env, "qdone_q_failed")) == 0


def test_a_success_whose_visibility_lapsed_while_the_worker_stood_still_is_deleted(
    tmp_path: Path,
) -> None:
    """The worker stopped (SIGSTOP) past its messages' visibility timeout, then went
    on: before its next receive it extends what it still holds, so that receive
    does not take the message of a job that succeeded meanwhile and, with no
    attempt left, move it to the failed queue before its delete goes out."""
    now = [1_900_000_000.0]

    def clock() -> float:
        return now[0]

    broker = SqliteBroker(tmp_path / "s.db", clock=clock)
    options = Options()
    url = ensure_queue(broker, options, QueueOptions(), "q").url
    for body in ("first", "second"):
        broker.send(url, SendEntry("0", body))

    def handler(job: HandlerJob) -> None:
        if job.body == "first":
            now[0] += 100  # stood still 100 s: past the 30 s visibility timeout

    settings = WorkerSettings(queues=("q",), concurrency=1, drain=True, kill_after=600)
    summary = Worker(broker, options, settings, clock=clock, handler=handler).run()
    assert (summary.succeeded, summary.failed) == (2, 0)
    for name in ("qdone_q", "qdone_q_failed"):
        counts = broker.get_queue_attributes(broker.get_queue_url(name))
        assert counts["ApproximateNumberOfMessages"] == "0", name
        assert counts["ApproximateNumberOfMessagesNotVisible"] == "0", name
    broker.close()
