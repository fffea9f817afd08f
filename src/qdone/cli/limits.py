"""The open-file limit a worker needs for its concurrency, checked (and raised up
to the hard limit where it can be) before the first job."""

from __future__ import annotations

import resource

__all__ = ["FILES_BASE", "FILES_PER_JOB", "concurrency_within", "open_files_shortfall"]

FILES_BASE = 64  # the worker's own: interpreter, store or sockets, listeners
# Per running job: its two pipes (four descriptors while it starts) and, on SQLite,
# the connection of its thread (the file and its WAL).
FILES_PER_JOB = 8


def open_files_shortfall(concurrency: int) -> tuple[int, int] | None:
    """``(limit, needed)`` when the soft limit of open files stays below what
    ``concurrency`` jobs need after raising it as far as the hard limit allows;
    None when it is enough."""
    needed = FILES_BASE + FILES_PER_JOB * concurrency
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return None
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return None if soft >= needed else (soft, needed)


def concurrency_within(limit: int) -> int:
    """The most jobs that fit in ``limit`` open files (at least 1)."""
    return max(1, (limit - FILES_BASE) // FILES_PER_JOB)
