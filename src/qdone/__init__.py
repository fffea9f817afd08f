"""qdone: a job queue on Amazon SQS or an embedded SQLite store, for the command
line (``qdone``) and for Python programs (``qdone.Client``).

The API's names are loaded on first use, so that ``import qdone`` (and the
``qdone`` command, which imports this package) stays cheap; the AWS SDK is
loaded only by a client of the ``sqs`` broker.
"""

from __future__ import annotations

import importlib

# typing's constant, without loading typing: ``qdone --version`` loads nothing more.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .api import Client, EnqueueBatchResult, NotEnqueued
    from .batchfile import BatchLine
    from .enqueue import EnqueueResult
    from .errors import (
        BatchInputError,
        BatchSendError,
        BrokerError,
        BrokerUnavailable,
        ConfigError,
        InvalidQueueName,
        MessageTooLarge,
        QdoneError,
        QueueAlreadyExists,
        QueueDeletedRecently,
        QueueNotFound,
        StoreDamaged,
        UsageError,
    )
    from .job import JobResult
    from .matching import Counts
    from .monitor import Row, Snapshot
    from .worker.events import (
        BrokerTrouble,
        DuplicateSkipped,
        Event,
        JobArchived,
        JobFailed,
        JobInterrupted,
        JobOverdue,
        JobRetry,
        JobStarted,
        JobSucceeded,
        Listening,
        QueueMissing,
        Summary,
        Waiting,
    )
    from .worker.handler import Handler, Job

__version__ = "2.0.0"

__all__ = [
    "BatchInputError",
    "BatchLine",
    "BatchSendError",
    "BrokerError",
    "BrokerTrouble",
    "BrokerUnavailable",
    "Client",
    "ConfigError",
    "Counts",
    "DuplicateSkipped",
    "EnqueueBatchResult",
    "EnqueueResult",
    "Event",
    "Handler",
    "InvalidQueueName",
    "Job",
    "JobArchived",
    "JobFailed",
    "JobInterrupted",
    "JobOverdue",
    "JobResult",
    "JobRetry",
    "JobStarted",
    "JobSucceeded",
    "Listening",
    "MessageTooLarge",
    "NotEnqueued",
    "QdoneError",
    "QueueAlreadyExists",
    "QueueDeletedRecently",
    "QueueMissing",
    "QueueNotFound",
    "Row",
    "Snapshot",
    "StoreDamaged",
    "Summary",
    "UsageError",
    "Waiting",
    "__version__",
]


#: Where each API name lives, loaded on first use (the worker's take 50 ms; even the
#: errors' dataclasses would slow ``qdone --version``, which imports this package).
_LAZY = {
    **dict.fromkeys(
        [
            "BatchInputError",
            "BatchSendError",
            "BrokerError",
            "BrokerUnavailable",
            "ConfigError",
            "InvalidQueueName",
            "MessageTooLarge",
            "QdoneError",
            "QueueAlreadyExists",
            "QueueDeletedRecently",
            "QueueNotFound",
            "StoreDamaged",
            "UsageError",
        ],
        "errors",
    ),
    **dict.fromkeys(["Client", "EnqueueBatchResult", "NotEnqueued"], "api"),
    "BatchLine": "batchfile",
    "EnqueueResult": "enqueue",
    "JobResult": "job",
    "Counts": "matching",
    **dict.fromkeys(["Row", "Snapshot"], "monitor"),
    **dict.fromkeys(["Handler", "Job"], "worker.handler"),
    **dict.fromkeys(
        [
            "BrokerTrouble",
            "DuplicateSkipped",
            "Event",
            "JobArchived",
            "JobFailed",
            "JobInterrupted",
            "JobOverdue",
            "JobRetry",
            "JobStarted",
            "JobSucceeded",
            "Listening",
            "QueueMissing",
            "Summary",
            "Waiting",
        ],
        "worker.events",
    ),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'qdone' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"qdone.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
