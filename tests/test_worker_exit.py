"""The worker's exit status (issue 10, item 8): ``--drain`` exits 1 when a job of
the run failed for good, so ``qdone worker q --drain && deploy`` works; a worker
stopped by one signal exits 0."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from .sites import QDONE, Site


def test_drain_exits_1_when_a_job_failed_for_good(site: Site) -> None:
    site.enqueue("ex", "true")
    site.enqueue("ex", "exit 3")
    result = site.qdone("worker", "--drain", "-w", site.wait, "ex")
    assert result.returncode == 1, result.stderr
    assert "Ran 2 jobs: 1 succeeded, 1 failed" in result.stderr
    assert "Traceback" not in result.stderr


def test_drain_exits_0_when_every_job_succeeded(site: Site) -> None:
    site.enqueue("ex", "true")
    result = site.qdone("worker", "--drain", "-w", site.wait, "ex")
    assert result.returncode == 0, result.stderr


def test_drain_exits_0_when_a_failed_job_succeeded_on_a_retry(site: Site, tmp_path: Path) -> None:
    mark = tmp_path / "tried"
    site.enqueue("ex", f"test -e {mark} || {{ touch {mark}; exit 1; }}", "--retries", "1")
    result = site.qdone("worker", "--drain", "-w", site.wait, "--retry-delay", "0", "ex")
    assert result.returncode == 0, result.stderr
    assert "Ran 2 jobs: 1 succeeded, 1 failed (1 will be retried)" in result.stderr


def test_a_worker_stopped_by_one_signal_exits_0_after_a_failed_job(site: Site) -> None:
    site.enqueue("ex", "exit 3")
    proc = subprocess.Popen(
        [QDONE, "worker", "-w", site.wait, "ex"],
        env=site.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    end = time.monotonic() + 30
    while '"JOB_FAILED"' not in proc.stdout.readline():
        assert time.monotonic() < end
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


def test_help_states_the_exit_codes() -> None:
    text = subprocess.run([QDONE, "worker", "--help"], capture_output=True, text=True).stdout
    assert "--drain: a job of the run failed for good" in " ".join(text.split())
