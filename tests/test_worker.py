"""The worker core, in-process: SQLite for most tests (with an injected clock and
``poll_once``), SQS on moto where its semantics matter."""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qdone.broker.base import Broker, Message
from qdone.config import Options, QueueOptions
from qdone.enqueue import SendSettings, enqueue
from qdone.job import Job, JobResult
from qdone.worker import Worker
from qdone.worker.acker import Acker
from qdone.worker.events import (
    Event,
    JobArchived,
    JobFailed,
    JobRetry,
    JobSucceeded,
    Listening,
    QueueMissing,
    Summary,
    WorkerSettings,
)
from qdone.worker.policy import retry_delay


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> Iterator[Broker]:
    from qdone.broker.sqlite import SqliteBroker

    broker = SqliteBroker(tmp_path / "store.db", clock=clock)
    yield broker
    broker.close()


def put(broker: Broker, options: Options, queue: str, command: str, **q: Any) -> str:
    group = q.pop("group_id", None)
    return enqueue(
        broker, options, QueueOptions(**q), queue, command, SendSettings(group_id=group)
    ).message_id


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


def make(
    broker: Broker, options: Options, clock: Any = None, **settings: Any
) -> tuple[Worker, Recorder]:
    rec = Recorder()
    kwargs: dict[str, Any] = {"on_event": rec, "rng": random.Random(7)}
    if clock is not None:
        kwargs["clock"] = clock
    worker = Worker(broker, options, WorkerSettings(**settings), **kwargs)
    return worker, rec


def drain(broker: Broker, options: Options, *queues: str, **settings: Any) -> Recorder:
    settings.setdefault("wait_time", 0 if broker.service == "SQLite" else 1)
    worker, rec = make(broker, options, queues=queues, drain=True, **settings)
    worker.run()
    return rec


def counts(broker: Broker, url: str) -> tuple[int, int]:
    a = broker.get_queue_attributes(
        url, ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )
    return int(a["ApproximateNumberOfMessages"]), int(a["ApproximateNumberOfMessagesNotVisible"])


# -- policies -------------------------------------------------------------------


def test_retry_delay_grows_with_jitter_and_caps() -> None:
    rng = random.Random(1)
    delays = [
        retry_delay(10, n, rng=rng, held_for=0, age=0, retention=1_209_600) for n in (1, 2, 3, 4)
    ]
    assert all(a < b for a, b in itertools.pairwise(delays))
    assert 7 <= delays[0] <= 13 and 60 <= delays[3] <= 100
    assert retry_delay(10, 30, rng=rng, held_for=100, age=0, retention=1_209_600) <= 43_099
    assert retry_delay(10, 3, rng=rng, held_for=0, age=3_000, retention=3_060) == 0


def test_acker_extends_doubling_capped_by_cover(store: Broker, clock: FakeClock) -> None:
    options = Options(broker="sqlite")
    put(store, options, "ext", "true")
    url = store.get_queue_url("qdone_ext")
    [m] = store.receive(url, 1, 4, 0)
    acker = Acker(store, clock=clock, margin=2)
    acker.hold(m, clock(), 4)
    acker.cover(m, 20)
    sent: list[int] = []
    original = store.change_visibility_batch

    def record(u: str, e: Any) -> Any:
        sent.extend(x.timeout for x in e)
        return original(u, e)

    store.change_visibility_batch = record  # type: ignore[method-assign]
    for _ in range(12):
        acker.tick()
        clock.advance(1)
    assert sent == [8, 12]  # at 2 s: 2*4; at 8 s: min(16, cover 20 - 8)
    assert counts(store, url) == (0, 1)
    acker.release(m)
    clock.advance(30)
    acker.tick()
    assert sent == [8, 12]
    assert counts(store, url) == (1, 0)


