"""Batch input: ``QUEUE COMMAND...`` lines, and their split into send batches (pure)."""

from __future__ import annotations

import itertools
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO, TypeVar

from .errors import BatchInputError, UsageError

__all__ = [
    "BATCH_BYTES",
    "MAX_LINE_BYTES",
    "MAX_MESSAGE_BYTES",
    "BatchLine",
    "batch_spans",
    "bounded_lines",
    "parse_lines",
    "read_sources",
    "split_batches",
]

MAX_MESSAGE_BYTES = 1_048_576  # SQS's largest message, and largest batch payload
BATCH_BYTES = 1_048_576
# The longest line read: the largest command, its queue name and what may surround them.
MAX_LINE_BYTES = MAX_MESSAGE_BYTES + 1_024
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


def bounded_lines(source: str, stream: BinaryIO) -> Iterator[bytes]:
    """The lines of ``stream``, each read up to ``MAX_LINE_BYTES`` and no further: a
    file with no line end (``/dev/zero``, a sparse file) is refused at its first
    MiB, not read whole into memory."""
    for lineno in itertools.count(1):
        raw = stream.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            raise BatchInputError(
                f"{source}:{lineno}: the line is longer than {MAX_LINE_BYTES:,} bytes "
                f"(a command holds at most {MAX_MESSAGE_BYTES:,}); reading stopped there"
            )
        yield raw


def _show(raw: bytes) -> str:
    return repr(raw.decode(errors="replace"))


def read_sources(paths: Sequence[str], stdin: BinaryIO | None = None) -> list[BatchLine]:
    """Every job of the files in the order given; ``-`` reads standard input."""
    jobs: list[BatchLine] = []
    for path in paths:
        if path == "-":
            if stdin is None and sys.stdin is None:
                raise UsageError("cannot read <stdin>: standard input is closed")
            stream = stdin if stdin is not None else sys.stdin.buffer
            jobs.extend(parse_lines("<stdin>", bounded_lines("<stdin>", stream)))
            continue
        try:
            with open(path, "rb") as handle:
                jobs.extend(parse_lines(path, bounded_lines(path, handle)))
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return jobs


def batch_spans(
    sizes: Sequence[int], max_count: int = 10, max_bytes: int = BATCH_BYTES
) -> list[range]:
    """The index ranges of consecutive batches of at most ``max_count`` items and
    ``max_bytes`` bytes, order kept, given each item's size. An item larger than
    ``max_bytes`` alone is the caller's error."""
    total = len(sizes)
    if not total:
        return []
    if max_count > 0 and max(sizes) * max_count <= max_bytes:  # no batch can pass the byte limit
        return [range(i, min(i + max_count, total)) for i in range(0, total, max_count)]
    spans: list[range] = []
    start = used = 0
    for index, size in enumerate(sizes):
        if index > start and (index - start == max_count or used + size > max_bytes):
            spans.append(range(start, index))
            start, used = index, 0
        used += size
    spans.append(range(start, total))
    return spans


def split_batches(
    items: Sequence[T],
    size_of: Callable[[T], int],
    max_count: int = 10,
    max_bytes: int = BATCH_BYTES,
) -> list[list[T]]:
    """Consecutive batches of at most ``max_count`` items and ``max_bytes`` bytes,
    order kept. An item larger than ``max_bytes`` alone is the caller's error."""
    spans = batch_spans([size_of(item) for item in items], max_count, max_bytes)
    return [list(items[span.start : span.stop]) for span in spans]
