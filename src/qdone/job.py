"""Run one job: ``/bin/sh -c COMMAND`` in its own session, niced, with bounded output.

The job's stdin is ``/dev/null``; its stdout and stderr are read as they come and
only the last ``TAIL_BYTES`` of each are kept, so a job that prints gigabytes
costs the worker 128 KiB. At ``kill_after`` seconds the job's whole process group
gets SIGTERM, and SIGKILL after ``grace`` seconds more: grandchildren die too,
even one that traps SIGTERM. A failed job is data (``JobResult``), never an
exception.

The command is the shell's ``-c`` argument, after ``--`` (a command may start
with ``-``). Linux refuses an argument over 128 KiB, and a queue takes commands
up to 1 MiB: a command over ``ARG_LIMIT`` bytes goes in an unnamed file (a
``memfd``; elsewhere an unlinked temporary file) that the shell gets as
descriptor 3 and runs with ``. /dev/fd/3``. The file's first line closes
descriptor 3, so the command itself sees the same descriptors, environment,
niceness, process group, stdin and ``$0`` as a short one; nothing is left on
disk.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import math
import os
import select
import signal
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .spawn import environ, job_environment, spawn

__all__ = [
    "ARG_LIMIT",
    "GRACE",
    "NICE",
    "TAIL_BYTES",
    "Job",
    "JobResult",
    "TailBuffer",
    "inherited_fds",
    "job_niceness",
    "nice_this_thread",
    "run_job",
]

TAIL_BYTES = 65_536  # kept per stream
GRACE = 3.0  # seconds between SIGTERM and SIGKILL
NICE = 10  # added to the worker's niceness, as Node qdone runs `nice`
_READ = 65_536
_SHELL = "/bin/sh"
# Bytes of a command passed as an argument; longer ones go through a file. (Linux
# refuses one argument of 128 KiB or more with E2BIG; this leaves room to spare.)
ARG_LIMIT = 100_000
_FROM_FD = ". /dev/fd/3"  # the shell runs the file on its descriptor 3
_FIRST_LINE = b"exec 3<&-\n"  # and the command does not see that descriptor
_FD_DIR = "/proc/self/fd"


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

    @property
    def dropped(self) -> int:
        """Bytes written but no longer kept."""
        return max(0, self.total - self.limit)


@dataclass(frozen=True)
class JobResult:
    """How a job ended. ``signal`` is set when a signal ended it; ``error`` when it
    could not be started at all. ``handler``: a Python handler ran it (not a shell),
    and ``exception`` is what it raised (``"ValueError: bad frame"``), if anything."""

    exit_code: int | None
    signal: int | None
    stdout: str
    stderr: str
    duration: float
    timed_out: bool = False
    killed: bool = False  # by the worker, on a second signal
    error: str | None = None
    # Bytes printed before the tail kept in ``stdout`` / ``stderr`` (0: all kept).
    stdout_dropped: int = 0
    stderr_dropped: int = 0
    exception: str | None = None
    handler: bool = False

    @property
    def ok(self) -> bool:
        return (
            self.exit_code == 0
            and not self.timed_out
            and self.error is None
            and self.exception is None
        )

    @property
    def signal_name(self) -> str | None:
        if self.signal is None:
            return None
        try:
            return signal.Signals(self.signal).name
        except ValueError:
            return str(self.signal)


@functools.cache
def job_niceness() -> int:
    """The niceness jobs run at: this process's (as first asked) plus ``NICE``."""
    try:
        return min(19, os.getpriority(os.PRIO_PROCESS, os.getpid()) + NICE)
    except OSError:
        return NICE


def nice_this_thread() -> bool:
    """Lower the calling thread to the niceness of jobs, where the OS keeps it per
    thread and a child inherits it from the thread that starts it (Linux): jobs
    started here are then niced from their first instruction, and the
    ``setpriority`` of their group after the start, which can wait for the
    shell's exec to finish (a median of microseconds, but a tenth of the time
    near a millisecond), is spared. True when so."""
    if not sys.platform.startswith("linux"):
        return False
    target = job_niceness()
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), target)
        niced = os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) >= target
    except OSError:
        return False
    _thread.niced = niced
    return niced


_thread = threading.local()  # .niced: set by nice_this_thread