def test_acker_deletes_several_batches_a_call_where_the_broker_takes_them(
    broker: Broker, prefix: str
) -> None:
    options = Options(prefix=prefix)
    for i in range(25):
        put(broker, options, "del", f"echo {i}")
    url = broker.get_queue_url(f"{prefix}del")
    messages: list[Message] = []
    while len(messages) < 25:
        messages += broker.receive(url, 10, 30, 0)
    calls: list[list[int]] = []
    original = broker.delete_batches

    def record(u: str, batches: Any) -> Any:
        calls.append([len(b) for b in batches])
        return original(u, batches)

    broker.delete_batches = record  # type: ignore[method-assign]
    acker = Acker(broker, clock=time.time, margin=5)
    for m in messages:
        acker.hold(m, 0.0, 30)
        acker.delete(m)
    acker.flush()
    # SQLite: one transaction for all 25; SQS: a call per batch of ten.
    assert calls == ([[10, 10, 5]] if broker.batches_per_send >= 3 else [[10], [10], [5]])
    assert counts(broker, url) == (0, 0)


def test_acker_tells_once_what_it_sent_is_no_longer_pending(
    store: Broker, clock: FakeClock
) -> None:
    # A drain waiting for its last deletes hears they went at once, not at its next tick.
    put(store, Options(broker="sqlite"), "settle", "true")
    url = store.get_queue_url("qdone_settle")
    [m] = store.receive(url, 1, 30, 0)
    pending: list[int] = []
    acker = Acker(store, clock=clock, margin=2, on_settled=lambda: pending.append(acker.pending()))
    acker.hold(m, clock(), 30)
    acker.delete(m)
    acker.flush()
    assert pending == [0]
    assert counts(store, url) == (0, 0)


# -- running --------------------------------------------------------------------


def test_poll_once_runs_and_deletes(store: Broker, clock: FakeClock, tmp_path: Path) -> None:
    options = Options(broker="sqlite")
    out = tmp_path / "out"
    put(store, options, "a", f'echo "$QDONE_QUEUE $QDONE_RECEIVE_COUNT" >> {out}')
    put(store, options, "a", f"echo two >> {out}")
    worker, rec = make(store, options, clock, queues=("a",), concurrency=4)
    assert worker.poll_once() == 2
    assert worker.poll_once() == 0
    worker.close()
    assert sorted(out.read_text().splitlines()) == ["qdone_a 1", "two"]
    assert len(rec.of(JobSucceeded)) == 2
    assert counts(store, store.get_queue_url("qdone_a")) == (0, 0)
    assert rec.of(Listening)[0].queues == ("qdone_a",)


def test_never_receives_more_than_free_slots(store: Broker, clock: FakeClock) -> None:
    options = Options(broker="sqlite")
    for i in range(25):
        put(store, options, "slots", f"exit {i % 1}")
    worker, _ = make(store, options, clock, queues=("slots",), concurrency=3)
    sizes: list[int] = []
    original = store.receive

    def record(u: str, n: int, v: int, w: float) -> Any:
        sizes.append(n)
        return original(u, n, v, w)

    store.receive = record  # type: ignore[method-assign]
    while worker.poll_once():
        pass
    worker.close()
    assert max(sizes) == 3
    assert counts(store, store.get_queue_url("qdone_slots")) == (0, 0)


def test_missing_queue_is_a_warning_and_others_run(broker: Broker, prefix: str) -> None:
    options = Options(prefix=prefix)
    put(broker, options, "here", "true")
    rec = drain(broker, options, "nothere", "here")
    assert [e.queue for e in rec.of(QueueMissing)] == ["nothere"]
    assert len(rec.of(JobSucceeded)) == 1
    assert rec.of(Summary)[-1].succeeded == 1


def test_drain_with_no_queue_at_all_exits(store: Broker) -> None:
    rec = drain(store, Options(), "nothere")
    assert rec.of(Summary)[-1].ran == 0


def test_wildcard_excludes_failed_unless_asked(store: Broker) -> None:
    options = Options()
    for name in ("wa", "wb"):
        put(store, options, name, "true")
    put(store, options, "wa_failed", "true")  # a message sitting in a failed queue
    put(store, options, "wf.fifo", "true", fifo=True)
    put(store, options, "wf_failed.fifo", "true", fifo=True)
    put(store, options, "wd_dead", "true")
    rec = drain(store, options, "w*")
    names = set(rec.of(Listening)[0].queues)
    assert names == {"qdone_wa", "qdone_wb", "qdone_wf.fifo"}
    rec = drain(store, options, "w*", include_failed=True, fifo=True)
    assert set(rec.of(Listening)[0].queues) == {"qdone_wf.fifo", "qdone_wf_failed.fifo"}
    rec = drain(store, options, "w*", include_failed=True, include_dead=True)
    assert len(rec.of(JobSucceeded)) == 2  # wa_failed and wd_dead: the rest ran before


