"""``qdone failed``, ``qdone requeue`` and the failed-queue workflow, black-box: the
installed command as a subprocess, on the SQLite store and on SQS (moto)."""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import time
from pathlib import Path

import pytest

QDONE = shutil.which("qdone") or "qdone"
BOUND = 30.0  # seconds the failed-queue worker may take (the bound)


@pytest.fixture(params=["sqlite", "sqs"])
def env(request: pytest.FixtureRequest, tmp_path: Path, prefix: str) -> dict[str, str]:
    base = {**os.environ, "QDONE_PREFIX": prefix}
    if request.param == "sqlite":
        return {**base, "QDONE_BROKER": f"sqlite://{tmp_path / 'store.db'}"}
    endpoint = request.getfixturevalue("moto_endpoint")
    return {**base, "QDONE_BROKER": "sqs", "QDONE_ENDPOINT_URL": endpoint}


def qdone(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [QDONE, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def ok(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    result = qdone(env, *args)
    assert result.returncode == 0, result.stderr
    return result


def events(stdout: str, name: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    return [e for e in lines if e["event"] == name]


@pytest.mark.parametrize("fifo", [False, True], ids=["standard", "fifo"])
def test_the_retry_workflow_runs_the_job_once_more_and_ends(
    env: dict[str, str], tmp_path: Path, fifo: bool, prefix: str
) -> None:
    """enqueue q false; worker q --drain; worker q_failed --include-failed --drain."""
    flag = ["--fifo"] if fifo else []
    log = tmp_path / "runs"
    ok(env, "enqueue", *flag, "q", f"echo x >> {log}; false")
    first = qdone(env, "worker", *flag, "q", "--drain")
    assert first.returncode == 1, first.stderr  # a job failed for good
    assert log.read_text().split() == ["x"]
    started = time.monotonic()
    second = qdone(env, "worker", *flag, "q_failed", "--include-failed", "--drain", timeout=BOUND)
    assert time.monotonic() - started < BOUND
    assert log.read_text().split() == ["x", "x"]  # exactly once more
    # It failed again, but stays in the failed queue (no redrive policy there): not
    # a failure for good, so --drain exits 0, as it would for a job it retries.
    assert second.returncode == 0, second.stderr
    [failed] = events(second.stdout, "JOB_FAILED")
    assert failed["willRetry"] is False and failed["returnsIn"] == 30
    assert "maxAttempts" not in failed
    assert events(second.stdout, "JOB_RETRY") == []
    assert "Ran 1 job: 0 succeeded, 1 failed" in second.stderr
    # Still in the failed queue (hidden for its visibility timeout), not lost.
    listing = ok(env, "monitor", "q" + (".fifo" if fifo else ""), "--once", "--json")
    [row] = events(listing.stdout, "QUEUE_COUNTS")
    assert (row["visible"], row["in_flight"]) == (0, 0)
    assert (row["failed_visible"], row["failed_in_flight"]) == (0, 1)


def test_failed_and_requeue_print_jobs_and_exact_summaries(
    env: dict[str, str], tmp_path: Path, prefix: str
) -> None:
    ok(env, "enqueue", "q", "exit 3")
    ok(env, "enqueue", "q", "exit 4")
    qdone(env, "worker", "q", "--drain")
    listed = ok(env, "failed", "q")
    jobs = events(listed.stdout, "FAILED_JOB")
    assert sorted(str(j["command"]) for j in jobs) == ["exit 3", "exit 4"]
    assert all(j["queue"] == f"{prefix}q_failed" and "enqueued" in j for j in jobs)
    assert len(events(ok(env, "failed", "q", "--limit", "1").stdout, "FAILED_JOB")) == 1
    dry = ok(env, "requeue", "q", "--dry-run")
    assert f"Would requeue 2 jobs from {prefix}q_failed to {prefix}q" in dry.stderr
    one = ok(env, "requeue", "q", "--limit", "1")
    assert f"Requeued 1 job from {prefix}q_failed to {prefix}q\n" in one.stderr
    [event] = events(one.stdout, "REQUEUED")
    assert (event["from"], event["to"], event["requeued"]) == (f"{prefix}q_failed", f"{prefix}q", 1)
    rest = ok(env, "requeue", "q*")
    assert f"Requeued 1 job from {prefix}q_failed to {prefix}q" in rest.stderr
    ran = qdone(env, "worker", "q", "--drain")
    assert "Ran 2 jobs: 0 succeeded, 2 failed" in ran.stderr


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["requeue", "nosuch"], "queue {p}nosuch_failed does not exist (from 'nosuch')"),
        (["failed", "nosuch"], "queue {p}nosuch_failed does not exist (from 'nosuch')"),
        (["requeue", "zzz*"], "no failed queue matches 'zzz*'"),
        (["requeue", "q", "--from-dead"], "queue {p}q_dead does not exist (from 'q')"),
        (["requeue", "q", "--limit", "0"], "Invalid value for '--limit'"),
        (["requeue", "bad!name"], "queue names may hold only letters"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(
    env: dict[str, str], prefix: str, args: list[str], text: str
) -> None:
    ok(env, "enqueue", "q", "exit 3")
    qdone(env, "worker", "q", "--drain")
    result = qdone(env, *args)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("qdone: error: ") and text.format(p=prefix) in line
    assert "Traceback" not in result.stderr
    jobs = events(ok(env, "failed", "q").stdout, "FAILED_JOB")
    assert [j["command"] for j in jobs] == ["exit 3"]


def test_failed_prints_one_line_per_job_on_a_terminal(tmp_path: Path) -> None:
    env = {**os.environ, "QDONE_BROKER": f"sqlite://{tmp_path / 'store.db'}"}
    ok(env, "enqueue", "q", "exit 3")
    qdone(env, "worker", "q", "--drain")
    leader, follower = pty.openpty()
    proc = subprocess.run(
        [QDONE, "failed", "q"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=follower,
        text=True,
        timeout=60,
        check=False,
    )
    os.close(follower)
    os.close(leader)
    [line] = proc.stdout.splitlines()
    assert line.startswith("qdone_q_failed  ") and line.endswith("  exit 3")
    assert "received 0" in line and "failed 20" in line and "enqueued 20" in line
