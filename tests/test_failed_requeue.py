"""``failed.py`` and ``requeue.py`` on both brokers: listing failed jobs, moving them
back, and the bad input that must change nothing."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from qdone.broker.base import Broker, SendEntry
from qdone.config import Options, QueueOptions
from qdone.enqueue import SendSettings, enqueue
from qdone.errors import UsageError
from qdone.failed import list_failed
from qdone.requeue import requeue
from qdone.worker import Worker
from qdone.worker.events import WorkerSettings


def put(broker: Broker, options: Options, queue: str, command: str, **q: Any) -> None:
    group = q.pop("group_id", None)
    enqueue(broker, options, QueueOptions(**q), queue, command, SendSettings(group_id=group))


def drain(broker: Broker, options: Options, *queues: str, **settings: Any) -> None:
    settings.setdefault("wait_time", 0 if broker.service == "SQLite" else 1)
    Worker(broker, options, WorkerSettings(queues=queues, drain=True, **settings)).run()


def counts(broker: Broker, name: str) -> tuple[int, int]:
    a = broker.get_queue_attributes(
        broker.get_queue_url(name),
        ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )
    return int(a["ApproximateNumberOfMessages"]), int(a["ApproximateNumberOfMessagesNotVisible"])


def fail_jobs(broker: Broker, options: Options, queue: str, commands: list[str], **q: Any) -> None:
    """Enqueue ``commands`` and run them once: each fails into the failed queue."""
    for c in commands:
        put(broker, options, queue, c, **q)
    drain(broker, options, queue, fifo=q.get("fifo", False))


def test_failed_lists_the_jobs_with_their_fields(broker: Broker, prefix: str) -> None:
    options = Options(prefix=prefix)
    fail_jobs(broker, options, "q", ["exit 1", "exit 2"])
    listing = list_failed(broker, options, ["q"])
    assert [p.source for p in listing.pairs] == [f"{prefix}q_failed"]
    assert sorted(j.command for j in listing.jobs) == ["exit 1", "exit 2"]
    for job in listing.jobs:
        assert job.queue == f"{prefix}q_failed" and job.enqueued_at > 0
        if broker.service == "SQLite":
            assert job.failed_at is not None and job.failed_at >= job.enqueued_at
        else:
            assert job.first_received_at is not None and job.first_received_at >= job.enqueued_at
    assert counts(broker, f"{prefix}q_failed") == (2, 0)  # all visible again


def test_listing_changes_nothing_on_sqlite_and_one_receive_each_on_sqs(
    broker: Broker, prefix: str
) -> None:
    options = Options(prefix=prefix)
    fail_jobs(broker, options, "q", ["exit 1", "exit 2", "exit 3"])
    first = {j.job: j.receives for j in list_failed(broker, options, ["q"]).jobs}
    second = {j.job: j.receives for j in list_failed(broker, options, ["q"]).jobs}
    assert first.keys() == second.keys() and len(first) == 3
    step = 0 if broker.service == "SQLite" else 1
    assert all(second[k] == first[k] + step for k in first)
    assert counts(broker, f"{prefix}q_failed") == (3, 0)


def test_limit_counts_across_queues(broker: Broker, prefix: str) -> None:
    options = Options(prefix=prefix)
    fail_jobs(broker, options, "a", ["exit 1", "exit 2"])
    fail_jobs(broker, options, "b", ["exit 3"])
    assert len(list_failed(broker, options, ["*"]).jobs) == 3
    assert len(list_failed(broker, options, ["*"], limit=2).jobs) == 2
    result = requeue(broker, options, ["*"], limit=2)
    assert sum(m.requeued for m in result.moved) == 2
    assert len(list_failed(broker, options, ["*"]).jobs) == 1


@pytest.mark.parametrize("fifo", [False, True], ids=["standard", "fifo"])
def test_requeue_moves_every_job_back_and_a_worker_runs_each_once(
    broker: Broker, prefix: str, tmp_path: Path, fifo: bool
) -> None:
    options = Options(prefix=prefix)
    log = tmp_path / "runs"
    fail = tmp_path / "fail"
    fail.touch()
    commands = [f"echo {i} >> {log}; [ ! -e {fail} ]" for i in range(12)]
    q: dict[str, Any] = {"fifo": True, "group_id": "g"} if fifo else {}
    fail_jobs(broker, options, "q", commands, **q)
    end = ".fifo" if fifo else ""
    assert counts(broker, f"{prefix}q_failed{end}") == (12, 0)
    dry = requeue(broker, options, ["q"], fifo=fifo, dry_run=True)
    assert [m.planned for m in dry.moved] == [12] and dry.moved[0].requeued == 0
    assert counts(broker, f"{prefix}q_failed{end}") == (12, 0)  # nothing moved
    result = requeue(broker, options, ["q"], fifo=fifo)
    assert result.ok and [(m.requeued, m.remaining or 0) for m in result.moved] == [(12, 0)]
    assert counts(broker, f"{prefix}q_failed{end}") == (0, 0)
    assert counts(broker, f"{prefix}q{end}") == (12, 0)
    fail.unlink()
    log.unlink()
    drain(broker, options, "q", fifo=fifo)
    lines = log.read_text().split()
    assert sorted(lines, key=int) == [str(i) for i in range(12)]  # each once
    if fifo:
        assert lines == [str(i) for i in range(12)]  # the group's order held
    assert counts(broker, f"{prefix}q_failed{end}") == (0, 0)


def test_requeued_jobs_get_a_fresh_receive_count(broker: Broker, prefix: str) -> None:
    options = Options(prefix=prefix)
    fail_jobs(broker, options, "q", ["exit 1"], retries=1)
    requeue(broker, options, ["q"])
    [m] = broker.receive(broker.get_queue_url(f"{prefix}q"), 10, 30, 1)
    assert m.receive_count == 1 and m.body == "exit 1"


def test_sqlite_moves_ten_per_transaction(sqlite_broker: Broker, prefix: str) -> None:
    options = Options(prefix=prefix)
    put(sqlite_broker, options, "q", "true")
    failed_url = sqlite_broker.get_queue_url(f"{prefix}q_failed")
    for start in range(0, 25, 10):
        entries = [SendEntry(str(i), f"exit {i}") for i in range(start, min(25, start + 10))]
        sqlite_broker.send_batch(failed_url, entries)
    before = sqlite_broker.calls.by_action("SQLite").get("MoveMessages", 0)
    result = requeue(sqlite_broker, options, ["q"])
    assert result.moved[0].requeued == 25
    assert sqlite_broker.calls.by_action("SQLite")["MoveMessages"] - before == 4  # 10+10+5+0


def test_from_dead_moves_dead_jobs_to_the_queue(broker: Broker, prefix: str) -> None:
    options = Options(prefix=prefix)
    put(broker, options, "q", "true", dlq=True)
    dead_url = broker.get_queue_url(f"{prefix}q_dead")
    broker.send_batch(dead_url, [SendEntry("a", "echo dead")])
    assert [j.command for j in list_failed(broker, options, ["q"], dead=True).jobs] == ["echo dead"]
    result = requeue(broker, options, ["q"], dead=True)
    assert [(m.pair.source, m.requeued) for m in result.moved] == [(f"{prefix}q_dead", 1)]
    assert counts(broker, f"{prefix}q") == (2, 0)


def test_bad_input_is_one_error_and_changes_nothing(broker: Broker, prefix: str) -> None:
    options = Options(prefix=prefix)
    fail_jobs(broker, options, "q", ["exit 1"])
    # A pair not linked by a redrive policy: qdone_plain_failed is no failed queue.
    broker.create_queue(f"{prefix}plain", {})
    broker.create_queue(f"{prefix}plain_failed", {})
    bad = {
        "missing": (["nosuch"], f"queue {prefix}nosuch_failed does not exist"),
        "wildcard": (["zzz*"], "no failed queue matches 'zzz*'"),
        "not failed": (["plain"], f"{prefix}plain_failed is not the failed queue"),
        "wildcard of no failed queue": (["plain*"], "no failed queue matches 'plain*'"),
        "one bad of two": (["q", "nosuch"], "does not exist"),
        "no dead queue": (["q"], f"queue {prefix}q_dead does not exist"),
    }
    for name, (specs, text) in bad.items():
        dead = name == "no dead queue"
        for act in (requeue, list_failed):
            with pytest.raises(UsageError, match=re.escape(text)):
                act(broker, options, specs, dead=dead)  # type: ignore[operator]
    assert counts(broker, f"{prefix}q_failed") == (1, 0)
    assert counts(broker, f"{prefix}q") == (0, 0)
    [m] = broker.receive(broker.get_queue_url(f"{prefix}q_failed"), 10, 30, 1)
    # Nothing received it meanwhile (SQS: the worker's receive moved it, count kept).
    assert m.receive_count == (1 if broker.service == "SQLite" else 2)


def test_a_wildcard_leaves_out_a_queue_that_is_not_a_failed_queue(
    broker: Broker, prefix: str
) -> None:
    options = Options(prefix=prefix)
    fail_jobs(broker, options, "q", ["exit 1"])
    broker.create_queue(f"{prefix}plain", {})
    broker.create_queue(f"{prefix}plain_failed", {})
    listing = list_failed(broker, options, ["*"])
    assert [p.source for p in listing.pairs] == [f"{prefix}q_failed"]
    assert len(listing.skipped) == 1 and f"{prefix}plain_failed" in listing.skipped[0]


def test_fifo_listing_shows_each_group_and_releases_it(broker: Broker, prefix: str) -> None:
    options = Options(prefix=prefix)
    for group in ("a", "b", "c"):
        put(broker, options, "q", f"exit 1 # {group}", fifo=True, group_id=group)
    drain(broker, options, "q", fifo=True)
    listing = list_failed(broker, options, ["q"], fifo=True)
    assert sorted((j.group, j.command) for j in listing.jobs) == [
        (g, f"exit 1 # {g}") for g in ("a", "b", "c")
    ]
    assert counts(broker, f"{prefix}q_failed.fifo") == (3, 0)  # every group free again
    assert sum(m.requeued for m in requeue(broker, options, ["q"], fifo=True).moved) == 3


def test_a_requeued_job_goes_behind_the_queues_jobs_as_a_new_send_would(
    broker: Broker, prefix: str, tmp_path: Path
) -> None:
    options = Options(prefix=prefix)
    log = tmp_path / "runs"
    fail_jobs(broker, options, "q", [f"echo failed >> {log}; exit 1"], fifo=True, group_id="g")
    put(broker, options, "q", f"echo later >> {log}", fifo=True, group_id="g")
    requeue(broker, options, ["q"], fifo=True)
    log.unlink()
    drain(broker, options, "q", fifo=True)
    assert log.read_text().split() == ["later", "failed"]
