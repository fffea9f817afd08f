"""Deletes and visibility changes, batched across jobs per queue.

Two threads (or ``tick()`` from a test) send them, one for visibility changes and
one for deletes, so that a call slowed by retries holds back neither: a queue's
deletes go out as soon as ten are pending, and every delete within
``flush_interval``. Messages
being held (received, job not yet reported) are extended before their
visibility timeout expires: by ``margin`` seconds ahead, doubling the timeout,
capped by the message's cover (its job's kill-after) and SQS's 12 hours.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Mapping, Sized
from dataclasses import dataclass
from typing import TypeVar

from ..broker.base import MAX_BATCH, Broker, ChangeVisibility, Message, Receipt
from ..errors import BrokerError
from ..naming import FIFO_SUFFIX
from .events import MAX_VISIBILITY

__all__ = ["Acker"]

log = logging.getLogger(__name__)
T = TypeVar("T")
_TRIES = 3  # a batch call that raises is tried again on the next flush, this often


@dataclass
class _Held:
    message: Message
    received_at: float
    expires_at: float
    timeout: int
    cover_until: float | None = None  # None: waiting its turn, no kill-after yet


@dataclass
class _Change:
    message: Message
    timeout: int
    tries: int = 0


class Acker:
    """Batches deletes and visibility changes; thread-safe."""

    def __init__(
        self,
        broker: Broker,
        *,
        clock: Callable[[], float],
        margin: int,
        flush_interval: float = 1.0,
        on_error: Callable[[str, str], None] | None = None,
        on_sent: Callable[[], None] | None = None,  # after changes or FIFO deletes went out
        on_settled: Callable[[], None] | None = None,  # after a send, no longer pending
    ) -> None:
        self.broker = broker
        # Deletes sent per call: SQLite deletes several batches in one transaction.
        self._per_delete = MAX_BATCH * max(1, min(broker.batches_per_send, 10))
        self._clock = clock
        self._margin = margin
        self._interval = flush_interval
        self._on_error = on_error or (lambda _queue, _text: None)
        self._on_sent = on_sent or (lambda: None)
        self._on_settled = on_settled or (lambda: None)
        self._sending = 0
        self._cond = threading.Condition()
        self._deletes: dict[str, list[tuple[Message, int]]] = {}
        self._changes: dict[str, list[_Change]] = {}
        self._held: dict[str, _Held] = {}
        # No held message expires before this (a bound: extensions only push expiries
        # later), so that a receive need not look at every held message.
        self._earliest = math.inf
        self._stopped = False
        self._urgent = False
        self._threads: list[threading.Thread] = []

    # -- what the worker tells it ----------------------------------------------------

    def hold(self, message: Message, received_at: float, timeout: int) -> None:
        """Keep ``message`` hidden (received with ``timeout``) until ``release``."""
        held = _Held(message, received_at, received_at + timeout, timeout)
        with self._cond:
            self._held[message.receipt] = held
            self._earliest = min(self._earliest, held.expires_at)

    def cover(self, message: Message, seconds: int) -> None:
        """Its job started: keep it hidden up to ``seconds`` from now, no longer."""
        with self._cond:
            held = self._held.get(message.receipt)
            if held is not None:
                held.cover_until = self._clock() + seconds

    def release(self, message: Message) -> None:
        with self._cond:
            self._held.pop(message.receipt, None)

    def delete(self, message: Message, urgent: bool = False) -> None:
        """Delete ``message`` within ``flush_interval``; ``urgent``: now (a FIFO group
        waits for it)."""
        with self._cond:
            # Still held (extended when due) until the delete is sent: a delete
            # delayed by a slow flush must not let the message come back.
            pending = self._deletes.setdefault(message.queue_url, [])
            pending.append((message, 0))
            if urgent or len(pending) >= self._per_delete:
                self._urgent = True
                self._cond.notify_all()

    def flush_soon(self) -> None:
        """Send what is pending now rather than at the next interval."""
        with self._cond:
            if self._deletes or self._changes:
                self._urgent = True
                self._cond.notify_all()

    def change(self, message: Message, timeout: int) -> None:
        """Make ``message`` visible ``timeout`` seconds from now (0: at once)."""
        with self._cond:
            self._held.pop(message.receipt, None)
            self._changes.setdefault(message.queue_url, []).append(_Change(message, timeout))
            self._cond.notify_all()

    def catch_up(self, url: str) -> None:
        """Before a receive on ``url``: if a message of that queue is still held past
        its visibility timeout (the worker stood still: SIGSTOP, a suspended
        machine), extend it and send what is pending now. Else the receive could
        take it again and, with no attempt left, move to the failed queue the
        message of a job that succeeded meanwhile, before its delete goes out."""
        now = self._clock()
        with self._cond:
            if now < self._earliest:
                return
            lapsed = any(
                h.message.queue_url == url and h.expires_at <= now for h in self._held.values()
            )
            self._earliest = min((h.expires_at for h in self._held.values()), default=math.inf)
        if lapsed:
            self.tick()

    def pending(self) -> int:
        """Deletes and changes not yet sent (those being sent included)."""
        with self._cond:
            queued = sum(map(len, self._deletes.values())) + sum(map(len, self._changes.values()))
            return queued + self._sending

    # -- sending ---------------------------------------------------------------------

    def tick(self) -> None:
        """Queue the extensions that are due, then send everything pending."""
        self._extend_due()
        self.flush()

    def flush(self) -> None:
        self.flush_changes()
        self.flush_deletes()

    def flush_changes(self) -> None:
        """Send the pending visibility changes (extensions first)."""
        with self._cond:
            changes, self._changes = self._changes, {}
            count = self._count_sending(changes)
        if count:
            # Any change may make a message receivable again.
            self._send_all(changes, count, self._send_changes, notify=True)

    def flush_deletes(self) -> None:
        """Send the pending deletes. (Their own thread: a delete slowed by retries
        must not hold back the extensions that keep running jobs' messages hidden.)"""
        with self._cond:
            deletes, self._deletes = self._deletes, {}
            count = self._count_sending(deletes)
        if count:
            # A FIFO delete frees its group; a standard delete frees nothing.
            fifo = any(url.endswith(FIFO_SUFFIX) for url in deletes)
            self._send_all(deletes, count, self._send_deletes, notify=fifo, per=self._per_delete)

    def _count_sending(self, taken: Mapping[str, Sized]) -> int:
        """Count what was just taken off a queue as being sent (lock held), so that
        ``pending()`` never misses it."""
        count = sum(map(len, taken.values()))
        self._sending += count
        return count

    def _send_all(
        self,
        taken: dict[str, list[T]],
        count: int,
        send: Callable[[str, list[T]], None],
        *,
        notify: bool,
        per: int = MAX_BATCH,
    ) -> None:
        """Send ``taken``, ``per`` items a call per queue; then ``on_sent`` if ``notify``."""
        try:
            for url, items in taken.items():
                for i in range(0, len(items), per):
                    send(url, items[i : i + per])
        finally:
            # Tell the worker before no longer counting these as pending: a drain that
            # found nothing pending must not miss a message this just let go.
            if notify:
                self._on_sent()
            with self._cond:
                self._sending -= count
            self._on_settled()  # a drain waiting for its last deletes sees them gone

    def _extend_due(self) -> None:
        with self._cond:
            self._queue_extensions(self._clock())

    def _queue_extensions(self, now: float) -> None:
        """Queue, ahead of other changes, an extension of each message due (lock held)."""
        due: dict[str, list[_Change]] = {}
        for held in self._held.values():
            if now < held.expires_at - self._margin:
                continue
            timeout = self._next_timeout(held, now)
            if timeout > held.expires_at - now:
                held.expires_at, held.timeout = now + timeout, timeout
                due.setdefault(held.message.queue_url, []).append(_Change(held.message, timeout))
        for url, extensions in due.items():
            self._changes[url] = extensions + self._changes.get(url, [])

    def _next_timeout(self, held: _Held, now: float) -> int:
        limit = MAX_VISIBILITY - (now - held.received_at) - 1
        if held.cover_until is not None:
            limit = min(limit, held.cover_until - now)
        return max(0, min(2 * held.timeout, math.floor(limit)))

    def _send_deletes(self, url: str, items: list[tuple[Message, int]]) -> None:
        """Delete ``items`` in batches of ten, in one call of ``delete_batches``."""
        batches = [items[i : i + MAX_BATCH] for i in range(0, len(items), MAX_BATCH)]
        entries = [[Receipt(str(i), m.receipt) for i, (m, _) in enumerate(b)] for b in batches]
        try:
            results = self.broker.delete_batches(url, entries)
        except BrokerError as exc:
            again = [(m, tries + 1) for m, tries in items if tries + 1 < _TRIES]
            given_up = [m for m, tries in items if tries + 1 >= _TRIES]
            with self._cond:
                self._deletes.setdefault(url, []).extend(again)
                for m in given_up:  # let it come back: its job will run again
                    self._held.pop(m.receipt, None)
            text = f"deleting {len(items)} messages failed: {exc}"
            if given_up:
                text += (
                    f"; gave up on {len(given_up)} after {_TRIES} tries: their jobs will run again"
                )
            self._on_error(url, text)
            return
        with self._cond:
            for m, _ in items:
                self._held.pop(m.receipt, None)
        for batch, result in zip(batches, results, strict=True):
            for failed in result.failed:
                message = batch[int(failed.id)][0]
                self._on_error(url, f"message {message.message_id} not deleted: {failed.message}")

    def _send_changes(self, url: str, items: list[_Change]) -> None:
        entries = [
            ChangeVisibility(str(i), c.message.receipt, c.timeout) for i, c in enumerate(items)
        ]
        try:
            result = self.broker.change_visibility_batch(url, entries)
        except BrokerError as exc:
            again = [c for c in items if c.tries + 1 < _TRIES]
            for c in again:
                c.tries += 1
            with self._cond:
                self._changes.setdefault(url, []).extend(again)
            self._on_error(url, f"changing visibility failed: {exc}")
            return
        for failed in result.failed:  # e.g. a receipt already deleted
            log.debug("visibility change refused: %s", failed.message, extra={"queue": url})

    # -- the thread ------------------------------------------------------------------

    def start(self) -> None:
        for name, loop in (("changes", self._changes_loop), ("deletes", self._deletes_loop)):
            thread = threading.Thread(target=loop, name=f"qdone-acker-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Send what is pending and end the threads."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join()
        self.flush()

    def _changes_loop(self) -> None:
        while True:
            with self._cond:
                if self._stopped:
                    return
                if not self._changes:
                    self._cond.wait(self._interval)
            self._extend_due()
            self.flush_changes()

    def _deletes_loop(self) -> None:
        while True:
            with self._cond:
                if self._stopped:
                    return
                if not self._urgent:
                    self._cond.wait(self._interval)
                self._urgent = False
            self.flush_deletes()