def test_active_only_polls_only_queues_with_messages(store: Broker) -> None:
    options = Options()
    put(store, options, "act1", "true")
    put(store, options, "act2", "true")
    store.receive(store.get_queue_url("qdone_act2"), 1, 600, 0)  # hidden, so inactive
    before = store.calls.by_action("SQLite").get("ReceiveMessage", 0)
    rec = drain(store, options, "act*", active_only=True, wait_time=1)
    assert len(rec.of(JobSucceeded)) == 1
    receives = store.calls.by_action("SQLite")["ReceiveMessage"] - before
    assert receives <= 3  # act1 only: its message and one empty receive


def test_archive_prints_and_deletes_without_running(store: Broker, tmp_path: Path) -> None:
    options = Options()
    put(store, options, "arch", f"touch {tmp_path / 'ran'}")
    rec = drain(store, options, "arch", archive=True)
    assert [e.command for e in rec.of(JobArchived)] == [f"touch {tmp_path / 'ran'}"]
    assert not (tmp_path / "ran").exists()
    assert counts(store, store.get_queue_url("qdone_arch")) == (0, 0)


def test_failed_job_lands_in_failed_queue_with_body(broker: Broker, prefix: str) -> None:
    options = Options(prefix=prefix)
    body = "echo 'quotes \" and $dollars'; exit 4"
    put(broker, options, "bad", body)
    rec = drain(broker, options, "bad")
    [failed] = rec.of(JobFailed)
    assert failed.final and failed.result.exit_code == 4 and failed.attempt == 1
    url = broker.get_queue_url(f"{prefix}bad")
    assert broker.receive(url, 10, 30, 0) == []  # the redrive moves it
    [m] = broker.receive(broker.get_queue_url(f"{prefix}bad_failed"), 10, 30, 1)
    assert m.body == body


def test_kill_after_times_out_and_fails(store: Broker) -> None:
    options = Options()
    put(store, options, "slow", "sleep 30")
    rec = drain(store, options, "slow", kill_after=1, grace=0.5)
    [failed] = rec.of(JobFailed)
    assert failed.result.timed_out and failed.final


def test_fifo_order_within_a_group(broker: Broker, prefix: str, tmp_path: Path) -> None:
    options = Options(prefix=prefix)
    out = tmp_path / "order"
    for i in range(6):
        put(broker, options, "ord", f"echo a{i} >> {out}", fifo=True, group_id="a")
        put(broker, options, "ord", f"echo b{i} >> {out}", fifo=True, group_id="b")
    drain(broker, options, "ord", fifo=True, concurrency=4)
    lines = out.read_text().split()
    assert [x for x in lines if x[0] == "a"] == [f"a{i}" for i in range(6)]
    assert [x for x in lines if x[0] == "b"] == [f"b{i}" for i in range(6)]


def test_concurrency_runs_jobs_in_parallel(store: Broker, tmp_path: Path) -> None:
    options = Options()
    for i in range(4):
        put(store, options, "par", f"sleep 0.5; echo {i} >> {tmp_path / 'o'}")
    rec = drain(store, options, "par", concurrency=4)
    assert len(rec.of(JobSucceeded)) == 4
    durations = sum(e.result.duration for e in rec.of(JobSucceeded))
    assert durations >= 2.0


# -- retries (issue 6) ------------------------------------------------------------


def _retry_run(
    broker: Broker, options: Options, clock: Any, queue: str, command: str, retries: int
) -> tuple[Recorder, list[int]]:
    put(broker, options, queue, command, retries=retries)
    worker, rec = make(broker, options, clock, queues=(queue,), retry_delay=10)
    delays: list[int] = []
    for _ in range(retries + 3):
        worker.poll_once()
        retry = rec.of(JobRetry)
        if len(retry) > len(delays):
            delays.append(retry[-1].delay)
            if isinstance(clock, FakeClock):
                clock.advance(delays[-1] - 1)
                assert worker.poll_once() == 0  # not visible yet
                clock.advance(1)
    worker.close()
    return rec, delays


