"""Run one job: ``/bin/sh -c COMMAND`` in its own session, niced, with bounded output.

The job's stdin is ``/dev/null``; its stdout and stderr are read as they come and
only the last ``TAIL_BYTES`` of each are kept, so a job that prints gigabytes
costs the worker 128 KiB. At ``kill_after`` seconds the job's whole process group
gets SIGTERM, and SIGKILL after ``grace`` seconds more: grandchildren die too,
even one that traps SIGTERM. A failed job is data (``JobResult``), never an
exception.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = ["GRACE", "NICE", "TAIL_BYTES", "Job", "JobResult", "TailBuffer", "run_job"]

TAIL_BYTES = 65_536  # kept per stream
GRACE = 3.0  # seconds between SIGTERM and SIGKILL
NICE = 10  # added to the worker's niceness, as Node qdone runs `nice`
_READ = 65_536
_SHELL = "/bin/sh"


class TailBuffer:
    """The last ``limit`` bytes written to it, in O(limit) memory."""

    def __init__(self, limit: int = TAIL_BYTES) -> None:
        self.limit = limit
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self.total = 0  # bytes seen, kept or not

    def write(self, data: bytes) -> None:
        self.total += len(data)
        if len(data) >= self.limit:
            self._chunks, self._size = deque([data[-self.limit :]]), self.limit
            return
        self._chunks.append(data)
        self._size += len(data)
        while self._size - len(self._chunks[0]) >= self.limit:
            self._size -= len(self._chunks.popleft())

    def getvalue(self) -> bytes:
        data = b"".join(self._chunks)
        return data[-self.limit :]

    def text(self) -> str:
        return self.getvalue().decode("utf-8", errors="replace")


@dataclass(frozen=True)
class JobResult:
    """How a job ended. ``signal`` is set when a signal ended it; ``error`` when it
    could not be started at all."""

    exit_code: int | None
    signal: int | None
    stdout: str
    stderr: str
    duration: float
    timed_out: bool = False
    killed: bool = False  # by the worker, on a second signal
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and self.error is None

    @property
    def signal_name(self) -> str | None:
        if self.signal is None:
            return None
        try:
            return signal.Signals(self.signal).name
        except ValueError:
            return str(self.signal)


def _niced() -> int:
    try:
        return min(19, os.getpriority(os.PRIO_PROCESS, 0) + NICE)
    except OSError:
        return NICE


class Job:
    """One running command. ``wait()`` blocks until it ends; ``kill()`` may be
    called from any thread to end it (and its process group) at once."""

    def __init__(
        self,
        command: str,
        *,
        env: Mapping[str, str] | None = None,
        kill_after: float = 30.0,
        grace: float = GRACE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.command = command
        self.kill_after = kill_after
        self.grace = grace
        self._clock = clock
        self._env = {**os.environ, **(env or {})}
        self._proc: subprocess.Popen[bytes] | None = None
        self._killed = threading.Event()
        self.stdout = TailBuffer()
        self.stderr = TailBuffer()

    def start(self) -> None:
        self._started = self._clock()
        self._proc = subprocess.Popen(
            [_SHELL, "-c", self.command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self._env,
            start_new_session=True,
            close_fds=True,
        )
        # The group, not the pid: a grandchild forked already is niced as well.
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PGRP, self._proc.pid, _niced())

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def kill(self) -> None:
        """SIGKILL the job's process group now (thread-safe, idempotent)."""
        self._killed.set()
        self._signal_group(signal.SIGKILL)

    def _signal_group(self, sig: signal.Signals) -> None:
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    def _group_alive(self) -> bool:
        assert self._proc is not None
        try:
            os.killpg(self._proc.pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def wait(self) -> JobResult:
        """Read output until the job ends (killing it at ``kill_after``); the result."""
        proc = self._proc
        assert proc is not None and proc.stdout is not None and proc.stderr is not None
        deadline = self._started + self.kill_after
        timed_out = self._pump(proc, deadline)
        if timed_out:
            self._terminate(proc)
        returncode = proc.wait()
        return JobResult(
            exit_code=returncode if returncode >= 0 else None,
            signal=-returncode if returncode < 0 else None,
            stdout=self.stdout.text(),
            stderr=self.stderr.text(),
            duration=self._clock() - self._started,
            timed_out=timed_out,
            killed=self._killed.is_set(),
        )

    def _pump(self, proc: subprocess.Popen[bytes], deadline: float) -> bool:
        """Copy output into the tails until both pipes close, or the shell exits and
        its pipes stay quiet (a background grandchild holds them); True at deadline."""
        assert proc.stdout is not None and proc.stderr is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ, self.stdout)
        sel.register(proc.stderr, selectors.EVENT_READ, self.stderr)
        exited_at: float | None = None
        try:
            while sel.get_map():
                now = self._clock()
                if now >= deadline:
                    return True
                if exited_at is None and proc.poll() is not None:
                    exited_at = now
                if exited_at is not None and now - exited_at > 0.2:
                    return False
                timeout = min(deadline - now, 0.05 if exited_at is not None else 0.5)
                for key, _ in sel.select(timeout):
                    data = os.read(key.fd, _READ)
                    if data:
                        key.data.write(data)
                    else:
                        sel.unregister(key.fileobj)
            return False
        finally:
            sel.close()
            proc.stdout.close()
            proc.stderr.close()

    def _terminate(self, proc: subprocess.Popen[bytes]) -> None:
        self._signal_group(signal.SIGTERM)
        end = self._clock() + self.grace
        while self._clock() < end:
            if proc.poll() is not None and not self._group_alive():
                return
            time.sleep(0.02)
        self._signal_group(signal.SIGKILL)


def run_job(
    command: str,
    *,
    env: Mapping[str, str] | None = None,
    kill_after: float = 30.0,
    grace: float = GRACE,
    on_start: Callable[[Job], None] | None = None,
) -> JobResult:
    """Run ``command`` to its end; a job that cannot start is a failed result."""
    job = Job(command, env=env, kill_after=kill_after, grace=grace)
    started = time.monotonic()
    try:
        job.start()
    except OSError as exc:
        return JobResult(None, None, "", "", time.monotonic() - started, error=str(exc))
    if on_start is not None:
        on_start(job)
    return job.wait()
