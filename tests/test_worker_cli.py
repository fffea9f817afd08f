"""``qdone worker`` black-box: the installed command as a subprocess, where
signals, process groups, TTYs and output streams matter."""

from __future__ import annotations

import json
import os
import pty
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

QDONE = shutil.which("qdone") or "qdone"


@pytest.fixture
def env(sqlite_url: str) -> dict[str, str]:
    return {**os.environ, "QDONE_BROKER": sqlite_url}


def qdone(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [QDONE, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def start(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [QDONE, "worker", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(check: Callable[[], bool], timeout: float = 15) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def enqueue(env: dict[str, str], queue: str, command: str, *extra: str) -> None:
    result = qdone(env, "enqueue", *extra, queue, command)
    assert result.returncode == 0, result.stderr


def queue_counts(env: dict[str, str], name: str) -> tuple[int, int]:
    from qdone.broker import parse_broker_url
    from qdone.broker.sqlite import SqliteBroker

    _, path = parse_broker_url(env["QDONE_BROKER"])
    assert path is not None
    broker = SqliteBroker(path)
    try:
        url = broker.get_queue_url(name)
        a = broker.get_queue_attributes(
            url, ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        )
    finally:
        broker.close()
    return int(a["ApproximateNumberOfMessages"]), int(a["ApproximateNumberOfMessagesNotVisible"])


def events(stdout: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


def test_json_lines_carry_the_documented_fields(env: dict[str, str]) -> None:
    enqueue(env, "js", "echo out; echo err >&2")
    enqueue(env, "js", "echo bad; exit 3")
    enqueue(env, "jr", "exit 1", "--retries", "1")
    result = qdone(env, "worker", "--drain", "-w", "0", "--retry-delay", "0", "js", "jr")
    assert result.returncode == 1, result.stderr  # jobs failed for good
    got = events(result.stdout)
    by = {e["event"]: e for e in got}
    assert all(isinstance(e["timestamp"], str) and e["timestamp"].endswith("Z") for e in got)
    assert by["LISTENING"]["queues"] == ["qdone_js", "qdone_jr"]
    ok = by["JOB_SUCCEEDED"]
    assert ok["command"] == "echo out; echo err >&2" and ok["stdout"] == "out\n"
    assert ok["stderr"] == "err\n" and isinstance(ok["duration"], float) and ok["job"]
    failed = [e for e in got if e["event"] == "JOB_FAILED"]
    bad = next(e for e in failed if e["queue"] == "qdone_js")
    assert bad["exitCode"] == 3 and bad["stdout"] == "bad\n" and "stderr" not in bad
    assert bad["errorMessage"] == "exit code 3" and "killSignal" not in bad
    assert bad["attempt"] == 1 and bad["maxAttempts"] == 1 and bad["willRetry"] is False
    retried = [e for e in failed if e["queue"] == "qdone_jr"]
    assert [(e["attempt"], e["willRetry"]) for e in retried] == [(1, True), (2, False)]
    assert by["JOB_RETRY"]["attempt"] == 1 and by["JOB_RETRY"]["delay"] == 0
    summary = by["WORKER_SUMMARY"]
    assert (summary["ran"], summary["succeeded"], summary["failed"]) == (4, 1, 3)
    assert "Ran 4 jobs: 1 succeeded, 3 failed" in result.stderr
    assert queue_counts(env, "qdone_jr_failed") == (1, 0)


def test_verbose_on_a_tty_prints_human_lines(env: dict[str, str]) -> None:
    enqueue(env, "tty", "echo hello")
    enqueue(env, "tty", "exit 2")
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [QDONE, "worker", "--drain", "-w", "0", "tty"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=follower,
        text=True,
    )
    os.close(follower)
    out, _ = proc.communicate(timeout=30)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    err = b"".join(chunks).decode()
    assert out == ""  # no JSON on a TTY
    assert "Looking for work on qdone_tty" in err
    assert "SUCCESS" in err and "hello" in err and "FAILED" in err and "code: 2" in err
    assert "\033[" in err  # colour
    assert "Ran 2 jobs: 1 succeeded, 1 failed" in err
    assert "Used " in err and "ReceiveMessage" in err


def test_archive_prints_commands_and_deletes(env: dict[str, str], tmp_path: Path) -> None:
    commands = [f"touch {tmp_path / str(i)}" for i in range(3)]
    for c in commands:
        enqueue(env, "arc", c)
    result = qdone(env, "worker", "--archive", "--drain", "-w", "0", "arc")
    assert result.returncode == 0
    assert result.stdout.splitlines() == commands
    assert not any((tmp_path / str(i)).exists() for i in range(3))
    assert queue_counts(env, "qdone_arc") == (0, 0)


@pytest.mark.parametrize(
    "args",
    [
        ["--wait-time", "21", "q"],
        ["--kill-after", "0", "q"],
        ["--concurrency", "0", "q"],
        ["--broker", "sqs", "--drain", "--wait-time", "0", "q"],
    ],
)
def test_usage_errors(env: dict[str, str], args: list[str]) -> None:
    result = qdone(env, "worker", *args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_missing_queue_warns_and_drain_exits(env: dict[str, str]) -> None:
    result = qdone(env, "worker", "--drain", "-w", "0", "nope")
    assert result.returncode == 0
    assert "nope" in result.stdout and "WARNING" in result.stdout
    assert "Ran 0 jobs" in result.stderr


@pytest.fixture
def marks(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path


def test_kill_after_kills_a_grandchild_that_traps_sigterm(env: dict[str, str], marks: Path) -> None:
    pidfile = marks / "pid"
    job = (
        f"sh -c 'trap \"\" TERM; echo $$ > {pidfile}; while :; do sleep 0.1; done' & "
        "trap '' TERM; wait"
    )
    enqueue(env, "ka", job)
    started = time.monotonic()
    result = qdone(env, "worker", "--drain", "-w", "0", "-k", "1", "ka")
    assert time.monotonic() - started < 15
    [failed] = [e for e in events(result.stdout) if e["event"] == "JOB_FAILED"]
    assert failed["timedOut"] is True and failed["killSignal"] == "SIGKILL"
    wait_for(lambda: pid_gone(int(pidfile.read_text())), 5)
    assert queue_counts(env, "qdone_ka_failed") == (1, 0)


def test_sigterm_mid_job_finishes_it_and_deletes(env: dict[str, str], marks: Path) -> None:
    enqueue(env, "st", f"touch {marks / 'started'}; sleep 2; touch {marks / 'done'}")
    enqueue(env, "st", f"touch {marks / 'second'}")
    proc = start(env, "-w", "1", "st")
    wait_for((marks / "started").exists)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert (marks / "done").exists()
    assert not (marks / "second").exists()  # no new work after the signal
    assert [e["event"] for e in events(out)][-2:] == ["JOB_SUCCEEDED", "WORKER_SUMMARY"]
    assert queue_counts(env, "qdone_st") == (1, 0)  # only the one never received


def test_idle_worker_stops_soon_after_sigterm(env: dict[str, str]) -> None:
    """On SQLite no receive waits more than a second, so a stop is seen within one.
    (On SQS a long poll in flight is waited for and its messages run: see
    tests/test_worker_queues.py.)"""
    qdone(env, "enqueue", "fl", "true")
    assert qdone(env, "worker", "--drain", "-w", "0", "fl").returncode == 0
    proc = start(env, "-w", "20", "fl")
    wait_for(lambda: proc.stdout is not None and bool(proc.stdout.readline()))  # LISTENING
    time.sleep(0.5)  # a receive is waiting
    asked = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert time.monotonic() - asked < 5  # a hang guard: it used to sit out the 20 s wait


def test_second_signal_kills_the_jobs(env: dict[str, str], marks: Path) -> None:
    pidfile = marks / "pid"
    enqueue(env, "ss", f"trap '' TERM INT; echo $$ > {pidfile}; sleep 60 & wait; sleep 60")
    proc = start(env, "-w", "1", "-k", "120", "ss")
    wait_for(pidfile.exists)
    wait_for(lambda: pidfile.read_text().strip() != "")
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert proc.poll() is None  # still waiting for the job
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, _err = proc.communicate(timeout=15)
    assert proc.returncode == 130
    assert time.monotonic() - started < 5
    wait_for(lambda: pid_gone(int(pidfile.read_text())), 5)
    assert "WORKER_SUMMARY" in out
