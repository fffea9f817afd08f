"""The public Python API, ``qdone.Client``: on both brokers (SQLite in a temp dir,
SQS on the moto server), in-process where it can be, in a subprocess where
imports, signals or fork matter."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import qdone

from .cli_helpers import run_qdone

HERE = Path(__file__).parent
DONE_SCRIPT = HERE / "api" / "done_script.py"


@pytest.fixture(params=["sqlite", "sqs"])
def target(request: pytest.FixtureRequest, tmp_path: Path, prefix: str) -> dict[str, Any]:
    """Client arguments for each broker; a fresh prefix, so tests share no queue."""
    if request.param == "sqlite":
        return {"broker": f"sqlite://{tmp_path / 'store.db'}", "prefix": prefix}
    endpoint = request.getfixturevalue("moto_endpoint")
    return {"broker": "sqs", "endpoint_url": endpoint, "prefix": prefix}


@pytest.fixture
def client(target: dict[str, Any]) -> Iterator[qdone.Client]:
    with qdone.Client(**target) as c:
        yield c


@pytest.fixture
def sqlite_client(tmp_path: Path) -> Iterator[qdone.Client]:
    with qdone.Client(f"sqlite://{tmp_path / 'store.db'}") as c:
        yield c


def drain(client: qdone.Client, queue: str, **kw: Any) -> tuple[qdone.Summary, list[str]]:
    """Run every job of ``queue`` with a handler; the summary and the bodies seen."""
    bodies: list[str] = []
    lock = threading.Lock()

    def handle(job: qdone.Job) -> None:
        with lock:
            bodies.append(job.body)

    kw.setdefault("wait_time", 1)
    summary = client.work([queue], handler=handle, drain=True, **kw)
    return summary, bodies


def python(code: str, *args: str, env: dict[str, str] | None = None) -> str:
    """Run ``code`` in a fresh interpreter; its stdout (it must exit 0)."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, **(env or {})},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


# -- the "done when" --------------------------------------------------------


# The SQS run is slow where moto is: 1,000 messages on one moto queue, under load.
SLOW_ON_SQS = ["sqlite", pytest.param("sqs", marks=[pytest.mark.slow, pytest.mark.timeout(600)])]


