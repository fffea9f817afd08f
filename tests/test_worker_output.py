"""Output that cannot be written changes nothing about any job (issue 10, items 1
and 2): the reader of stdout goes away, stdout is on a full disk."""

from __future__ import annotations

import errno
import io
import json
import subprocess

import pytest

from qdone.log import Output

from .sites import QDONE, Site

JOBS = 30


def assert_all_ran(site: Site, err: str) -> None:
    assert "Traceback" not in err
    assert f"Ran {JOBS} jobs: {JOBS} succeeded, 0 failed" in err
    assert site.counts("out") == (0, 0)
    assert site.counts("out_failed") == (0, 0)


def test_a_reader_of_stdout_that_goes_away_fails_no_job(site: Site) -> None:
    site.enqueue_many("out", [f"echo {n}" for n in range(JOBS)])
    proc = subprocess.Popen(
        [QDONE, "worker", "--drain", "-w", site.wait, "-c", "2", "out"],
        env=site.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert '"LISTENING"' in proc.stdout.readline()
    proc.stdout.close()  # as `| head -1` does
    err = proc.stderr.read()
    assert proc.wait(60) == 0, err
    assert_all_ran(site, err)
    assert err.count("stdout is closed") == 1


def test_stdout_on_a_full_disk_fails_no_job(site: Site) -> None:
    site.enqueue_many("out", [f"echo {n}" for n in range(JOBS)])
    with open("/dev/full", "w") as full:
        result = site.qdone("worker", "--drain", "-w", site.wait, "out", stdout=full)
    assert result.returncode == 0, result.stderr
    assert_all_ran(site, result.stderr)
    warnings = [json.loads(line) for line in result.stderr.splitlines() if '"WARNING"' in line]
    assert len(warnings) == 1
    assert "No space left on device" in str(warnings[0]["message"])


class Failing(io.StringIO):
    """A stream whose writes fail with ``code`` while ``failing``."""

    def __init__(self, code: int) -> None:
        super().__init__()
        self.code = code
        self.failing = True

    def write(self, text: str) -> int:
        if self.failing:
            raise OSError(self.code, "simulated")
        return super().write(text)


def test_a_write_error_warns_once_until_writing_works_again() -> None:
    out, err = Failing(errno.ENOSPC), io.StringIO()
    output = Output(verbose=False, json_lines=True, out=out, err=err, keep_going=True)
    output.event("A", {})
    output.event("B", {})
    assert err.getvalue().count("WARNING") == 1
    out.failing = False
    output.event("C", {})
    out.failing = True
    output.event("D", {})
    assert err.getvalue().count("WARNING") == 2
    assert '"C"' in out.getvalue()


@pytest.mark.parametrize("code", [errno.EPIPE, errno.EBADF])
def test_a_closed_stdout_is_not_written_again(code: int) -> None:
    out, err = Failing(code), io.StringIO()
    output = Output(verbose=False, json_lines=True, out=out, err=err, keep_going=True)
    output.event("A", {})
    out.failing = False
    output.event("B", {})
    output.result("C")
    assert out.getvalue() == ""
    assert err.getvalue().count("stdout is closed") == 1


def test_without_keep_going_a_write_error_is_raised() -> None:
    output = Output(verbose=False, json_lines=True, out=Failing(errno.ENOSPC), err=io.StringIO())
    with pytest.raises(OSError):
        output.event("A", {})


def test_a_failing_stderr_is_ignored() -> None:
    output = Output(
        verbose=True, json_lines=False, out=io.StringIO(), err=Failing(errno.EPIPE), keep_going=True
    )
    output.info("hello")
    output.warn("careful")


@pytest.mark.parametrize("closed", ["stdout", "stderr"])
def test_a_worker_started_with_a_closed_stdout_or_stderr_runs_its_jobs(
    site: Site, closed: str
) -> None:
    site.enqueue_many("out", [f"echo {n}" for n in range(JOBS)])
    fd = 1 if closed == "stdout" else 2
    command = f'exec "$@" {fd}>&-'
    args = ["sh", "-c", command, "sh", QDONE, "worker", "--drain", "-w", site.wait, "out"]
    result = subprocess.run(args, env=site.env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "failed:" not in result.stderr
    assert site.counts("out") == (0, 0)
    assert site.counts("out_failed") == (0, 0)