def test_retries_fail_twice_then_succeed(store: Broker, clock: FakeClock, tmp_path: Path) -> None:
    options = Options()
    n = tmp_path / "n"
    command = f'echo "$QDONE_RECEIVE_COUNT" >> {n}; [ "$QDONE_RECEIVE_COUNT" -ge 3 ]'
    rec, delays = _retry_run(store, options, clock, "r2", command, retries=2)
    assert n.read_text().split() == ["1", "2", "3"]
    assert len(delays) == 2 and delays[0] < delays[1]
    assert 7 <= delays[0] <= 13 and 15 <= delays[1] <= 25
    assert [e.attempt for e in rec.of(JobFailed)] == [1, 2]
    assert all(e.max_attempts == 3 and not e.final for e in rec.of(JobFailed))
    assert len(rec.of(JobSucceeded)) == 1
    url = store.get_queue_url("qdone_r2")
    clock.advance(100)
    assert counts(store, url) == (0, 0)


def test_retries_exhausted_lands_in_failed(store: Broker, clock: FakeClock) -> None:
    options = Options()
    rec, delays = _retry_run(store, options, clock, "r1", "exit 1", retries=1)
    assert [(e.attempt, e.final) for e in rec.of(JobFailed)] == [(1, False), (2, True)]
    assert len(delays) == 1
    [m] = store.receive(store.get_queue_url("qdone_r1_failed"), 10, 30, 0)
    assert m.body == "exit 1"


class ZeroDelay:
    """Passes visibility changes to SQS with timeout 0 and records what was asked:
    the delays are checked, the test does not wait for them."""

    def __init__(self, broker: Broker) -> None:
        self.asked: list[int] = []
        self._original = broker.change_visibility_batch
        broker.change_visibility_batch = self  # type: ignore[method-assign]

    def __call__(self, url: str, entries: Any) -> Any:
        self.asked += [e.timeout for e in entries]
        return self._original(url, [type(e)(e.id, e.receipt, 0) for e in entries])


def test_retries_on_sqs(sqs_broker: Broker, prefix: str, tmp_path: Path) -> None:
    options = Options(prefix=prefix)
    zero = ZeroDelay(sqs_broker)
    n = tmp_path / "n"
    command = f'echo "$QDONE_RECEIVE_COUNT" >> {n}; [ "$QDONE_RECEIVE_COUNT" -ge 3 ]'
    rec, _ = _retry_run(sqs_broker, options, None, "r2", command, retries=2)
    assert n.read_text().split() == ["1", "2", "3"]
    delays = [e.delay for e in rec.of(JobRetry)]
    assert zero.asked == delays and delays[0] < delays[1]
    rec, _ = _retry_run(sqs_broker, options, None, "r1", "exit 1", retries=1)
    assert [(e.attempt, e.final) for e in rec.of(JobFailed)] == [(1, False), (2, True)]
    [m] = sqs_broker.receive(sqs_broker.get_queue_url(f"{prefix}r1_failed"), 10, 30, 1)
    assert m.body == "exit 1"


# -- visibility and several workers -------------------------------------------------


@pytest.mark.slow
def test_job_longer_than_visibility_is_not_run_twice(tmp_path: Path) -> None:
    from qdone.broker.sqlite import SqliteBroker

    options = Options()
    out = tmp_path / "runs"
    brokers = [SqliteBroker(tmp_path / "store.db") for _ in range(2)]
    put(brokers[0], options, "long", f"echo x >> {out}; sleep 5")
    settings = {"initial_visibility": 2, "visibility_margin": 1, "kill_after": 20}
    workers = [make(b, options, queues=("long",), wait_time=1, **settings)[0] for b in brokers]
    threads = [threading.Thread(target=w.run) for w in workers]
    for t in threads:
        t.start()
    deadline = threading.Event()
    deadline.wait(7.5)
    for w in workers:
        w.stop()
    for t in threads:
        t.join(10)
    assert out.read_text().split() == ["x"]
    assert counts(brokers[0], brokers[0].get_queue_url("qdone_long")) == (0, 0)
    for b in brokers:
        b.close()


