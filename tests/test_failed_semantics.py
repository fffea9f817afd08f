"""Failed jobs in the worker, on both brokers: a queue without a redrive policy (a
failed queue) gives one attempt per visibility timeout and lets ``--drain`` end;
after a worker run, a job whose last attempt failed is in the failed queue."""

from __future__ import annotations

import io
import random
import threading
from pathlib import Path
from typing import Any

import pytest

from qdone.broker.base import Broker
from qdone.cli.worker import WorkerView
from qdone.config import Options, QueueOptions
from qdone.enqueue import SendSettings, enqueue
from qdone.job import JobResult
from qdone.log import Output
from qdone.worker import Worker
from qdone.worker.events import (
    Event,
    JobFailed,
    JobRetry,
    JobStarted,
    JobSucceeded,
    Summary,
    WorkerSettings,
)

DRAIN_BOUND = 30.0  # seconds: a drain that runs longer is the endless retry loop


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


def put(broker: Broker, options: Options, queue: str, command: str, **q: Any) -> None:
    group = q.pop("group_id", None)
    enqueue(broker, options, QueueOptions(**q), queue, command, SendSettings(group_id=group))


def drain(broker: Broker, options: Options, *queues: str, **settings: Any) -> Recorder:
    """Drain ``queues`` in a thread; fail if the worker has not ended within the bound."""
    settings.setdefault("wait_time", 0 if broker.service == "SQLite" else 1)
    rec = Recorder()
    worker = Worker(
        broker,
        options,
        WorkerSettings(queues=queues, drain=True, **settings),
        on_event=rec,
        rng=random.Random(3),
    )
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    thread.join(DRAIN_BOUND)
    if thread.is_alive():
        worker.kill()
        thread.join(10)
        pytest.fail(f"the drain did not end within {DRAIN_BOUND:g} s: {rec.events}")
    return rec


def counts(broker: Broker, name: str) -> tuple[int, int]:
    """(visible, in flight) of queue ``name``, read without receiving."""
    a = broker.get_queue_attributes(
        broker.get_queue_url(name),
        ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )
    return int(a["ApproximateNumberOfMessages"]), int(a["ApproximateNumberOfMessagesNotVisible"])


