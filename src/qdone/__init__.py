"""qdone: a job queue on Amazon SQS or an embedded SQLite store, for the command
line (``qdone``) and for Python programs (``qdone.Client``).

The API's names are loaded on first use, so that ``import qdone`` (and the
``qdone`` command, which imports this package) stays cheap; the AWS SDK is
loaded only by a client of the ``sqs`` broker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
    UsageError,
)

if TYPE_CHECKING:
    from .api import (
        BatchLine,
        BrokerTrouble,
        Client,
        Counts,
        EnqueueBatchResult,
        Event,
        Handler,
        Job,
        JobArchived,
        JobFailed,
        JobInterrupted,
        JobOverdue,
        JobResult,
        JobRetry,
        JobStarted,
        JobSucceeded,
        Listening,
        NotEnqueued,
        QueueMissing,
        Row,
        Snapshot,
        Summary,
        Waiting,
    )

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
    "EnqueueBatchResult",
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
    "Summary",
    "UsageError",
    "Waiting",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name in __all__:  # an API name not loaded yet
        from . import api

        value = getattr(api, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'qdone' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