@pytest.mark.slow
def test_several_workers_on_one_store_never_run_twice(tmp_path: Path) -> None:
    from qdone.broker.sqlite import SqliteBroker

    options = Options()
    first = SqliteBroker(tmp_path / "store.db")
    out = tmp_path / "runs"
    for i in range(120):
        put(first, options, "many", f"echo {i} >> {out}")
    brokers = [first] + [SqliteBroker(tmp_path / "store.db") for _ in range(3)]
    recs: list[Recorder] = []
    threads = []
    for b in brokers:
        w, rec = make(b, options, queues=("many",), drain=True, wait_time=1, concurrency=3)
        recs.append(rec)
        threads.append(threading.Thread(target=w.run))
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    lines = out.read_text().split()
    assert sorted(lines, key=int) == [str(i) for i in range(120)]
    assert sum(len(r.of(JobSucceeded)) for r in recs) == 120
    for b in brokers:
        b.close()


# -- drain and receiving as slots free (issue 3 follow-up) ----------------------------


class ReceiveLog:
    """Wraps ``broker.receive``: the wait of each call, and how many messages the
    worker held (received, job not yet ended) when it asked for ``n`` more. A job
    is reported after the next job of its thread has started, so ends are counted
    where ``Job.wait`` returns."""

    def __init__(self, broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
        self.waits: list[float] = []
        self.asked: list[tuple[int, int]] = []  # (held, n)
        self._ended = 0
        self._received = 0
        self._lock = threading.Lock()
        self._original = broker.receive
        broker.receive = self  # type: ignore[method-assign]
        wait = Job.wait

        def counted(job: Job) -> JobResult:
            result = wait(job)
            with self._lock:
                self._ended += 1
            return result

        monkeypatch.setattr(Job, "wait", counted)

    def __call__(self, url: str, n: int, visibility: int, wait: float) -> Any:
        with self._lock:
            self.asked.append((self._received - self._ended, n))
            self.waits.append(wait)
        messages = self._original(url, n, visibility, wait)
        with self._lock:
            self._received += len(messages)
        return messages


def test_drain_polls_briefly_so_it_ends_soon_after_the_last_job(
    broker: Broker, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = Options(prefix=prefix)
    for name in ("da", "db", "dc"):
        put(broker, options, name, "true")
    worker, rec = make(broker, options, queues=("d*",), drain=True, wait_time=20, concurrency=2)
    log = ReceiveLog(broker, monkeypatch)
    worker.run()
    assert len(rec.of(JobSucceeded)) == 3
    # No receive waits longer than the drain's check (1 s on SQS, 0 on SQLite), so
    # none is left in flight, for up to 20 s, once the last job has ended.
    assert max(log.waits) == (1 if broker.service == "SQS" else 0)


def test_drain_waits_for_a_delayed_message(sqlite_broker: Broker) -> None:
    options = Options()
    enqueue(sqlite_broker, options, QueueOptions(), "late", "true", SendSettings(delay=2))
    rec = drain(sqlite_broker, options, "late", wait_time=1)
    assert len(rec.of(JobSucceeded)) == 1
    assert counts(sqlite_broker, sqlite_broker.get_queue_url("qdone_late")) == (0, 0)


def test_drain_runs_what_a_job_enqueues_on_a_queue_seen_empty(
    sqlite_broker: Broker, sqlite_url: str, tmp_path: Path
) -> None:
    options = Options()
    put(sqlite_broker, options, "chain_b", "true")
    out = tmp_path / "ran"
    follow_up = f"echo b >> {out}"
    put(
        sqlite_broker,
        options,
        "chain_a",
        f"sleep 0.5; QDONE_BROKER={sqlite_url} qdone enqueue chain_b '{follow_up}'",
    )
    rec = drain(sqlite_broker, options, "chain_*", concurrency=2, wait_time=5)
    assert out.read_text().split() == ["b"]
    assert len(rec.of(JobSucceeded)) == 3


def test_receives_as_slots_free_never_exceed_them(
    sqlite_broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = Options()
    for i in range(40):
        put(sqlite_broker, options, "free", f"exit {int(i % 7 == 0)}")
    worker, rec = make(
        sqlite_broker,
        options,
        queues=("free",),
        drain=True,
        wait_time=0,
        concurrency=3,
        retry_delay=0,
    )
    log = ReceiveLog(sqlite_broker, monkeypatch)
    worker.run()
    assert len(rec.of(JobSucceeded)) + len(rec.of(JobFailed)) >= 40
    assert all(held + n <= 3 for held, n in log.asked), log.asked
    assert any(n == 1 for _, n in log.asked[1:])  # a slot freed is filled at once
