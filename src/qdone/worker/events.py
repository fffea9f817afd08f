"""The worker's settings and the events it emits (rendered by ``cli/worker_view.py``)."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import DEFAULTS
from ..errors import UsageError
from ..job import GRACE, JobResult

__all__ = [
    "BrokerTrouble",
    "DuplicateSkipped",
    "Event",
    "JobArchived",
    "JobFailed",
    "JobInterrupted",
    "JobNotStarted",
    "JobOverdue",
    "JobRetry",
    "JobStarted",
    "JobSucceeded",
    "Listening",
    "QueueMissing",
    "Summary",
    "Waiting",
    "WorkerSettings",
]

MAX_VISIBILITY = 43_200  # SQS: 12 h from the receive
MAX_WAIT = 20  # SQS's longest long poll
MAX_CONCURRENCY = 1000


@dataclass(frozen=True)
class WorkerSettings:
    """What ``qdone worker`` was asked to do; the fields below the line are tuning."""

    queues: tuple[str, ...]
    fifo: bool = False
    kill_after: int = DEFAULTS.kill_after
    wait_time: int = DEFAULTS.wait_time
    active_only: bool = False
    drain: bool = False
    archive: bool = False
    concurrency: int = 1
    retry_delay: int = DEFAULTS.retry_delay
    include_failed: bool = False
    include_dead: bool = False
    idle_check: int = 60  # an idle queue is checked at least once per this (seconds)
    # --------------------------------------------------------------------------
    refresh_interval: float = 60.0  # seconds between listings of wildcards
    grace: float = GRACE  # SIGTERM to SIGKILL at kill-after
    initial_visibility: int = 30  # first visibility timeout; doubled while a job runs
    visibility_margin: int = 10  # extend this long before the timeout expires
    flush_interval: float = 1.0  # every delete is sent within this
    receive_linger: float | None = None  # wait for more free slots; None: by broker

    def check(self, service: str) -> None:
        """Raise UsageError for a value ``qdone worker`` refuses, naming its option;
        ``service``: the broker's (``SQS`` or ``SQLite``)."""
        if not self.queues:
            raise UsageError("no queue given: name at least one queue or 'prefix*' wildcard")
        for option, value, low, high in (
            ("--concurrency", self.concurrency, 1, MAX_CONCURRENCY),
            ("--kill-after", self.kill_after, 1, MAX_VISIBILITY),
            ("--wait-time", self.wait_time, 0, MAX_WAIT),
            ("--retry-delay", self.retry_delay, 0, MAX_VISIBILITY),
            ("--idle-check-seconds", self.idle_check, 1, 3600),
        ):
            if isinstance(value, bool) or not isinstance(value, int):
                raise UsageError(f"{option} must be a whole number, not {value!r}")
            if not low <= value <= high:
                raise UsageError(f"{option} must be {low} to {high}, not {value}")
        if self.drain and self.wait_time == 0 and service == "SQS":
            raise UsageError(
                "--drain needs --wait-time above 0 on SQS: short polls can miss messages"
            )

    def cover(self) -> int:
        """Seconds a running job's message must stay hidden: until its kill and report."""
        return min(MAX_VISIBILITY, int(self.kill_after + self.grace) + self.visibility_margin)


@dataclass(frozen=True)
class Listening:
    queues: tuple[str, ...]  # full names


@dataclass(frozen=True)
class QueueMissing:
    queue: str  # as given
    full_name: str


@dataclass(frozen=True)
class JobStarted:
    queue: str
    job: str
    command: str
    attempt: int


@dataclass(frozen=True)
class JobSucceeded:
    queue: str
    job: str
    command: str
    attempt: int
    result: JobResult


@dataclass(frozen=True)
class JobFailed:
    queue: str
    job: str
    command: str
    attempt: int
    max_attempts: int | None  # None: the queue has no redrive policy
    final: bool  # the worker will not retry it (the redrive moves it, or no redrive)
    result: JobResult
    #: No redrive policy: seconds until the message is visible again (the queue's
    #: visibility timeout); None on a queue with one.
    returns_in: int | None = None


@dataclass(frozen=True)
class JobInterrupted:
    """A job ended by the service's stop signal while the worker stops, or killed
    (``killed``) by the worker's second signal: no failure (see
    ``worker/interrupt.py``). ``sent_back_as``: the message id of the copy sent in
    its place; None when none was (the message comes back, this attempt used)."""

    queue: str
    job: str
    command: str
    attempt: int
    result: JobResult
    sent_back_as: str | None
    killed: bool = False


@dataclass(frozen=True)
class JobNotStarted:
    """The worker could not start a job (out of open files, processes or memory):
    not the job's fault. Its message went back without using an attempt
    (``sent_back_as``: its copy's id, or None when it was made visible again), and
    the worker runs at most ``concurrency`` jobs at once from now on (0: it stops,
    since no job could start with none running)."""

    queue: str
    job: str
    error: str
    sent_back_as: str | None
    concurrency: int


@dataclass(frozen=True)
class JobOverdue:
    """A Python handler still runs at ``kill_after``: a thread cannot be killed, so it
    runs on, its message is no longer kept hidden, and it will count as failed."""

    queue: str
    job: str
    command: str
    attempt: int
    kill_after: float


@dataclass(frozen=True)
class JobRetry:
    queue: str
    job: str
    command: str
    attempt: int  # the attempt that failed
    delay: int  # seconds until the message is visible again


@dataclass(frozen=True)
class JobArchived:
    queue: str
    job: str
    command: str


@dataclass(frozen=True)
class DuplicateSkipped:
    """A copy of a message whose job runs or ran (``QdoneDeduplicationId``): deleted
    without running."""

    queue: str
    job: str
    command: str
    dedup_id: str


@dataclass(frozen=True)
class Waiting:
    """Shutting down: what the worker still waits for."""

    jobs: int
    receives: int


@dataclass(frozen=True)
class BrokerTrouble:
    queue: str
    message: str
    retry_in: float


@dataclass(frozen=True)
class Summary:
    ran: int
    succeeded: int
    failed: int
    retried: int  # of the failed, how many will run again
    archived: int
    killed: bool
    interrupted: int = 0  # jobs ended by the service's stop, their messages given back
    # Of the failed, how many had no attempt left: in the failed queue, or moved there
    # by the redrive. A failure on a queue without a redrive policy is not counted: its
    # message stays where it is and comes back after the visibility timeout.
    gave_up: int = 0


Event = (
    Listening
    | QueueMissing
    | JobStarted
    | JobSucceeded
    | JobFailed
    | JobInterrupted
    | JobNotStarted
    | JobOverdue
    | JobRetry
    | JobArchived
    | DuplicateSkipped
    | Waiting
    | BrokerTrouble
    | Summary
)
