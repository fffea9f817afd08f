"""The errors qdone raises, all under one root.

::

    QdoneError                      anything qdone reports as one clear line
    ├── UsageError                  bad input: option values, names, files   (exit 2)
    │   ├── InvalidQueueName
    │   ├── MessageTooLarge
    │   └── BatchInputError         a batch file line that cannot be enqueued
    ├── ConfigError                 a setting that cannot work (broker URL…)  (exit 2)
    ├── CacheUnavailable            the deduplication store did not answer and
    │                               --dedup-on-error is fail                  (exit 3)
    └── BrokerError                 the queue service failed or refused        (exit 1)
        ├── BrokerUnavailable       unreachable endpoint, missing credentials, an
        │                           AWS configuration that cannot be used, a
        │                           file that is not a qdone store            (exit 3)
        ├── QueueNotFound
        ├── QueueAlreadyExists      exists with other attributes (see `qdone check`)
        ├── QueueDeletedRecently    SQS refuses to re-create it for 60 s
        └── BatchSendError          some entries of a batch were not sent

A failed job is not an error: the worker reports it as data.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "BatchInputError",
    "BatchSendError",
    "BrokerError",
    "BrokerUnavailable",
    "CacheUnavailable",
    "ConfigError",
    "ExitCode",
    "FailedEntry",
    "InvalidQueueName",
    "MessageTooLarge",
    "QdoneError",
    "QueueAlreadyExists",
    "QueueDeletedRecently",
    "QueueNotFound",
    "StoreDamaged",
    "UsageError",
]


class ExitCode(enum.IntEnum):
    """Exit codes of the ``qdone`` command, documented in ``qdone --help``."""

    OK = 0
    FAILURE = 1  # a job, a batch entry or a check failed; a broker error
    USAGE = 2  # bad options, names or input files
    UNAVAILABLE = 3  # broker unreachable, no credentials, not a qdone store
    INTERRUPTED = 130  # stopped by a second signal


class QdoneError(Exception):
    """Root of qdone's errors. ``str(err)`` is the one line shown to the user."""

    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class UsageError(QdoneError):
    exit_code = ExitCode.USAGE


class InvalidQueueName(UsageError):
    pass


class MessageTooLarge(UsageError):
    pass


class BatchInputError(UsageError):
    pass


class ConfigError(QdoneError):
    exit_code = ExitCode.USAGE


class CacheUnavailable(QdoneError):
    """The fleet's Redis (or the store's deduplication tables) did not answer where
    the user asked to fail rather than go on without it."""

    exit_code = ExitCode.UNAVAILABLE


class BrokerError(QdoneError):
    exit_code = ExitCode.FAILURE


class BrokerUnavailable(BrokerError):
    exit_code = ExitCode.UNAVAILABLE


class StoreDamaged(BrokerUnavailable):
    """The SQLite store's file is damaged: no retry can mend it, so a worker ends
    (exit 3) instead of retrying."""


class QueueNotFound(BrokerError):
    def __init__(self, queue: str, hint: str | None = None) -> None:
        super().__init__(f"queue {queue} does not exist", hint)
        self.queue = queue


class QueueAlreadyExists(BrokerError):
    """A queue of that name exists with other attributes."""


class QueueDeletedRecently(BrokerError):
    pass


@dataclass(frozen=True)
class FailedEntry:
    """One entry of a batch call that the broker did not accept."""

    id: str
    code: str
    message: str
    sender_fault: bool


class BatchSendError(BrokerError):
    """Some entries of a batch were not sent, even after retries."""

    def __init__(self, message: str, failed: Sequence[FailedEntry]) -> None:
        super().__init__(message)
        self.failed = list(failed)
