"""The worker through a faulty network: the fault proxy between the worker and moto.

Jobs are enqueued directly on moto; the worker (in-process, so its visibility
timeouts can be made short) reaches moto only through the proxy.

Each job records its run in one log file, each line appended by one ``O_APPEND``
write: ``S i job attempt`` as it starts and ``E i job attempt rc`` as it ends
(``attempt`` is ``QDONE_RECEIVE_COUNT``). The order of the lines is the order of
those events, so two runs of one message overlapped (the message ran twice while
the worker held it) exactly when the second's ``S`` comes before the first's
``E``: no clock is needed.

Faults are drawn from one random sequence per API action (``per_action``). A
worker with one queue receives from one poller thread and sends deletes and
visibility changes from its acker thread, so the n-th call of each action meets
the same fault on every run, whatever the threads' interleaving.
"""

from __future__ import annotations

import io
import itertools
import json
import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from qdone.batchfile import BatchLine
from qdone.broker.sqs import SqsBroker
from qdone.cli.worker import WorkerView
from qdone.config import Options, QueueOptions
from qdone.enqueue import enqueue_batch
from qdone.log import Output
from qdone.worker import Worker
from qdone.worker.events import Event, Summary, WorkerSettings

from .conftest import ProxyFactory
from .proxy import ALL_FAULTS, NO_FAULTS, Fault, FaultPlan, FaultProxy

FAULT_RATE = 0.10
WORKER_CALLS = ("ReceiveMessage", "DeleteMessageBatch", "ChangeMessageVisibilityBatch")


def per_action(action: str, _body: bytes) -> str:
    return action


# -- what the jobs record ----------------------------------------------------------


def job(log: Path, i: int, work: str = "true") -> str:
    """Job ``i``: logs its start, does ``work``, logs its end and exit code."""
    tag = f"{i} $QDONE_JOB_ID $QDONE_RECEIVE_COUNT"
    return f'echo "S {tag}" >> {log}; {work}; rc=$?; echo "E {tag} $rc" >> {log}; exit $rc'


def fails_first_run(marks: Path, i: int) -> str:
    """Work that fails on the job's first run only (whatever its receive count)."""
    return f"[ -e {marks / str(i)} ] || {{ : > {marks / str(i)}; false; }}"


@dataclass
class Run:
    index: int
    job: str  # message id
    attempt: int  # receive count
    start: int  # line number of its S line
    end: int | None = None  # line number of its E line
    rc: int | None = None


def read_runs(log: Path) -> list[Run]:
    runs: dict[tuple[str, int], Run] = {}
    if not log.exists():
        return []
    for n, line in enumerate(log.read_text().splitlines()):
        kind, index, job_id, attempt, *rc = line.split()
        key = (job_id, int(attempt))
        if kind == "S":
            assert key not in runs, f"two runs of {job_id} with receive count {attempt}"
            runs[key] = Run(int(index), job_id, int(attempt), n)
        else:
            runs[key].end, runs[key].rc = n, int(rc[0])
    return list(runs.values())


def overlapping(runs: list[Run]) -> list[tuple[Run, Run]]:
    """Pairs of runs of one message where the second started before the first ended."""
    by_job: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        by_job[run.job].append(run)
    pairs = []
    for job_runs in by_job.values():
        job_runs.sort(key=lambda r: r.start)
        for a, b in itertools.pairwise(job_runs):
            if a.end is None or a.end > b.start:
                pairs.append((a, b))
    return pairs


def succeeded(runs: list[Run]) -> set[int]:
    return {r.index for r in runs if r.rc == 0}


# -- the worker, in a thread -------------------------------------------------------


class Events:
    """The worker's events, and its JSON lines as ``qdone worker`` prints them."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.out = io.StringIO()
        self._view = WorkerView(Output(verbose=False, json_lines=True, out=self.out), 30)

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        self._view(event)

    def of(self, kind: type[Event]) -> list[Event]:
        return [e for e in self.events if isinstance(e, kind)]

    def json(self, name: str) -> list[dict[str, object]]:
        lines = [json.loads(line) for line in self.out.getvalue().splitlines()]
        return [e for e in lines if e["event"] == name]


class Running:
    """``Worker.run()`` in a thread; ``stop()`` asks it to stop and checks it returned."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.summary: Summary | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="test-worker", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.summary = self.worker.run()
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def stop(self, timeout: float = 30) -> Summary:
        self.worker.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the worker did not stop"
        assert self.error is None, f"the worker crashed: {self.error!r}"
        assert self.summary is not None
        return self.summary


