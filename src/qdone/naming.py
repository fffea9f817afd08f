"""Queue names: prefix, failed/dead suffixes, ``.fifo`` and wildcards (pure functions).

The layout is Node qdone's, so both tools share queues:
``NAME`` lives in ``{prefix}NAME``, its failed queue is ``{prefix}NAME{fail_suffix}``,
its dead queue (``--dlq``) ``{prefix}NAME{dlq_suffix}``, and on FIFO queues ``.fifo``
comes last: ``qdone_NAME_failed.fifo``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InvalidQueueName

__all__ = [
    "FIFO_SUFFIX",
    "QueueNames",
    "is_wildcard",
    "queue_names",
    "short_name",
    "strip_fifo",
    "validate_sqs_name",
    "wildcard_prefix",
]

FIFO_SUFFIX = ".fifo"
MAX_NAME_LENGTH = 80
_VALID = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class QueueNames:
    """The full names of one qdone queue, its failed queue and its dead queue."""

    main: str
    failed: str
    dead: str
    fifo: bool


def strip_fifo(name: str) -> str:
    return name[: -len(FIFO_SUFFIX)] if name.endswith(FIFO_SUFFIX) else name


def _with_prefix(name: str, prefix: str) -> str:
    return name if name.startswith(prefix) else prefix + name


def queue_names(
    name: str, *, prefix: str, fail_suffix: str, dead_suffix: str, fifo: bool
) -> QueueNames:
    """Full names for queue ``name``; a name ending in ``.fifo`` is a FIFO queue."""
    fifo = fifo or name.endswith(FIFO_SUFFIX)
    base = _with_prefix(strip_fifo(name), prefix)
    end = FIFO_SUFFIX if fifo else ""
    names = QueueNames(
        main=base + end,
        failed=base + fail_suffix + end,
        dead=base + dead_suffix + end,
        fifo=fifo,
    )
    for full in (names.main, names.failed):
        validate_sqs_name(full, given=name)
    return names


def validate_sqs_name(full: str, *, given: str | None = None) -> None:
    """Raise InvalidQueueName unless ``full`` is a valid SQS queue name."""
    label = f"queue name {given!r}" if given is not None else f"queue name {full!r}"
    if not full or len(full) > MAX_NAME_LENGTH:
        raise InvalidQueueName(
            f"{label} gives {full!r}, {len(full)} characters; "
            f"SQS allows 1 to {MAX_NAME_LENGTH}, prefix and suffixes included"
        )
    if not _VALID.fullmatch(strip_fifo(full)):
        raise InvalidQueueName(
            f"{label} gives {full!r}; queue names may hold only letters, digits, "
            "'-' and '_' (and end in '.fifo' for FIFO queues)"
        )


def short_name(full: str, prefix: str) -> str:
    """The name a user types: without the prefix (``.fifo`` is kept)."""
    return full[len(prefix) :] if prefix and full.startswith(prefix) else full


def is_wildcard(name: str) -> bool:
    return name.endswith("*")


def wildcard_prefix(pattern: str, prefix: str) -> str:
    """The queue-name prefix to list for ``pattern`` (``'test*'`` -> ``'qdone_test'``)."""
    return _with_prefix(pattern.rstrip("*"), prefix)
