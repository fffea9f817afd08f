"""job.py: running one command (real processes, short)."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from qdone.job import (
    TAIL_BYTES,
    Job,
    JobResult,
    TailBuffer,
    job_niceness,
    nice_this_thread,
    run_job,
)


def test_tail_buffer_keeps_the_last_bytes() -> None:
    tail = TailBuffer(limit=10)
    for i in range(100):
        tail.write(str(i % 10).encode())
    assert tail.getvalue() == b"0123456789"
    assert tail.total == 100
    tail.write(b"x" * 25 + b"END")
    assert tail.getvalue() == b"xxxxxxxEND"


def test_success_captures_output_and_env() -> None:
    result = run_job('echo out; echo err >&2; echo "$QDONE_QUEUE"', env={"QDONE_QUEUE": "q1"})
    assert result.ok
    assert result.exit_code == 0 and result.signal is None and not result.timed_out
    assert result.stdout == "out\nq1\n"
    assert result.stderr == "err\n"
    assert result.duration >= 0


def test_exit_code_and_stdin_is_devnull() -> None:
    result = run_job("cat; exit 3")
    assert not result.ok
    assert result.exit_code == 3
    assert result.stdout == ""


def test_job_is_niced_in_its_own_session() -> None:
    result = run_job("ps -o ni=,sid= -p $$; echo $$")
    ni, sid, pid = result.stdout.split()
    assert int(ni) >= min(19, os.getpriority(os.PRIO_PROCESS, 0) + 10)
    assert sid == pid  # session leader
    assert int(sid) != os.getsid(0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="niceness per thread")
def test_a_job_started_by_a_niced_thread_is_niced_from_birth(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    results: list[JobResult] = []
    before = os.getpriority(os.PRIO_PROCESS, os.getpid())
    renices: list[tuple[int, int, int]] = []
    setpriority = os.setpriority

    def recorded(which: int, who: int, prio: int) -> None:
        renices.append((which, who, prio))
        setpriority(which, who, prio)

    def in_thread() -> None:
        assert nice_this_thread()
        monkeypatch.setattr(os, "setpriority", recorded)
        # The shell and a child it forks report their niceness themselves.
        results.append(run_job("ps -o ni= -p $$; sh -c 'ps -o ni= -p $$'"))

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join()
    assert [int(n) for n in results[0].stdout.split()] == [job_niceness()] * 2
    assert renices == []  # inherited, not set after the start
    assert os.getpriority(os.PRIO_PROCESS, os.getpid()) == before  # the process is not


def test_output_is_bounded() -> None:
    result = run_job("head -c 3000000 /dev/zero | tr '\\0' a; echo END")
    assert result.ok
    assert len(result.stdout) == TAIL_BYTES
    assert result.stdout.endswith("aaaaEND\n")


def test_signal_is_reported() -> None:
    result = run_job("kill -USR1 $$")
    assert result.signal == signal.SIGUSR1
    assert result.signal_name == "SIGUSR1"
    assert result.exit_code is None and not result.ok


def test_kill_after_kills_a_grandchild_that_traps_sigterm(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    script = (
        f"sh -c 'trap \"\" TERM; echo $$ > {pidfile}; while :; do sleep 0.05; done' & "
        "trap '' TERM; wait"
    )
    started = time.monotonic()
    result = run_job(script, kill_after=0.5, grace=0.3)
    assert result.timed_out and not result.ok
    assert result.signal == signal.SIGKILL
    assert time.monotonic() - started < 5
    grandchild = int(pidfile.read_text())
    time.sleep(0.1)
    try:
        os.kill(grandchild, 0)
    except ProcessLookupError:
        pass
    else:  # a zombie not yet reaped by init counts as gone
        stat = Path(f"/proc/{grandchild}/stat").read_text()
        assert stat.split(")")[1].split()[0] == "Z"


def test_sigterm_is_enough_for_a_polite_job() -> None:
    started = time.monotonic()
    result = run_job("sleep 30", kill_after=0.3, grace=5)
    assert result.timed_out
    assert result.signal == signal.SIGTERM
    assert time.monotonic() - started < 3


def test_background_grandchild_holding_pipes_does_not_block() -> None:
    started = time.monotonic()
    result = run_job("sleep 3 & echo done", kill_after=10)
    assert result.ok and result.stdout == "done\n"
    assert time.monotonic() - started < 2


def test_kill_from_another_thread() -> None:
    job = Job("sleep 30", kill_after=60)
    job.start()
    job.kill()
    result = job.wait()
    assert result.killed and result.signal == signal.SIGKILL


def test_command_that_cannot_start() -> None:
    result = run_job("exit 0", env={"PATH": ""})
    assert result.ok  # /bin/sh is absolute; a bad PATH only hurts the command
    result = run_job("definitely-not-a-command-qdone")
    assert result.exit_code == 127