@pytest.fixture
def start_worker(prefix: str) -> Iterator[Callable[..., tuple[Running, Events]]]:
    """``start_worker(proxy, queue, **settings)``: a worker reaching moto through
    ``proxy``, running in a thread (stopped at the end of the test if still running)."""
    running: list[tuple[Running, SqsBroker]] = []

    def start(proxy: FaultProxy, queue: str, **settings: object) -> tuple[Running, Events]:
        broker = SqsBroker(region="us-east-1", endpoint_url=proxy.url)
        events = Events()
        worker = Worker(
            broker,
            Options(prefix=prefix),
            WorkerSettings(queues=(queue,), **settings),  # type: ignore[arg-type]
            on_event=events,
        )
        running.append((Running(worker), broker))
        return running[-1][0], events

    yield start
    for run, broker in running:
        if run.thread.is_alive():
            run.worker.kill()
            run.thread.join(30)
        broker.close()


def enqueue_jobs(
    moto: SqsBroker, prefix: str, queue: str, commands: list[str], retries: int
) -> None:
    lines = [BatchLine("jobs", n + 1, queue, c) for n, c in enumerate(commands)]
    outcome = enqueue_batch(moto, Options(prefix=prefix), QueueOptions(retries=retries), lines)
    assert (outcome.sent, outcome.failed) == (len(commands), [])


def counts(moto: SqsBroker, name: str) -> tuple[int, int]:
    """(visible, in flight) messages of queue ``name``, asked of moto directly."""
    a = moto.get_queue_attributes(
        moto.get_queue_url(name),
        ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )
    return int(a["ApproximateNumberOfMessages"]), int(a["ApproximateNumberOfMessagesNotVisible"])


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.2)


def fault_report(proxy: FaultProxy) -> str:
    stats = proxy.stats
    lines = [f"{stats.count()} of {sum(stats.requests.values())} requests faulted"]
    for action in sorted(stats.requests):
        kinds = ", ".join(
            f"{k.value} {stats.count(k, action)}" for k in ALL_FAULTS if stats.count(k, action)
        )
        lines.append(f"  {action}: {stats.requests[action]} requests; {kinds or 'no fault'}")
    return "\n".join(lines)


def planned(plan: FaultPlan, action: str, n: int) -> list[Fault | None]:
    """The faults the first ``n`` calls of ``action`` meet under ``plan`` (whose
    stream is ``per_action``), drawn by a proxy that is never started."""
    dry = FaultProxy("http://127.0.0.1:9", plan)
    return [dry._decide(action, b"") for _ in range(n)]


# Under this seed, of the first 200 receives only the 5th has its answer lost; the
# first 25 visibility changes and 30 deletes meet 5 and 6 faults. A message whose
# receive answer is lost twice uses up two receives: with ``--retries 1`` it would
# reach the failed queue unrun (the README says so); one loss is what is proven.
SEED = 1655
MAX_RECEIVES = 200


def assert_seed_loses_one_receive(plan: FaultPlan, proxy: FaultProxy) -> None:
    lost = [
        n
        for n, f in enumerate(planned(plan, "ReceiveMessage", MAX_RECEIVES))
        if f is Fault.RESET_AFTER
    ]
    assert lost == [4]
    assert proxy.stats.requests["ReceiveMessage"] < MAX_RECEIVES
    assert proxy.stats.count(Fault.RESET_AFTER, "ReceiveMessage") == 1


# -- the tests ---------------------------------------------------------------------

JOBS = 1_000
LONG = range(0, 500, 50)


