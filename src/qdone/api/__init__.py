"""qdone's public Python API: ``Client`` and the types it takes and returns.

``import qdone`` gives the same names (see ``qdone.__all__``)."""

from __future__ import annotations

from ..batchfile import BatchLine
from ..job import JobResult
from ..matching import Counts
from ..monitor import Row, Snapshot
from ..worker.events import (
    BrokerTrouble,
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
from ..worker.handler import Handler, Job
from .client import Client
from .results import EnqueueBatchResult, NotEnqueued

__all__ = [
    "BatchLine",
    "BrokerTrouble",
    "Client",
    "Counts",
    "EnqueueBatchResult",
    "Event",
    "Handler",
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
    "NotEnqueued",
    "QueueMissing",
    "Row",
    "Snapshot",
    "Summary",
    "Waiting",
]
