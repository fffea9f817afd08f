"""``worker --archive``'s output: each command written to stdout, past any buffer,
before its message is deleted; a command that cannot be written is not deleted."""

from __future__ import annotations

import errno
import os
import sys

from ..errors import QdoneError, UsageError

__all__ = ["ArchiveWriter"]


class ArchiveWriter:
    """Writes commands to a descriptor (stdout), one per line. ``error`` keeps the
    first write that failed, for the command's closing error line."""

    def __init__(self, fd: int = 1, closed: bool = False) -> None:
        """``closed``: the descriptor was closed when qdone started (and now leads
        to /dev/null): refused, as a closed one is."""
        self.fd = fd
        self.error: OSError | None = None
        try:
            if fd == 1 and sys.stdout is None:  # closed at start (then filled: cli.main)
                raise OSError(errno.EBADF, "stdout is closed")
            os.fstat(fd)
        except OSError:
            closed = True
        if closed:
            raise UsageError("--archive prints every command it deletes, but stdout is closed")

    def __call__(self, command: str) -> None:
        data = (command + "\n").encode("utf-8", "surrogateescape")
        try:
            while data:  # os.write: no buffer left to fail later, at exit
                data = data[os.write(self.fd, data) :]
        except OSError as exc:
            if self.error is None:
                self.error = exc
            raise

    def check(self) -> None:
        """Raise the error of a write that failed, once the worker has stopped."""
        if self.error is not None:
            raise QdoneError(
                f"cannot write to stdout ({self.error.strerror}): archiving stopped; "
                "the command that could not be written was not deleted (it is received "
                "again, or moves to the failed queue when it has no attempt left)"
            )
