"""``qdone.Client``: enqueue and run jobs from a Python program, through the same
code as the ``qdone`` command (which is a thin layer over this class).

A client is safe to share between threads: each thread gets its own SQLite
connection, and SQS calls share one connection pool. After ``os.fork()`` a
client used in the child opens its broker again there; the parent's connections
are left alone (kept, never used or closed by the child).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING

from ..config import DEFAULTS
from ..enqueue import EnqueueResult, SendSettings, enqueue, enqueue_batch
from ..errors import UsageError
from .connection import Connection
from .fleet import deduper, fleet
from .options import dedup_settings, names, queue_options, whole

# The worker, the monitor and enqueue-batch's results are loaded by the methods that
# use them: an enqueue (``qdone enqueue`` included) loads none of them.
if TYPE_CHECKING:
    from ..batchfile import BatchLine
    from ..dedup import RunClaims
    from ..monitor import Snapshot
    from ..worker import Worker
    from ..worker.events import Event, Summary
    from ..worker.handler import Handler
    from .results import EnqueueBatchResult

__all__ = ["Client"]


class Client(Connection):
    """A connection to one broker: enqueue jobs, run them, read queue counts.

    ``broker`` is ``"sqlite"`` (the store in the user data dir, as the command's
    default), ``"sqlite:///path/to/file.db"`` or ``"sqs"``. The keyword options
    are the command's, with its defaults (``cache_uri``: the fleet's Redis, told of
    every queue a job is sent to); ``on_create`` is called with the full name of
    each queue the client creates. ``reads_only``: the client only reads (counts),
    and may look at a SQLite store it cannot write. Bad values raise ``UsageError`` or
    ``ConfigError`` with the messages ``qdone`` prints. Use it as a context
    manager, or call ``close()``.
    """

    # -- the context manager ----------------------------------------------------------

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- enqueueing -------------------------------------------------------------------

    def enqueue(
        self,
        queue: str,
        command: str,
        *,
        fifo: bool = False,
        group_id: str | None = None,
        deduplication_id: str | None = None,
        delay: int | None = None,
        retries: int = 0,
        dlq: bool = False,
        dlq_suffix: str = DEFAULTS.dlq_suffix,
        dlq_after: int = DEFAULTS.dlq_after,
        fail_delay: int = 0,
        message_retention_period: int = DEFAULTS.message_retention_period,
        tags: Mapping[str, str] | None = None,
        external_dedup: bool = False,
        dedup_period: int = DEFAULTS.dedup_period,
        dedup_id_per_message: bool = False,
        dedup_stats: bool = False,
        dedup_on_error: str = "send",
    ) -> str:
        """Put ``command`` on ``queue`` (creating the queue and its failed queue on
        first use, with these options); the job's message id ("" for a duplicate
        that ``external_dedup`` skipped). ``send`` takes the same arguments and
        says more."""
        return self.send(
            queue,
            command,
            fifo=fifo,
            group_id=group_id,
            deduplication_id=deduplication_id,
            delay=delay,
            retries=retries,
            dlq=dlq,
            dlq_suffix=dlq_suffix,
            dlq_after=dlq_after,
            fail_delay=fail_delay,
            message_retention_period=message_retention_period,
            tags=tags,
            external_dedup=external_dedup,
            dedup_period=dedup_period,
            dedup_id_per_message=dedup_id_per_message,
            dedup_stats=dedup_stats,
            dedup_on_error=dedup_on_error,
        ).message_id

    def send(
        self,
        queue: str,
        command: str,
        *,
        fifo: bool = False,
        group_id: str | None = None,
        deduplication_id: str | None = None,
        delay: int | None = None,
        retries: int = 0,
        dlq: bool = False,
        dlq_suffix: str = DEFAULTS.dlq_suffix,
        dlq_after: int = DEFAULTS.dlq_after,
        fail_delay: int = 0,
        message_retention_period: int = DEFAULTS.message_retention_period,
        tags: Mapping[str, str] | None = None,
        external_dedup: bool = False,
        dedup_period: int = DEFAULTS.dedup_period,
        dedup_id_per_message: bool = False,
        dedup_stats: bool = False,
        dedup_on_error: str = "send",
    ) -> EnqueueResult:
        """As ``enqueue``, returning what ``qdone enqueue`` reports: the message id
        and full queue name, the queues created, whether a duplicate was skipped
        (``external_dedup``) and notes on options the queue does not have."""
        if not isinstance(queue, str) or not isinstance(command, str):
            raise UsageError(f"queue and command must be strings, not {queue!r}, {command!r}")
        whole("--delay", delay)
        q = queue_options(
            fifo=fifo,
            retries=retries,
            dlq=dlq,
            dlq_after=dlq_after,
            fail_delay=fail_delay,
            message_retention_period=message_retention_period,
            tags=tags,
        )
        dedup = dedup_settings(
            external_dedup,
            deduplication_id,
            dedup_period,
            dedup_id_per_message,
            dedup_stats,
            dedup_on_error,
        )
        settings = SendSettings(group_id=group_id, dedup_id=deduplication_id, delay=delay)
        return enqueue(
            self.broker,
            self._options(dlq_suffix),
            q,
            queue,
            command,
            settings,
            on_create=self._on_create,
            on_sent=self._on_sent(),
            deduper=None if dedup is None else deduper(self.dedup_store(), dedup),
        )

    def enqueue_batch(
        self,
        jobs: Iterable[tuple[str, str] | BatchLine],
        *,
        fifo: bool = False,
        group_id: str | None = None,
        group_id_per_message: bool = False,
        delay: int | None = None,
        retries: int = 0,
        dlq: bool = False,
        dlq_suffix: str = DEFAULTS.dlq_suffix,
        dlq_after: int = DEFAULTS.dlq_after,
        fail_delay: int = 0,
        message_retention_period: int = DEFAULTS.message_retention_period,
        tags: Mapping[str, str] | None = None,
        external_dedup: bool = False,
        dedup_period: int = DEFAULTS.dedup_period,
        dedup_id_per_message: bool = False,
        dedup_stats: bool = False,
        dedup_on_error: str = "send",
        progress: Callable[[int], None] | None = None,
    ) -> EnqueueBatchResult:
        """Enqueue ``(queue, command)`` pairs in batches of up to 10 per queue.

        The whole input is checked first: a bad queue name or command raises
        ``UsageError`` naming it (``jobs[3]: ...``) and nothing is sent. Entries
        the broker refuses are retried; what still fails is listed in the result's
        ``failed``, and everything else was enqueued. ``progress`` is called with
        the number of jobs of each batch sent."""
        from .results import batch_lines, batch_result

        whole("--delay", delay)
        q = queue_options(
            fifo=fifo,
            retries=retries,
            dlq=dlq,
            dlq_after=dlq_after,
            fail_delay=fail_delay,
            message_retention_period=message_retention_period,
            tags=tags,
        )
        dedup = dedup_settings(
            external_dedup, None, dedup_period, dedup_id_per_message, dedup_stats, dedup_on_error
        )
        settings = SendSettings(
            group_id=group_id, group_per_message=group_id_per_message, delay=delay
        )
        lines = batch_lines(jobs)
        outcome = enqueue_batch(
            self.broker,
            self._options(dlq_suffix),
            q,
            lines,
            settings,
            on_create=self._on_create,
            progress=progress,
            on_sent=self._on_sent(),
            deduper=None if dedup is None else deduper(self.dedup_store(), dedup),
        )
        return batch_result(lines, outcome)

    # -- working ----------------------------------------------------------------------

    def work(
        self,
        queues: str | Sequence[str],
        *,
        handler: Handler | None = None,
        concurrency: int = 1,
        drain: bool = False,
        kill_after: int = DEFAULTS.kill_after,
        wait_time: int = DEFAULTS.wait_time,
        active_only: bool = False,
        archive: bool = False,
        retry_delay: int = DEFAULTS.retry_delay,
        fifo: bool = False,
        include_failed: bool = False,
        include_dead: bool = False,
        idle_check: int = 60,
        dlq_suffix: str = DEFAULTS.dlq_suffix,
        on_event: Callable[[Event], None] | None = None,
        archive_to: Callable[[str], None] | None = None,
        claims: RunClaims | None = None,
    ) -> Summary:
        """Take jobs off ``queues`` (names or ``'prefix*'`` wildcards) and run them, in
        the calling thread, until ``stop()`` (or, with ``drain``, until every queue
        is empty and no job runs); the summary of what ran.

        Without ``handler`` each job is run by ``/bin/sh -c``, as ``qdone worker``
        does. With one, ``handler(job)`` is called on one of ``concurrency``
        threads: returning is success, raising is failure (see ``worker.handler``).
        ``on_event`` gets every event (``JobSucceeded``, ``JobFailed``, ...), from
        the worker's threads, one at a time. With ``archive``, ``archive_to`` is
        given each command (raising ``OSError`` when it cannot take it); the
        message is deleted once it returned. ``claims``: the run-once claims of
        messages enqueued with external deduplication (``qdone.dedup``)."""
        from ..worker import Worker
        from ..worker.events import WorkerSettings

        settings = WorkerSettings(
            queues=names("queues", queues),
            fifo=fifo,
            kill_after=kill_after,
            wait_time=wait_time,
            active_only=active_only,
            drain=drain,
            archive=archive,
            concurrency=concurrency,
            retry_delay=retry_delay,
            include_failed=include_failed,
            include_dead=include_dead,
            idle_check=idle_check,
        )
        broker = self.broker
        settings.check(broker.service)
        worker = Worker(
            broker,
            self._options(dlq_suffix),
            settings,
            on_event=on_event or (lambda _event: None),
            handler=handler,
            archive_to=archive_to,
            claims=claims,
            **fleet(self._cache, broker),
        )
        self._workers.append(worker)
        if self._stop_pending:  # stop() came while this call was starting
            self._stop_pending = False
            worker.stop()
        try:
            return worker.run()
        finally:
            self._workers.remove(worker)

    def stop(self) -> None:
        """Make the ``work()`` calls running now take no new job, let their running
        jobs finish, send their deletes and return (``qdone worker``'s first
        SIGTERM). Safe from another thread or a signal handler. Called when no
        ``work()`` runs, it makes the next one return at once: a signal that
        arrives while ``work()`` starts is not lost."""
        self._each_worker(lambda worker: worker.stop())

    def kill(self) -> None:
        """As ``stop()``, but kill the running shell jobs' process groups and make
        ``work()`` return at once (the second SIGTERM); their messages go back
        without using an attempt (see ``worker/interrupt.py``). A handler's thread
        cannot be killed: it runs on, unwaited for."""
        self._each_worker(lambda worker: worker.kill())

    def _each_worker(self, action: Callable[[Worker], None]) -> None:
        # On a new thread: a signal handler must not wait for a lock that the code
        # it interrupted may hold.
        self._stop_pending = True  # before the list is read: see work()
        workers = list(self._workers)
        if workers:
            self._stop_pending = False

        def act() -> None:
            for worker in workers:
                action(worker)

        if workers:
            threading.Thread(target=act, name="qdone-stop", daemon=True).start()

    # -- counts -----------------------------------------------------------------------

    def counts(self, patterns: str | Sequence[str]) -> Snapshot:
        """Visible, in-flight and delayed counts of the queues matching ``patterns``
        (names or ``'prefix*'`` wildcards) and of their failed queues: what
        ``qdone monitor`` shows."""
        from ..monitor import take_snapshot

        return take_snapshot(self.broker, self.options, names("patterns", patterns))

    def save_counts(self, snapshot: Snapshot, patterns: str | Sequence[str]) -> int:
        """Publish ``snapshot``'s totals per pattern to CloudWatch (SQS only), as
        ``qdone monitor --save``; how many metrics."""
        from ..monitor import save

        return save(self.broker, snapshot, self.options, names("patterns", patterns))