@pytest.mark.slow
@pytest.mark.usefixtures("fast_moto_clock")
@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_worker_drains_through_faults_running_each_job_while_held_once(
    fault_proxy: ProxyFactory,
    sqs_broker: SqsBroker,
    start_worker: Callable[..., tuple[Running, Events]],
    prefix: str,
    tmp_path: Path,
) -> None:
    """1,000 jobs, 10% of the worker's calls faulted, every kind. Every 10th job
    fails its first run (its retry is a visibility change); ten run 9 s, so their
    messages stay hidden only if extended (twice). The queue has ``retries=2``: a job in the
    lost receive that also fails its first run still has an attempt left."""
    log, marks = tmp_path / "runs.log", tmp_path / "marks"
    marks.mkdir()

    def work(i: int) -> str:
        if i in LONG:
            return "sleep 9"
        return fails_first_run(marks, i) if i % 10 == 0 else "true"

    enqueue_jobs(sqs_broker, prefix, "wf", [job(log, i, work(i)) for i in range(JOBS)], 2)
    plan = FaultPlan.mixed(FAULT_RATE, seed=SEED, stream=per_action, latency=0.1)
    proxy = fault_proxy(plan)
    running, events = start_worker(
        proxy,
        "wf",
        concurrency=20,
        wait_time=1,
        retry_delay=0,
        initial_visibility=8,  # a lost receive's messages are back within 8 s
        visibility_margin=5,  # extended 3 s after the receive, then doubling
        flush_interval=0.5,
    )
    started = time.monotonic()
    wait_for(lambda: len(succeeded(read_runs(log))) == JOBS, 75, "every job to succeed")
    wait_for(lambda: counts(sqs_broker, f"{prefix}wf") == (0, 0), 20, "every delete")
    summary = running.stop()
    runs = read_runs(log)
    per_index = Counter(r.index for r in runs)
    scripted = {i for i in range(JOBS) if i % 10 == 0 and i not in LONG}
    # A job scripted to fail runs again after its retry's visibility change; should
    # that call's answer be lost, botocore resends it, and moto (unlike SQS) honours
    # the stale receipt even after the message was received again, which may add a
    # run. Any other rerun needs a delete that failed for good.
    reruns = sum(n - 1 for i, n in per_index.items() if i not in scripted)
    delete_warnings = [e for e in events.json("WARNING") if "delet" in str(e["message"])]
    print(fault_report(proxy))
    print(
        f"drained in {time.monotonic() - started:.1f} s: {summary}; {len(runs)} runs, "
        f"{reruns} reruns of jobs not scripted to fail; {len(delete_warnings)} delete warnings"
    )

    assert overlapping(runs) == []  # no message ran twice while held
    assert all(r.end is not None for r in runs)
    assert counts(sqs_broker, f"{prefix}wf_failed") == (0, 0)
    assert all(per_index[i] >= 2 for i in scripted)
    assert reruns <= 10 * len(delete_warnings), (reruns, delete_warnings)
    for action in WORKER_CALLS:
        assert proxy.stats.count(action=action) > 0, f"no {action} was faulted"
    assert {k for k in ALL_FAULTS if proxy.stats.count(k)} == set(ALL_FAULTS)
    # The lost receive: its messages came back and ran, on their second receive.
    assert_seed_loses_one_receive(plan, proxy)
    first_runs: dict[int, Run] = {}
    for run in sorted(runs, key=lambda r: r.start):
        first_runs.setdefault(run.index, run)
    assert any(r.attempt == 2 for r in first_runs.values())


