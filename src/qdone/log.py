"""Output: human lines on stderr (verbose, colour on a TTY) and JSON lines on stdout.

Core modules never print; they return results or emit events, and the CLI hands
them to an ``Output`` made here.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import select
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

__all__ = ["Output", "one_line", "timestamp"]

_COLOURS = {"red": "31", "green": "32", "yellow": "33", "blue": "34", "dim": "2", "bold": "1"}


MAX_LINE = 1_000  # characters of an error or warning (a server may answer with a page)


def one_line(text: str) -> str:
    """``text`` on one line (runs of whitespace, newlines included, become a space),
    cut at ``MAX_LINE`` characters: an error quoting an HTML body stays a line."""
    line = " ".join(text.split())
    return line if len(line) <= MAX_LINE else line[: MAX_LINE - 3] + "..."


def timestamp() -> str:
    """Now, as Node qdone writes it: ISO 8601 in UTC with milliseconds."""
    now = time.time()
    second = int(now)
    return f"{_second(second)}.{int((now - second) * 1000):03d}Z"


@functools.lru_cache(maxsize=4)
def _second(second: int) -> str:
    """The whole-second part of a timestamp, formatted once per second (a worker
    writes a line per job)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


# stdout is gone for good: its reader went away, or it was closed.
_CLOSED = (errno.EPIPE, errno.EBADF)


class Output:
    """Where a command's messages go.

    ``verbose``: human lines on stderr. ``json``: events as JSON lines on stdout.
    Errors always reach stderr.

    ``keep_going`` (the worker): a line that cannot be written is not an error of
    the command. When stdout is closed (EPIPE, EBADF), nothing more is written
    there, and one line on stderr says so; on any other write error (a full disk),
    one ``WARNING`` line on stderr, and again only after a write has worked since.
    A failing stderr is ignored: there is nowhere left to say it. Without
    ``keep_going``, write errors are raised.
    """

    def __init__(
        self,
        *,
        verbose: bool,
        json_lines: bool,
        out: TextIO | None = None,
        err: TextIO | None = None,
        colour: bool | None = None,
        keep_going: bool = False,
    ) -> None:
        self.verbose = verbose
        self.json_lines = json_lines
        # None: closed when the process started (Python leaves None there).
        self.out: TextIO | None = out if out is not None else sys.stdout
        self.err: TextIO | None = err if err is not None else sys.stderr
        if colour is None:
            colour = self.err is not None and self.err.isatty()
        self.colour = colour
        self.keep_going = keep_going
        self.out_closed = False
        self._out_failing = False

    def style(self, text: str, colour: str) -> str:
        if not self.colour:
            return text
        return f"\033[{_COLOURS[colour]}m{text}\033[0m"

    def info(self, message: str) -> None:
        """A human line on stderr, shown only when verbose."""
        if self.verbose:
            self._to_err(message)

    def note(self, message: str) -> None:
        """A human line on stderr, always shown (e.g. a closing summary)."""
        self._to_err(message)

    def warn(self, message: str) -> None:
        """A warning on stderr, shown unless quiet-and-JSON (then as a JSON event)."""
        message = one_line(message)
        if self.json_lines and not self.verbose:
            self.event("WARNING", {"message": message})
        else:
            self._to_err(self.style("Warning: ", "yellow") + message)

    def error(self, message: str) -> None:
        self._to_err(self.style("qdone: error: ", "red") + one_line(message))

    def event(self, name: str, fields: Mapping[str, Any]) -> None:
        """A JSON line on stdout (only in JSON mode): ``{"event": name, "timestamp": …}``."""
        if self.json_lines:
            self._to_out(_json_line(name, fields))

    def result(self, line: str) -> None:
        """A line of the command's result on stdout (e.g. a queue name)."""
        self._to_out(line)

    def _to_out(self, line: str) -> None:
        if self.out_closed:
            return
        try:
            if self.out is None:
                raise OSError(errno.EBADF, "closed when qdone started")
            _write(self.out, line)
        except (OSError, ValueError) as exc:  # ValueError: a Python stream closed since
            if not self.keep_going:
                raise
            self._out_failed(exc if isinstance(exc, OSError) else OSError(errno.EBADF, str(exc)))
        else:
            self._out_failing = False

    def _out_failed(self, exc: OSError) -> None:
        if exc.errno in _CLOSED:
            self.out_closed = True
            self._stderr_warning(f"stdout is closed ({exc.strerror}): nothing more goes there")
        elif not self._out_failing:
            self._out_failing = True
            self._stderr_warning(f"cannot write to stdout ({exc.strerror}); going on")

    def _stderr_warning(self, message: str) -> None:
        """A warning about stdout: on stderr, as a JSON line where stdout had them."""
        if self.json_lines and not self.verbose:
            self._to_err(_json_line("WARNING", {"message": message}))
        else:
            self._to_err(self.style("Warning: ", "yellow") + message)

    def _to_err(self, line: str) -> None:
        if self.err is None:
            return
        try:
            _write(self.err, line)
        except (OSError, ValueError):
            if not self.keep_going:
                raise


def _json_line(name: str, fields: Mapping[str, Any]) -> str:
    record: dict[str, Any] = {"event": name, "timestamp": timestamp()}
    record.update({k: v for k, v in fields.items() if v is not None and v != ""})
    return json.dumps(record, ensure_ascii=False)


def _write(stream: TextIO, line: str) -> None:
    """Write ``line`` and a newline. The process's own stdout and stderr are written
    to their descriptors at once, past Python's buffer: a write that fails leaves
    nothing behind to fail again (or to come out twice) at the next flush or exit."""
    if stream is sys.__stdout__ or stream is sys.__stderr__:
        stream.flush()
        data = (line + "\n").encode(stream.encoding or "utf-8", "backslashreplace")
        fd = stream.fileno()
        while data:
            try:
                data = data[os.write(fd, data) :]
            except BlockingIOError:  # a non-blocking pipe, full: wait as a blocking one would
                select.select([], [fd], [], 1.0)
        return
    stream.write(line + "\n")
    stream.flush()
