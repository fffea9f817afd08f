"""Output: human lines on stderr (verbose, colour on a TTY) and JSON lines on stdout.

Core modules never print; they return results or emit events, and the CLI hands
them to an ``Output`` made here.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

__all__ = ["Output", "timestamp"]

_COLOURS = {"red": "31", "green": "32", "yellow": "33", "blue": "34", "dim": "2", "bold": "1"}


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


class Output:
    """Where a command's messages go.

    ``verbose``: human lines on stderr. ``json``: events as JSON lines on stdout.
    Errors always reach stderr.
    """

    def __init__(
        self,
        *,
        verbose: bool,
        json_lines: bool,
        out: TextIO | None = None,
        err: TextIO | None = None,
        colour: bool | None = None,
    ) -> None:
        self.verbose = verbose
        self.json_lines = json_lines
        self.out = out if out is not None else sys.stdout
        self.err = err if err is not None else sys.stderr
        self.colour = self.err.isatty() if colour is None else colour

    def style(self, text: str, colour: str) -> str:
        if not self.colour:
            return text
        return f"\033[{_COLOURS[colour]}m{text}\033[0m"

    def info(self, message: str) -> None:
        """A human line on stderr, shown only when verbose."""
        if self.verbose:
            print(message, file=self.err, flush=True)

    def warn(self, message: str) -> None:
        """A warning on stderr, shown unless quiet-and-JSON (then as a JSON event)."""
        if self.json_lines and not self.verbose:
            self.event("WARNING", {"message": message})
        else:
            print(self.style("Warning: ", "yellow") + message, file=self.err, flush=True)

    def error(self, message: str) -> None:
        print(self.style("qdone: error: ", "red") + message, file=self.err, flush=True)

    def event(self, name: str, fields: Mapping[str, Any]) -> None:
        """A JSON line on stdout (only in JSON mode): ``{"event": name, "timestamp": …}``."""
        if not self.json_lines:
            return
        record: dict[str, Any] = {"event": name, "timestamp": timestamp()}
        record.update({k: v for k, v in fields.items() if v is not None and v != ""})
        print(json.dumps(record, ensure_ascii=False), file=self.out, flush=True)

    def result(self, line: str) -> None:
        """A line of the command's result on stdout (e.g. a queue name)."""
        print(line, file=self.out, flush=True)
