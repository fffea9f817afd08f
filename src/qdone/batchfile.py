"""Batch input: ``QUEUE COMMAND...`` lines, and their split into send batches (pure)."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

from .errors import BatchInputError, UsageError

__all__ = [
    "BATCH_BYTES",
    "MAX_MESSAGE_BYTES",
    "BatchLine",
    "parse_lines",
    "read_sources",
    "split_batches",
]

MAX_MESSAGE_BYTES = 1_048_576  # SQS's largest message, and largest batch payload
BATCH_BYTES = 1_048_576
_SPLIT = re.compile(rb"\s+")

T = TypeVar("T")


@dataclass(frozen=True)
class BatchLine:
    """One job of a batch file: where it came from, its queue and its command."""

    source: str
    lineno: int
    queue: str
    command: str

    @property
    def where(self) -> str:
        return f"{self.source}:{self.lineno}"


def parse_lines(source: str, lines: Iterable[bytes]) -> Iterator[BatchLine]:
    """Parse raw lines; blank lines and ``#`` comments are skipped.

    The queue name ends at the first run of whitespace; the command is the rest
    of the line, kept as written. Raises BatchInputError naming ``source:line``."""
    for lineno, raw in enumerate(lines, 1):
        line = raw.rstrip(b"\r\n").lstrip()
        if not line.strip() or line.startswith(b"#"):
            continue
        parts = _SPLIT.split(line, maxsplit=1)
        if len(parts) < 2 or not parts[1].strip():
            raise BatchInputError(
                f"{source}:{lineno}: no command after queue name {_show(parts[0])}; "
                "each line is QUEUE COMMAND..."
            )
        try:
            queue, command = parts[0].decode(), parts[1].decode()
        except UnicodeDecodeError as exc:
            raise BatchInputError(
                f"{source}:{lineno}: not valid UTF-8 (byte {exc.start + 1} of the "
                f"{'queue name' if exc.object == parts[0] else 'command'})"
            ) from exc
        yield BatchLine(source, lineno, queue, command)


def _show(raw: bytes) -> str:
    return repr(raw.decode(errors="replace"))


def read_sources(paths: Sequence[str], stdin: BinaryIO | None = None) -> list[BatchLine]:
    """Every job of the files in the order given; ``-`` reads standard input."""
    jobs: list[BatchLine] = []
    for path in paths:
        if path == "-":
            stream = stdin if stdin is not None else sys.stdin.buffer
            jobs.extend(parse_lines("<stdin>", stream))
            continue
        try:
            with Path(path).open("rb") as handle:
                jobs.extend(parse_lines(path, handle))
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return jobs


def split_batches(
    items: Sequence[T],
    size_of: Callable[[T], int],
    max_count: int = 10,
    max_bytes: int = BATCH_BYTES,
) -> list[list[T]]:
    """Consecutive batches of at most ``max_count`` items and ``max_bytes`` bytes,
    order kept. An item larger than ``max_bytes`` alone is the caller's error."""
    batches: list[list[T]] = []
    current: list[T] = []
    used = 0
    for item in items:
        size = size_of(item)
        if current and (len(current) == max_count or used + size > max_bytes):
            batches.append(current)
            current, used = [], 0
        current.append(item)
        used += size
    if current:
        batches.append(current)
    return batches