@pytest.mark.slow
def test_a_delete_that_finally_fails_is_a_warning_and_the_job_runs_again(
    fault_proxy: ProxyFactory,
    sqs_broker: SqsBroker,
    start_worker: Callable[..., tuple[Running, Events]],
    prefix: str,
    tmp_path: Path,
) -> None:
    """Every DeleteMessageBatch fails until the jobs have run again: the worker
    tries each delete three times, reports each failed try as a WARNING, gives up
    and goes on; the messages come back when their visibility expires and run a
    second time (as the README warns)."""
    log, go = tmp_path / "runs.log", tmp_path / "go"
    # A second run waits for ``go``: its delete is not sent before the test says so.
    work = f'[ "$QDONE_RECEIVE_COUNT" -eq 1 ] || while [ ! -e {go} ]; do sleep 0.05; done'
    enqueue_jobs(sqs_broker, prefix, "wd", [job(log, i, work) for i in range(3)], 1)
    kinds = (Fault.HTTP_500, Fault.HTTP_503, Fault.RESET_BEFORE)  # none reaches moto
    proxy = fault_proxy(FaultPlan.mixed(1.0, kinds, actions={"DeleteMessageBatch"}))
    running, events = start_worker(
        proxy,
        "wd",
        concurrency=3,
        wait_time=1,
        initial_visibility=3,
        visibility_margin=1,
        flush_interval=0.2,
    )

    def failed_tries() -> list[str]:
        warnings = [str(e["message"]) for e in events.json("WARNING")]
        return [w for w in warnings if re.search(r": deleting \d+ messages failed: ", w)]

    def deletes_tried() -> int:  # messages, over every failed try
        return sum(int(re.findall(r"deleting (\d+)", w)[0]) for w in failed_tries())

    def ran_again() -> bool:
        return {r.index for r in read_runs(log) if r.attempt == 2} == {0, 1, 2}

    wait_for(ran_again, 30, "the jobs to run again")
    wait_for(lambda: deletes_tried() >= 3 * 3, 30, "three tries of each delete")
    tries, faulted = failed_tries(), proxy.stats.count(action="DeleteMessageBatch")
    proxy.plan = NO_FAULTS
    go.touch()
    wait_for(lambda: counts(sqs_broker, f"{prefix}wd") == (0, 0), 20, "the second deletes")
    summary = running.stop()
    runs = read_runs(log)
    assert sorted((r.index, r.attempt, r.rc) for r in runs) == [
        (i, attempt, 0) for i in range(3) for attempt in (1, 2)
    ]
    assert overlapping(runs) == []
    assert (summary.succeeded, summary.failed) == (6, 0)
    assert deletes_tried() == 3 * 3  # then given up: no fourth try
    given_up = [
        re.findall(r"gave up on (\d+) after 3 tries: their jobs will run again", w) for w in tries
    ]
    assert sum(int(n) for found in given_up for n in found) == 3  # each message, once
    assert len(events.json("WARNING")) == len(tries)  # and no other trouble
    assert faulted == 3 * len(tries)  # botocore tried each call three times
    assert counts(sqs_broker, f"{prefix}wd_failed") == (0, 0)


RETRY_JOBS = 300


@pytest.mark.slow
@pytest.mark.usefixtures("fast_moto_clock")
@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_retries_1_runs_every_job_despite_a_lost_receive(
    fault_proxy: ProxyFactory,
    sqs_broker: SqsBroker,
    start_worker: Callable[..., tuple[Running, Events]],
    prefix: str,
    tmp_path: Path,
) -> None:
    """Issue 6: 300 jobs under ``--retries 1``, 10% of all calls faulted. A lost
    receive answer uses up one of the two receives; its jobs still run, and none
    reaches the failed queue (counted on moto directly)."""
    log = tmp_path / "runs.log"
    enqueue_jobs(sqs_broker, prefix, "wr", [job(log, i) for i in range(RETRY_JOBS)], 1)
    plan = FaultPlan.mixed(FAULT_RATE, seed=SEED, stream=per_action)
    proxy = fault_proxy(plan)
    running, _events = start_worker(
        proxy, "wr", concurrency=10, wait_time=1, initial_visibility=4, visibility_margin=2
    )
    started = time.monotonic()
    wait_for(lambda: len(succeeded(read_runs(log))) == RETRY_JOBS, 40, "every job to succeed")
    wait_for(lambda: counts(sqs_broker, f"{prefix}wr") == (0, 0), 20, "every delete")
    summary = running.stop()
    runs = read_runs(log)
    print(fault_report(proxy))
    print(f"drained in {time.monotonic() - started:.1f} s: {summary}; {len(runs)} runs")
    assert counts(sqs_broker, f"{prefix}wr_failed") == (0, 0)
    assert overlapping(runs) == []
    assert_seed_loses_one_receive(plan, proxy)
    lost = sorted(r.index for r in runs if r.attempt == 2)
    assert lost, "no job ran on its second receive"
    assert all(per == 1 for per in Counter(r.index for r in runs).values())
