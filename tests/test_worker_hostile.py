"""The worker against hostile conditions (issue 16): output that cannot be written
(``--archive``), jobs it cannot start, a second signal with jobs running."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

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
    assert names.count("JOB_FAILED") == 2, names
    assert names[-1] == "WORKER_SUMMARY", names
    summary = lines[-1]
    assert summary["failed"] == 2 and summary["killed"] is True, summary


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


def test_archive_to_a_full_device_deletes_nothing(env: dict[str, str]) -> None:
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
    assert result.returncode != 0, result.stderr
    assert "No space left on device" in result.stderr
    # Nothing deleted. The one command that could not be written was received, so
    # with no attempt left it moves to the failed queue, body intact.
    main, failed = sum(queue_counts(env, "qdone_q")), sum(queue_counts(env, "qdone_q_failed"))
    assert (main, failed) in ((5, 0), (4, 1)), (main, failed)