def runs(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


@pytest.mark.parametrize("fifo", [False, True], ids=["standard", "fifo"])
def test_a_failed_job_is_in_the_failed_queue_when_the_drain_ends(
    broker: Broker, prefix: str, fifo: bool
) -> None:
    options = Options(prefix=prefix)
    put(broker, options, "q", "exit 3", fifo=fifo, group_id="g" if fifo else None)
    rec = drain(broker, options, "q", fifo=fifo)
    [failed] = rec.of(JobFailed)
    assert failed.final and failed.returns_in is None
    end = ".fifo" if fifo else ""
    # Read from the counts alone: a receive on the main queue would do the redrive.
    assert counts(broker, f"{prefix}q{end}") == (0, 0)
    assert counts(broker, f"{prefix}q_failed{end}") == (1, 0)


@pytest.mark.parametrize("fifo", [False, True], ids=["standard", "fifo"])
def test_a_queue_without_redrive_runs_a_failed_job_once_and_the_drain_ends(
    broker: Broker, prefix: str, fifo: bool, tmp_path: Path
) -> None:
    options = Options(prefix=prefix)
    log = tmp_path / "runs"
    put(broker, options, "q", f"echo x >> {log}; false", fifo=fifo, group_id="g" if fifo else None)
    drain(broker, options, "q", fifo=fifo)
    assert runs(log) == ["x"]
    rec = drain(broker, options, "q_failed", fifo=fifo)
    assert runs(log) == ["x", "x"]  # exactly once more, no retry by the worker
    [failed] = rec.of(JobFailed)
    assert failed.max_attempts is None and failed.final and failed.returns_in == 30
    assert rec.of(JobRetry) == []
    [summary] = rec.of(Summary)
    assert (summary.ran, summary.failed, summary.retried) == (1, 1, 0)
    end = ".fifo" if fifo else ""
    # Still in the failed queue, hidden for the queue's visibility timeout.
    assert counts(broker, f"{prefix}q_failed{end}") == (0, 1)


def test_a_failed_job_comes_back_after_the_queues_visibility_timeout(
    sqlite_broker: Broker, prefix: str, tmp_path: Path
) -> None:
    options = Options(prefix=prefix)
    put(sqlite_broker, options, "q", "false")
    drain(sqlite_broker, options, "q")
    url = sqlite_broker.get_queue_url(f"{prefix}q_failed")
    sqlite_broker.set_queue_attributes(url, {"VisibilityTimeout": "1"})
    rec = drain(sqlite_broker, options, "q_failed")
    [failed] = rec.of(JobFailed)
    assert failed.returns_in == 1
    [m] = sqlite_broker.receive(url, 10, 30, 5)  # back after 1 s, not after a backoff
    assert m.receive_count == 2


def test_retries_still_back_off_where_a_redrive_policy_gives_attempts(
    broker: Broker, prefix: str, tmp_path: Path
) -> None:
    options = Options(prefix=prefix)
    log = tmp_path / "runs"
    put(broker, options, "q", f"echo x >> {log}; false", retries=1)
    rec = drain(broker, options, "q", retry_delay=0)
    assert runs(log) == ["x", "x"]
    assert [e.attempt for e in rec.of(JobRetry)] == [1]
    assert [(e.attempt, e.final) for e in rec.of(JobFailed)] == [(1, False), (2, True)]
    assert counts(broker, f"{prefix}q_failed") == (1, 0)


# -- what the worker prints ------------------------------------------------------------


def _view_lines(concurrency: int, events: list[Event]) -> list[str]:
    err = io.StringIO()
    view = WorkerView(
        Output(verbose=True, json_lines=False, err=err, colour=False), 30, concurrency
    )
    for event in events:
        view(event)
    return err.getvalue().splitlines()


def _result(ok: bool) -> JobResult:
    return JobResult(0 if ok else 2, None, "out 1\nout 2\n", "" if ok else "oops\n", 0.25)


def test_concurrent_jobs_name_their_job_on_every_line() -> None:
    events: list[Event] = [
        JobStarted("qdone_q", "job-a", "echo a", 1),
        JobStarted("qdone_q", "job-b", "exit 2", 1),
        JobSucceeded("qdone_q", "job-a", "echo a", 1, _result(True)),
        JobFailed("qdone_q", "job-b", "exit 2", 1, 1, True, _result(False)),
    ]
    lines = _view_lines(2, events)
    assert len(lines) > len(events)
    for line in lines:
        assert "job-a" in line or "job-b" in line, line
    assert "  [job-a] SUCCESS in 0.250 s" in lines
    assert "  [job-a]   out 2" in lines
    assert "  [job-b] FAILED: exit code 2" in lines
    # One job at a time: Node qdone's layout, unlabelled.
    single = _view_lines(1, events[:1] + events[2:3])
    assert "  SUCCESS in 0.250 s" in single and "    out 1" in single


def test_summary_says_one_job_in_the_singular() -> None:
    assert "Ran 1 job: 1 succeeded, 0 failed" in _view_lines(1, [Summary(1, 1, 0, 0, 0, False)])
    assert "Ran 2 jobs: 2 succeeded, 0 failed" in _view_lines(1, [Summary(2, 2, 0, 0, 0, False)])


def test_no_redrive_failure_says_when_it_comes_back() -> None:
    event = JobFailed("qdone_q_failed", "j", "false", 2, None, True, _result(False), 30)
    lines = _view_lines(1, [event])
    assert any("has no redrive policy" in line and "30 s" in line for line in lines)
    out = io.StringIO()
    WorkerView(Output(verbose=False, json_lines=True, out=out), 30)(event)
    assert '"willRetry": false' in out.getvalue() and '"returnsIn": 30' in out.getvalue()


def test_a_fifo_drain_runs_every_job_of_a_group_that_keeps_failing(
    tmp_path: Path, prefix: str
) -> None:
    """Each failure frees the group only once its visibility change is sent: the drain
    must not end in between (it did, about one run in three, leaving jobs unrun)."""
    from qdone.broker.sqlite import SqliteBroker

    options = Options(prefix=prefix)
    for trial in range(10):
        broker = SqliteBroker(tmp_path / f"store{trial}.db")
        try:
            for _ in range(12):
                put(broker, options, "q", "exit 1", fifo=True, group_id="g")
            rec = drain(broker, options, "q", fifo=True)
            assert [e.ran for e in rec.of(Summary)] == [12], f"trial {trial}"
            assert counts(broker, f"{prefix}q_failed.fifo") == (12, 0)
        finally:
            broker.close()