@pytest.mark.parametrize("target", SLOW_ON_SQS, indirect=True)
def test_script_enqueues_1000_runs_them_and_finds_999_succeeded_1_failed(
    target: dict[str, Any],
) -> None:
    args = ["--broker", target["broker"], "--prefix", target["prefix"]]
    if "endpoint_url" in target:
        args += ["--endpoint-url", target["endpoint_url"]]
    done = subprocess.run(
        [sys.executable, str(DONE_SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=580,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "999 succeeded, 1 failed\n"


def test_the_script_passes_mypy_strict(tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path), str(DONE_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


# Stock moto scans every message of a queue on each send and receive, so 4,000
# messages on one moto queue take minutes: the SQS run sends 8 x 50 through the same
# shared client, the SQLite run the full 8 x 500.
@pytest.mark.parametrize(("target", "calls"), [("sqlite", 500), ("sqs", 50)], indirect=["target"])
def test_enqueue_from_8_threads_500_calls_each_every_job_arrives_once(
    client: qdone.Client, calls: int
) -> None:
    def send(thread: int) -> None:
        for n in range(calls):
            client.enqueue("many", f"{thread}-{n}")

    threads = [threading.Thread(target=send, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    summary, bodies = drain(client, "many", concurrency=10)
    assert summary.succeeded == 8 * calls
    seen = collections.Counter(bodies)
    assert set(seen) == {f"{t}-{n}" for t in range(8) for n in range(calls)}
    assert set(seen.values()) == {1}


def test_importing_and_enqueueing_on_sqlite_loads_neither_boto3_nor_the_worker() -> None:
    out = python(
        """
        import sys
        import qdone
        qdone.Client().enqueue('q', 'true')
        heavy = ('boto3', 'botocore', 'click', 'qdone.worker', 'qdone.monitor', 'qdone.cache')
        print(sorted(m for m in sys.modules if m.startswith(heavy)))
        """
    )
    assert out == "[]\n"


# -- enqueue, enqueue_batch ---------------------------------------------------------


def test_enqueue_returns_the_message_id_and_creates_the_pair(target: dict[str, Any]) -> None:
    created: list[str] = []
    with qdone.Client(**target, on_create=created.append) as client:
        job_id = client.enqueue("render", "echo hi", retries=2)
        client.enqueue("render", "echo again")
        ids: list[str] = []
        client.work("render", handler=lambda job: ids.append(job.id), drain=True, wait_time=1)
    prefix = target["prefix"]
    assert created == [f"{prefix}render_failed", f"{prefix}render"]
    assert job_id in ids and len(ids) == 2


def test_enqueue_batch_counts_per_queue_and_checks_everything_first(
    client: qdone.Client,
) -> None:
    result = client.enqueue_batch([("a", "echo 1"), ("b", "echo 2"), ("a", "echo 3")])
    prefix = client.options.prefix
    assert (result.enqueued, result.failed, result.ok) == (3, [], True)
    assert result.queues == {f"{prefix}a": 2, f"{prefix}b": 1}
    with pytest.raises(qdone.UsageError, match=r"^jobs\[1\]: queue name 'bad!'"):
        client.enqueue_batch([("c", "echo 1"), ("bad!", "echo 2")])
    with pytest.raises(qdone.UsageError, match=r"^jobs\[0\]: the command is empty"):
        client.enqueue_batch([("c", "  ")])
    with pytest.raises(qdone.UsageError, match=r"^jobs\[1\]: \('c',\) is not a \(queue, command\)"):
        client.enqueue_batch([("c", "x"), ("c",)])  # type: ignore[list-item]
    assert [r.name for r in client.counts("*").rows] == ["a", "b"]  # nothing sent to c


def test_enqueue_batch_on_fifo_keeps_order(sqlite_client: qdone.Client) -> None:
    result = sqlite_client.enqueue_batch([("f", f"echo {n}") for n in range(25)], fifo=True)
    assert result.enqueued == 25
    _, bodies = drain(sqlite_client, "f", fifo=True, wait_time=0)
    assert bodies == [f"echo {n}" for n in range(25)]


# -- work -----------------------------------------------------------------------------


def test_shell_jobs_run_as_the_worker_runs_them(sqlite_client: qdone.Client) -> None:
    sqlite_client.enqueue("sh", "exit 0")
    sqlite_client.enqueue("sh", "echo oops >&2; exit 3")
    events: list[qdone.Event] = []
    summary = sqlite_client.work("sh", drain=True, wait_time=0, on_event=events.append)
    assert (summary.ran, summary.succeeded, summary.failed) == (2, 1, 1)
    [failed] = [e for e in events if isinstance(e, qdone.JobFailed)]
    assert failed.result.exit_code == 3 and failed.result.stderr == "oops\n"
    assert not failed.result.handler


def test_a_raising_handler_is_retried_then_lands_in_the_failed_queue(
    client: qdone.Client,
) -> None:
    client.enqueue("flaky", "once", retries=1)
    client.enqueue("flaky", "never", retries=1)
    attempts: list[tuple[str, int, int | None]] = []

    def handle(job: qdone.Job) -> None:
        attempts.append((job.body, job.attempt, job.max_attempts))
        if job.body == "never" or job.attempt == 1:
            raise RuntimeError(f"attempt {job.attempt} of {job.body}")

    events: list[qdone.Event] = []
    summary = client.work(
        "flaky", handler=handle, drain=True, wait_time=1, retry_delay=0, on_event=events.append
    )
    assert sorted(attempts) == [("never", 1, 2), ("never", 2, 2), ("once", 1, 2), ("once", 2, 2)]
    assert (summary.succeeded, summary.failed, summary.retried) == (1, 3, 2)
    failed = [e for e in events if isinstance(e, qdone.JobFailed)]
    assert {(e.command, e.attempt, e.final) for e in failed} == {
        ("once", 1, False),
        ("never", 1, False),
        ("never", 2, True),
    }
    last = next(e for e in failed if e.final)
    assert last.result.exception == "RuntimeError: attempt 2 of never"
    assert "Traceback" in last.result.stderr
    [row] = client.counts("flaky").rows
    assert row.failed == qdone.Counts(visible=1)


def test_a_handler_past_kill_after_is_reported_and_counts_as_failed(
    sqlite_client: qdone.Client,
) -> None:
    sqlite_client.enqueue("slow", "wait for it")
    overdue = threading.Event()
    events: list[qdone.Event] = []

    def on_event(event: qdone.Event) -> None:
        events.append(event)
        if isinstance(event, qdone.JobOverdue):
            overdue.set()

    def handle(job: qdone.Job) -> None:
        assert overdue.wait(30), "the overdue report never came"

    summary = sqlite_client.work(
        "slow", handler=handle, kill_after=1, drain=True, wait_time=0, on_event=on_event
    )
    assert summary.failed == 1 and summary.succeeded == 0
    [report] = [e for e in events if isinstance(e, qdone.JobOverdue)]
    assert (report.command, report.kill_after) == ("wait for it", 1)
    [failed] = [e for e in events if isinstance(e, qdone.JobFailed)]
    assert failed.result.timed_out and failed.result.handler and failed.final
    [row] = sqlite_client.counts("slow").rows
    assert row.failed == qdone.Counts(visible=1)


def test_stop_from_another_thread_lets_the_running_job_finish(
    sqlite_client: qdone.Client,
) -> None:
    for n in range(5):
        sqlite_client.enqueue("stoppable", f"job {n}")
    waiting = threading.Event()

    def handle(job: qdone.Job) -> None:
        threading.Thread(target=sqlite_client.stop).start()
        assert waiting.wait(30), "stop() never took effect"

    def on_event(event: qdone.Event) -> None:
        if isinstance(event, qdone.Waiting):
            waiting.set()

    summary = sqlite_client.work("stoppable", handler=handle, wait_time=0, on_event=on_event)
    assert (summary.ran, summary.succeeded) == (1, 1)
    [row] = sqlite_client.counts("stoppable").rows
    assert row.counts == qdone.Counts(visible=4)


def test_stop_from_a_signal_handler_finishes_the_job_and_returns(tmp_path: Path) -> None:
    code = """
        import json, signal, sys, time
        import qdone

        stopping = []
        client = qdone.Client(sys.argv[1])
        for n in range(3):
            client.enqueue("sig", f"job {n}")

        def on_event(event):
            if isinstance(event, qdone.Waiting):  # the stop took effect
                stopping.append(event)

        def handle(job):
            print("started", flush=True)
            for _ in range(3000):
                if stopping:
                    return
                time.sleep(0.01)
            raise RuntimeError("the stop never came")

        signal.signal(signal.SIGTERM, lambda signum, frame: client.stop())
        summary = client.work("sig", handler=handle, wait_time=0, on_event=on_event)
        print(json.dumps([summary.ran, summary.succeeded]))
    """
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), f"sqlite://{tmp_path / 's.db'}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "started\n"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert json.loads(out) == [1, 1]


def test_a_client_used_after_fork_opens_its_own_broker(target: dict[str, Any]) -> None:
    code = """
        import json, os, sys
        import qdone

        client = qdone.Client(**json.loads(sys.argv[1]))
        client.enqueue("forked", "parent 0")
        first = client.broker
        pid = os.fork()
        if pid == 0:
            try:
                for n in range(20):
                    client.enqueue("forked", f"child {n}")
                ok = client.broker is not first
            finally:
                os._exit(0 if ok else 1)
        for n in range(1, 21):
            client.enqueue("forked", f"parent {n}")
        _, status = os.waitpid(pid, 0)
        bodies = []
        client.work("forked", handler=lambda job: bodies.append(job.body), drain=True, wait_time=1)
        code = os.waitstatus_to_exitcode(status)
        print(json.dumps([code, client.broker is first, sorted(bodies)]))
    """
    code_, same, bodies = json.loads(python(code, json.dumps(target)))
    assert (code_, same) == (0, True)
    assert bodies == sorted([f"parent {n}" for n in range(21)] + [f"child {n}" for n in range(20)])


# -- options and errors: the command's ------------------------------------------------


@pytest.mark.parametrize(
    ("call", "args"),
    [
        (lambda c: c.enqueue("q", "true", delay=901), ["enqueue", "q", "true", "--delay", "901"]),
        (
            lambda c: c.enqueue("q.fifo", "true", delay=5),
            ["enqueue", "q.fifo", "true", "--delay", "5"],
        ),
        (lambda c: c.enqueue("a/b", "true"), ["enqueue", "a/b", "true"]),
        (lambda c: c.enqueue("q", "true", group_id="g"), ["enqueue", "q", "true", "-g", "g"]),
    ],
)
def test_bad_values_raise_the_message_the_command_prints(
    sqlite_client: qdone.Client, call: Any, args: list[str]
) -> None:
    with pytest.raises(qdone.UsageError) as raised:
        call(sqlite_client)
    done = run_qdone(*args, "--broker", sqlite_client.options.broker)
    assert done.returncode == qdone.UsageError.exit_code
    assert done.stderr == f"qdone: error: {raised.value}\n"


def test_bad_broker_settings_raise_config_errors(tmp_path: Path) -> None:
    with pytest.raises(qdone.ConfigError, match="unknown broker 'redis'"):
        qdone.Client("redis")
    with pytest.raises(qdone.ConfigError, match="--region applies only to --broker sqs"):
        qdone.Client(f"sqlite://{tmp_path / 's.db'}", region="eu-west-1")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"concurrency": 0}, "--concurrency must be 1 to 1000, not 0"),
        ({"kill_after": 0}, "--kill-after must be 1 to 43200, not 0"),
        ({"wait_time": 21}, "--wait-time must be 0 to 20, not 21"),
        ({"retry_delay": -1}, "--retry-delay must be 0 to 43200, not -1"),
        ({"concurrency": "4"}, "--concurrency must be a whole number, not '4'"),
    ],
)
def test_bad_work_options_raise_before_anything_runs(
    sqlite_client: qdone.Client, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(qdone.UsageError, match=f"^{message}$"):
        sqlite_client.work("q", **kwargs)


def test_drain_without_wait_is_refused_on_sqs(moto_endpoint: str) -> None:
    client = qdone.Client("sqs", endpoint_url=moto_endpoint)
    with pytest.raises(qdone.UsageError, match="--drain needs --wait-time above 0 on SQS"):
        client.work("q", drain=True, wait_time=0)


def test_a_closed_client_says_so(tmp_path: Path) -> None:
    client = qdone.Client(f"sqlite://{tmp_path / 's.db'}")
    client.close()
    client.close()
    with pytest.raises(qdone.QdoneError, match="closed"):
        client.enqueue("q", "true")


def test_public_names_are_exported() -> None:
    assert set(qdone.__all__) <= set(dir(qdone))
    for name in qdone.__all__:
        getattr(qdone, name)
    assert issubclass(qdone.QueueNotFound, qdone.BrokerError)
    assert issubclass(qdone.BrokerError, qdone.QdoneError)


def test_a_stop_while_no_work_runs_ends_the_next_work_at_once(
    sqlite_client: qdone.Client,
) -> None:
    sqlite_client.enqueue("later", "true")
    sqlite_client.stop()  # e.g. a SIGTERM while work() was starting
    summary = sqlite_client.work("later", wait_time=0)  # no drain: only a stop ends it
    assert summary.ran == 0
    _, bodies = drain(sqlite_client, "later", wait_time=0)
    assert bodies == ["true"]  # the stop was used up


def test_external_dedup_skips_a_duplicate_inside_its_window(sqlite_client: qdone.Client) -> None:
    first = sqlite_client.send("once", "echo hi", external_dedup=True)
    again = sqlite_client.send("once", "echo hi", external_dedup=True)
    assert first.message_id and not first.skipped
    assert (again.message_id, again.skipped, again.dedup_id) == ("", True, first.dedup_id)
    assert sqlite_client.enqueue("once", "echo hi", external_dedup=True) == ""
    result = sqlite_client.enqueue_batch(
        [("once", "echo hi"), ("once", "echo new")], external_dedup=True
    )
    assert (result.enqueued, result.skipped) == (1, 1)
    with pytest.raises(qdone.UsageError, match="either --deduplication-id or --dedup-id-per"):
        sqlite_client.send("once", "x", deduplication_id="d", dedup_id_per_message=True)


# Names whose use in a command would be a second code path beside the Client's.
ENGINE = {
    "qdone.enqueue": {"enqueue", "enqueue_batch"},
    "qdone.worker": {"Worker"},
    "qdone.worker.loop": {"Worker"},
    "qdone.monitor": {"take_snapshot", "save"},
    "qdone.broker": {"open_broker"},
}


@pytest.mark.parametrize("command", ["enqueue", "worker", "monitor"])
def test_the_commands_run_through_the_client(command: str) -> None:
    import ast

    path = HERE.parent / "src" / "qdone" / "cli" / f"{command}.py"
    used = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module is not None:
            module = "qdone." + node.module if node.level == 2 else node.module
            used += [alias.name for alias in node.names if alias.name in ENGINE.get(module, ())]
    assert used == []


def test_kill_ends_the_running_shell_jobs_and_work_returns(sqlite_client: qdone.Client) -> None:
    sqlite_client.enqueue("long", "sleep 60")

    def on_event(event: qdone.Event) -> None:
        if isinstance(event, qdone.JobStarted):
            sqlite_client.kill()

    summary = sqlite_client.work("long", wait_time=0, on_event=on_event)
    assert summary.killed and summary.succeeded == 0
