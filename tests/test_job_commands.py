"""Commands the shell must get whole (issue 10): up to the 1 MiB a queue takes
(Linux limits one argument to 128 KiB), and commands that start with '-'."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from qdone.job import NICE, JobResult, nice_this_thread, run_job

from .sites import Site

KIB = 1024
# What a job reports about itself: $0, its descriptors 0 and 3, session, niceness.
PROBE = (
    'echo "zero=$0"; '
    "readlink /proc/$$/fd/0; "
    "[ -e /proc/$$/fd/3 ] && echo fd3-open; "
    "echo sid=$(cut -d' ' -f6 /proc/$$/stat) pid=$$; "
    "echo nice=$(cut -d' ' -f19 /proc/$$/stat); "
    'echo "env=$PROBE_VAR"'
)


def padded(command: str, size: int) -> str:
    """``command`` preceded by a no-op that makes it ``size`` bytes long."""
    filler = size - len(command) - len(": ''; ")
    return f": '{'x' * filler}'; {command}"


def probe(size: int) -> dict[str, str]:
    """What the job reports, run as the worker runs jobs: from a thread at the jobs'
    niceness (elsewhere the niceness is set just after the start, and the job may
    look before)."""
    command = padded(PROBE, size) if size else PROBE
    results: list[JobResult] = []

    def run() -> None:
        nice_this_thread()
        results.append(run_job(command, env={"PROBE_VAR": "yes"}))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    [result] = results
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    found = dict(line.split("=", 1) for line in lines if "=" in line and " " not in line)
    found.update(
        dict(part.split("=") for part in next(x for x in lines if x.startswith("sid")).split())
    )
    found["stdin"] = lines[1]
    found["fd3"] = str("fd3-open" in lines)
    return found


@pytest.mark.parametrize("size", [128 * KIB, 1024 * KIB])
def test_a_long_command_runs_as_a_short_one_does(size: int) -> None:
    short, long = probe(0), probe(size)
    assert long["zero"] == short["zero"]
    assert long["stdin"] == short["stdin"] == "/dev/null"
    assert long["fd3"] == short["fd3"] == "False"
    assert long["sid"] == long["pid"]  # its own session and process group
    assert int(long["nice"]) == int(short["nice"]) >= NICE
    assert long["env"] == "yes"


def test_a_long_command_keeps_its_exit_status_and_output() -> None:
    result = run_job(padded("echo done; exit 7", 300 * KIB))
    assert (result.exit_code, result.stdout) == (7, "done\n")


def test_a_command_starting_with_a_dash_runs(tmp_path: Path) -> None:
    program = tmp_path / "-hello"
    program.write_text('#!/bin/sh\necho hello "$@"\n')
    program.chmod(0o755)
    path = f"{tmp_path}:{os.environ['PATH']}"
    result = run_job("-hello world", env={"PATH": path})
    assert (result.exit_code, result.stdout) == (0, "hello world\n"), result.stderr


def test_the_worker_runs_a_long_command(site: Site, tmp_path: Path) -> None:
    sizes = [200 * KIB] + ([1024 * KIB - 1] if site.kind == "sqlite" else [])
    # enqueue-batch: an argument of the enqueue command could not hold them
    site.enqueue_many("long", [padded(f"echo {s} >> {tmp_path / 'ran'}", s) for s in sizes])
    result = site.qdone("worker", "--drain", "-w", site.wait, "long")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "ran").read_text().split() == [str(s) for s in sizes]
    assert site.counts("long_failed") == (0, 0)
