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
    "validate_layout",
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


def validate_layout(fail_suffix: str, dlq_suffix: str) -> None:
    """Raise InvalidQueueName for suffixes that cannot make a working layout: empty
    (the failed queue would be the queue itself), holding ``.fifo`` or other
    characters no name may hold, or the same for failed and dead queues."""
    for flag, suffix in (("--fail-suffix", fail_suffix), ("--dlq-suffix", dlq_suffix)):
        if not _VALID.fullmatch(suffix):
            raise InvalidQueueName(
                f"{flag} {suffix!r} cannot be used: a suffix must be one or more letters, "
                "digits, '-' or '_' (FIFO queues get '.fifo' after it)"
            )
    if fail_suffix == dlq_suffix:
        raise InvalidQueueName(
            f"--dlq-suffix {dlq_suffix!r} is also the suffix of failed queues; "
            "dead queues need a suffix of their own"
        )


def queue_names(
    name: str, *, prefix: str, fail_suffix: str, dead_suffix: str, fifo: bool
) -> QueueNames:
    """Full names for queue ``name``; a name ending in ``.fifo`` is a FIFO queue."""
    fifo = fifo or name.endswith(FIFO_SUFFIX)
    base = _with_prefix(strip_fifo(name), prefix)
    if base == prefix:
        where = " once the prefix and '.fifo' are taken off" if name else ""
        raise InvalidQueueName(f"queue name {name!r} is empty{where}")
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
    """The queue-name prefix to list for ``pattern`` (``'test*'`` -> ``'qdone_test'``);
    raises InvalidQueueName when no queue name can start with it."""
    listed = _with_prefix(pattern[:-1], prefix)
    base, dot, rest = listed.partition(".")
    if (
        len(listed) > MAX_NAME_LENGTH
        or (base and not _VALID.fullmatch(base))
        or (dot and not FIFO_SUFFIX.startswith(dot + rest))
    ):
        raise InvalidQueueName(
            f"wildcard {pattern!r} lists names starting {listed!r}, which no queue name "
            "can: names hold only letters, digits, '-' and '_' (and end in '.fifo'), "
            "with one '*' at the end of a wildcard"
        )
    return listed
