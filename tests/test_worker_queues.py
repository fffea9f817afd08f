"""The worker on several queues: fairness between queues, bounded threads, FIFO
groups in parallel, drain and stop timing. In-process workers on threads; the
only time bounds are generous guards against starvation and hangs."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from qdone.broker.base import Broker, Receipt
from qdone.config import Options, QueueOptions
from qdone.enqueue import SendSettings, enqueue
from qdone.queues import ensure_queue
from qdone.worker import Worker
from qdone.worker.events import Event, JobSucceeded, Summary, Waiting, WorkerSettings
from qdone.worker.schedule import JITTER, _phase, check_period


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.times: list[float] = []  # time.monotonic() of each event
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)
            self.times.append(time.monotonic())

    def when(self, kind: type[Any]) -> float:
        with self._lock:
            return max(
                t for t, e in zip(self.times, self.events, strict=True) if isinstance(e, kind)
            )

    def of(self, kind: type[Any]) -> list[Any]:
        with self._lock:
            return [e for e in self.events if isinstance(e, kind)]


def put(broker: Broker, options: Options, queue: str, command: str, **send: Any) -> None:
    fifo = send.pop("fifo", False)
    enqueue(broker, options, QueueOptions(fifo=fifo), queue, command, SendSettings(**send))


def empty(broker: Broker, url: str) -> None:
    for m in broker.receive(url, 10, 60, 1):
        broker.delete_batch(url, [Receipt("0", m.receipt)])


def start(broker: Broker, options: Options, **settings: Any) -> tuple[Worker, Recorder, Any]:
    rec = Recorder()
    worker = Worker(broker, options, WorkerSettings(**settings), on_event=rec, rng=random.Random(3))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    return worker, rec, thread


def wait_until(check: Callable[[], bool], guard: float) -> bool:
    """Polls ``check`` until true or ``guard`` seconds (a hang guard, not a timing)."""
    end = time.monotonic() + guard
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.05)
    return check()


def stop(worker: Worker, thread: threading.Thread) -> None:
    worker.stop()
    thread.join(30)
    assert not thread.is_alive()


# -- issue 16 item 1: a second queue is never starved at -c 1 ------------------------------


@pytest.mark.parametrize("order", [("a", "b"), ("b", "a")])
def test_every_queue_gets_its_turn_at_concurrency_1(
    broker: Broker, prefix: str, order: tuple[str, str]
) -> None:
    options = Options(prefix=prefix)
    put(broker, options, "a", "true")
    empty(broker, broker.get_queue_url(f"{prefix}a"))  # a exists, with nothing on it
    for _ in range(3):
        put(broker, options, "b", "true")
    worker, rec, thread = start(broker, options, queues=order, wait_time=2)
    try:
        ran = wait_until(lambda: len(rec.of(JobSucceeded)) >= 3, guard=40)
    finally:
        stop(worker, thread)
    assert ran, f"{len(rec.of(JobSucceeded))} of 3 jobs of b ran"
    assert {e.queue for e in rec.of(JobSucceeded)} == {f"{prefix}b"}


# -- issue 10 item 7: FIFO groups enqueued as blocks run in parallel -------------------------


def test_fifo_groups_enqueued_as_blocks_run_in_parallel(
    broker: Broker, prefix: str, tmp_path: Path
) -> None:
    options = Options(prefix=prefix)
    run, log = tmp_path / "run", tmp_path / "log"
    run.mkdir()
    # Each group's first job marks its group as started, then waits (15 s at most,
    # within --kill-after) for all four groups to have started: they all do only if
    # the worker runs the groups side by side, however slowly the machine runs them.
    wait_for_all = (
        f"for k in $(seq 150); do [ $(ls {run} | wc -l) -ge 4 ] && break; sleep 0.1; done"
    )
    for group in "ABCD":  # each group one block, as enqueue-batch -g would send it
        for i in range(8):
            first = f"touch {run}/{group}; {wait_for_all}; ls {run} > {tmp_path}/seen.{group}; "
            command = f"{first if i == 0 else ''}echo {group}{i} >> {log}"
            put(broker, options, "grp", command, fifo=True, group_id=group)
    settings = WorkerSettings(queues=("grp",), fifo=True, concurrency=4, drain=True, wait_time=1)
    summary = Worker(broker, options, settings).run()
    assert summary.succeeded == 32
    done = log.read_text().split()
    for group in "ABCD":  # in order, one at a time, within a group
        assert [x for x in done if x[0] == group] == [f"{group}{i}" for i in range(8)]
    seen = {group: (tmp_path / f"seen.{group}").read_text().split() for group in "ABCD"}
    assert seen == {group: ["A", "B", "C", "D"] for group in "ABCD"}


# -- issue 10 item 6: --drain and delayed messages; no shutdown lines without a signal ------


def test_drain_ends_soon_after_a_delayed_job_and_says_nothing_of_shutting_down(
    broker: Broker, prefix: str
) -> None:
    options = Options(prefix=prefix)
    put(broker, options, "late", "true", delay=2)
    rec = Recorder()
    worker = Worker(
        broker, options, WorkerSettings(queues=("late",), drain=True, wait_time=20), on_event=rec
    )
    worker.run()
    ended = time.monotonic()
    assert len(rec.of(JobSucceeded)) == 1
    assert rec.of(Waiting) == []  # "Shutting down: waiting ..." only after a signal
    # A hang guard well below the 20 s wait the worker must not sit out after the job.
    assert ended - rec.when(JobSucceeded) < 10


# -- issue 10 item 9: an idle SQLite worker stops within a second --------------------------


def test_idle_sqlite_worker_stops_soon_after_the_first_signal(sqlite_broker: Broker) -> None:
    options = Options()
    put(sqlite_broker, options, "quiet", "true")
    empty(sqlite_broker, sqlite_broker.get_queue_url("qdone_quiet"))
    worker, _rec, thread = start(sqlite_broker, options, queues=("quiet",), wait_time=20)
    time.sleep(1.5)  # its receive is waiting
    asked = time.monotonic()
    worker.stop()
    thread.join(30)
    assert not thread.is_alive()
    # The bound is a second; the guard is generous for a loaded machine.
    assert time.monotonic() - asked < 4


# -- a receive in flight at the first signal: its messages run (SQS) -----------------------


def test_messages_of_a_long_poll_in_flight_at_stop_are_run(
    sqs_broker: Broker, prefix: str, tmp_path: Path
) -> None:
    options = Options(prefix=prefix)
    put(sqs_broker, options, "fl", "true")
    url = sqs_broker.get_queue_url(f"{prefix}fl")
    empty(sqs_broker, url)
    polling = threading.Event()
    original = sqs_broker.receive

    def receive(u: str, n: int, v: int, wait: float) -> Any:
        if wait >= 5:
            polling.set()
        return original(u, n, v, wait)

    sqs_broker.receive = receive  # type: ignore[method-assign]
    worker, rec, thread = start(sqs_broker, options, queues=("fl",), wait_time=6)
    assert polling.wait(30)
    time.sleep(0.3)
    worker.stop()
    put(sqs_broker, options, "fl", f"touch {tmp_path / 'ran'}")
    thread.join(30)
    assert not thread.is_alive()
    assert (tmp_path / "ran").exists()
    assert rec.of(Summary)[-1].succeeded == 1


# -- a restarted worker finds work already waiting at once, not at its queue's phase -----


def test_work_waiting_at_start_runs_long_before_its_queues_phase(
    broker: Broker, prefix: str
) -> None:
    options = Options(prefix=prefix)
    names = [f"sw{i:02}" for i in range(50)]
    urls = {n: ensure_queue(broker, options, QueueOptions(), n).url for n in names}
    settings = WorkerSettings(queues=("sw*",))  # 50 queues, -c 1: idle ones are checked
    period = check_period(
        queues=len(names),
        wait_time=settings.wait_time,
        idle_check=settings.idle_check,
        active_only=False,
    )
    now = time.time()
    # Seconds until each queue's first check at its phase; the worker's jitter adds
    # up to JITTER, so the last queue is taken among those it cannot wrap round.
    phase_in = {n: (_phase(urls[n]) * period - now) % period for n in names}
    last = max((n for n in names if phase_in[n] < period - JITTER - 1), key=phase_in.__getitem__)
    guard = 15.0
    assert phase_in[last] > guard + 10  # by its phase alone, the job would start later
    put(broker, options, last, "true")
    worker, rec, thread = start(broker, options, queues=("sw*",))
    try:
        ran = wait_until(lambda: bool(rec.of(JobSucceeded)), guard=guard)
    finally:
        stop(worker, thread)
    assert ran, f"the job on {last} waited for its phase ({phase_in[last]:.0f} s)"