class Job:
    """One running command. ``wait()`` blocks until it ends; ``kill()`` may be
    called from any thread to end it (and its process group) at once.

    Started with ``posix_spawn`` (see ``spawn``) rather than ``subprocess.Popen``: a
    worker running many short jobs spends much of its own time starting them, and
    Popen's Python layers cost about as much as the fork. ``base_env`` is the
    environment as ``b"NAME=value"`` items (default: this process's), ``env`` what
    is set over it."""

    def __init__(
        self,
        command: str,
        *,
        env: Mapping[str, str] | None = None,
        kill_after: float = 30.0,
        grace: float = GRACE,
        clock: Callable[[], float] = time.monotonic,
        base_env: tuple[bytes, ...] | None = None,
    ) -> None:
        self.command = command
        self.kill_after = kill_after
        self.grace = grace
        self._clock = clock
        self._env = job_environment(environ() if base_env is None else base_env, env or {})
        self._pid: int | None = None
        self._status: int | None = None  # exit code, or -signal, once reaped
        self._pipes: dict[int, TailBuffer] = {}
        self._killed = False  # set by kill(), from any thread
        self.stdout = TailBuffer()
        self.stderr = TailBuffer()

    def start(self) -> None:
        """Start the command; raises ``OSError`` when it cannot be started."""
        self._started = self._clock()
        argv, script = _shell_argv(self.command)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        fds = (_devnull(), out_w, err_w) if script is None else (_devnull(), out_w, err_w, script)
        try:
            self._pid = spawn(_SHELL, argv, self._env, fds, inherited_fds())
        except BaseException:
            os.close(out_r)
            os.close(err_r)
            raise
        finally:
            os.close(out_w)
            os.close(err_w)
            if script is not None:
                os.close(script)
        self._pipes = {out_r: self.stdout, err_r: self.stderr}
        if getattr(_thread, "niced", False):
            return  # started niced: it inherited this thread's niceness
        # The group, not the pid: a grandchild forked already is niced as well.
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PGRP, self._pid, job_niceness())

    @property
    def pid(self) -> int | None:
        return self._pid

    def kill(self) -> None:
        """SIGKILL the job's process group now (thread-safe, idempotent)."""
        self._killed = True
        self._signal_group(signal.SIGKILL)

    def _signal_group(self, sig: signal.Signals) -> None:
        if self._pid is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._pid, sig)

    def _group_alive(self) -> bool:
        assert self._pid is not None
        try:
            os.killpg(self._pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def _reap(self, block: bool) -> int | None:
        """The shell's exit code (or -signal), once it has ended; None while it runs."""
        if self._status is None:
            assert self._pid is not None
            pid, status = os.waitpid(self._pid, 0 if block else os.WNOHANG)
            if pid:
                self._status = os.waitstatus_to_exitcode(status)
        return self._status

    def wait(self) -> JobResult:
        """Read output until the job ends (killing it at ``kill_after``); the result."""
        assert self._pid is not None
        timed_out = self._pump(self._started + self.kill_after)
        if timed_out:
            self._terminate()
        returncode = self._reap(block=True)
        assert returncode is not None
        return JobResult(
            exit_code=returncode if returncode >= 0 else None,
            signal=-returncode if returncode < 0 else None,
            stdout=self.stdout.text(),
            stderr=self.stderr.text(),
            duration=self._clock() - self._started,
            timed_out=timed_out,
            killed=self._killed,
            stdout_dropped=self.stdout.dropped,
            stderr_dropped=self.stderr.dropped,
        )

    def _pump(self, deadline: float) -> bool:
        """Copy output into the tails until both pipes close, or the shell exits and
        its pipes stay quiet (a background grandchild holds them); True at deadline."""
        pipes = self._pipes
        poller = select.poll()
        for fd in pipes:
            poller.register(fd, select.POLLIN)
        exited_at: float | None = None
        try:
            while pipes:
                now = self._clock()
                if now >= deadline:
                    return True
                if exited_at is None and self._reap(block=False) is not None:
                    exited_at = now
                if exited_at is not None and now - exited_at > 0.2:
                    return False
                timeout = min(deadline - now, 0.05 if exited_at is not None else 0.5)
                for fd, _ in poller.poll(math.ceil(timeout * 1000)):
                    data = os.read(fd, _READ)
                    if data:
                        pipes[fd].write(data)
                    else:
                        poller.unregister(fd)
                        os.close(fd)
                        del pipes[fd]
            return False
        finally:
            for fd in pipes:
                os.close(fd)
            pipes.clear()

    def _terminate(self) -> None:
        self._signal_group(signal.SIGTERM)
        end = self._clock() + self.grace
        while self._clock() < end:
            if self._reap(block=False) is not None and not self._group_alive():
                return
            time.sleep(0.02)
        self._signal_group(signal.SIGKILL)


def _shell_argv(command: str) -> tuple[tuple[str, ...], int | None]:
    """The shell's arguments for ``command``, and the descriptor to give it as 3
    (None for a command short enough to be an argument)."""
    if len(command) * 4 < ARG_LIMIT:  # at most 4 bytes a character: short for sure
        return (_SHELL, "-c", "--", command), None
    data = command.encode(*_FS)
    if len(data) < ARG_LIMIT:
        return (_SHELL, "-c", "--", command), None
    return (_SHELL, "-c", "--", _FROM_FD), _script(_FIRST_LINE + data)


def _script(data: bytes) -> int:
    """A descriptor of an unnamed file holding ``data``, at offset 0; close-on-exec,
    and numbered 10 or above, clear of the descriptors a job is given."""
    try:
        fd = os.memfd_create("qdone-command", os.MFD_CLOEXEC)
    except (AttributeError, OSError):  # not Linux
        fd, path = tempfile.mkstemp(prefix="qdone-command-")
        os.unlink(path)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    finally:
        os.close(fd)


_FS = (sys.getfilesystemencoding(), sys.getfilesystemencodeerrors())  # as os.fsencode


@functools.cache
def _devnull() -> int:
    """``/dev/null``, opened once (close-on-exec), for every job's stdin."""
    return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)


@functools.cache
def inherited_fds() -> tuple[int, ...]:
    """Descriptors above 2 a job would inherit, to close in it (``close_fds``).
    Python opens its own close-on-exec, so these are what the worker inherited, and
    are listed once; closing one in the child that is gone since is harmless."""
    try:
        names = os.listdir(_FD_DIR)
    except OSError:
        return ()
    fds = []
    # posix_spawn refuses a file action on a descriptor at or above the limit of open
    # files (EBADF, for every job): such a one is made close-on-exec here instead.
    limit = os.sysconf("SC_OPEN_MAX")
    for name in names:
        fd = int(name)
        if fd > 2:
            with contextlib.suppress(OSError):  # e.g. listdir's own descriptor, gone
                if not os.get_inheritable(fd):
                    continue
                if fd >= limit:
                    os.set_inheritable(fd, False)
                else:
                    fds.append(fd)
    return tuple(fds)


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
