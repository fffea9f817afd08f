"""Jobs die with their worker: a small keeper process kills the process groups of
the jobs that still run when the worker is gone, even killed with SIGKILL.

Linux's ``PR_SET_PDEATHSIG`` would need code in the child between fork and exec,
which ``posix_spawn`` (how jobs start, see ``spawn``) does not run; it would fire
when the *thread* that started the job ends, not the process; and it reaches the
job's shell only, not the commands the shell forked. So a worker starts one
keeper, a tiny Python process, that reads the job process groups as they start
(``+pgid``) and end (``-pgid``) on a pipe whose only writer is the worker. When
the pipe reads end-of-file, the worker has ended, however it ended: the keeper
sends SIGTERM to every group still listed, and SIGKILL ``GRACE`` seconds later to
those still alive. A worker that ends well has no job left listed, so the
keeper then kills nothing. The cost to a job is two writes of a few bytes; the
keeper reads them at most 20 times a second (the pipe holds thousands).

The keeper ignores SIGINT, SIGTERM and SIGHUP: a service manager stopping the
whole service (systemd's ``KillMode=control-group``) must not end it before the
worker. It runs in its own session, away from the terminal.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading

from .job import GRACE, Job, inherited_fds
from .spawn import environ, spawn

__all__ = ["Keeper"]

# Run with ``python -I -S -c``: no site, no qdone import, a few milliseconds.
_PROGRAM = f"""
import os, signal, time
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(s, signal.SIG_IGN)
groups, rest = set(), b""
while True:
    data = os.read(0, 65536)
    if not data:
        break
    *lines, rest = (rest + data).split(b"\\n")
    for line in lines:
        (groups.add if line[:1] == b"+" else groups.discard)(int(line[1:]))
    time.sleep(0.05)  # let lines gather: a few wake-ups a second, not two per job

def signal_all(sig):
    for group in list(groups):
        try:
            os.killpg(group, sig)
        except OSError:
            groups.discard(group)

signal_all(signal.SIGTERM)
end = time.monotonic() + {GRACE}
while groups and time.monotonic() < end:
    time.sleep(0.05)
    signal_all(0)
signal_all(signal.SIGKILL)
"""


class Keeper:
    """The worker's side of the keeper: ``add`` a job once started, ``remove`` it
    once ended; ``close`` when no job runs any more. Thread-safe. The keeper is
    started with the first job; if it cannot be, jobs run without it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._pid: int | None = None
        self._failed = False

    def add(self, job: Job) -> None:
        if job.pid is not None:
            self._send(f"+{job.pid}\n".encode())

    def remove(self, job: Job) -> None:
        if job.pid is not None:
            self._send(f"-{job.pid}\n".encode())

    def _send(self, line: bytes) -> None:
        with self._lock:
            if self._fd is None and not self._failed:
                self._start()
            if self._fd is None:
                return
            try:
                os.write(self._fd, line)  # a few bytes: one atomic write
            except OSError:  # the keeper is gone: jobs run on without it
                self._close()
                self._failed = True

    def _start(self) -> None:
        read, write = os.pipe()
        try:
            null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
            try:
                argv = (sys.executable, "-I", "-S", "-c", _PROGRAM)
                # Nothing of the worker's but the pipe: a caller reading the worker's
                # stdout or stderr to their end is not kept waiting by the keeper.
                fds = (read, null, null)
                self._pid = spawn(sys.executable, argv, environ(), fds, inherited_fds())
            finally:
                os.close(null)
        except OSError:
            os.close(write)
            self._failed = True
            return
        finally:
            os.close(read)
        self._fd = write

    def close(self) -> None:
        """Let the keeper go: it kills what is still listed (nothing, when every job
        ended) and exits; it is reaped on a thread of its own."""
        with self._lock:
            self._close()
            self._failed = True

    def _close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        if self._pid is not None:
            pid, self._pid = self._pid, None
            threading.Thread(target=_reap, args=(pid,), daemon=True).start()

    def __del__(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
