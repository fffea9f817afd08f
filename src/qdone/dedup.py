"""Each job once: deduplication windows at enqueue, run claims in the worker.

Wire-compatible with Node qdone 2.x (``src/dedup.js`` of 2.0.37):

- The deduplication id of a message is ``--deduplication-id`` if given, else a new
  id per message with ``--dedup-id-per-message``, else derived from the command:
  trimmed, every character outside ``[A-Za-z0-9]`` and ASCII punctuation becomes
  ``_`` (each UTF-16 unit, as in JavaScript), and an id over 128 characters keeps
  its first 80 and ends in ``...sha1:`` and the SHA-1 of the whole (``dedup_id``).
- It travels in the message attribute ``QdoneDeduplicationId``. On a FIFO queue the
  SQS ``MessageDeduplicationId`` becomes a new id per message, so that SQS's own
  5-minute window does not interfere.
- The window is the Redis key ``<cache-prefix>dedup:<id>``, a counter: INCR; the
  enqueue whose INCR returns 1 sends, later ones inside the window are duplicates.
  It expires ``--dedup-period`` seconds after it opened (Node 2.0.37 passed a
  millisecond timestamp to EXPIREAT; we set the expiry it meant). A worker deletes
  it once the job succeeded, so the next enqueue sends again.
- ``--dedup-stats``: the sorted sets ``<cache-prefix>dedup-stats:duplicateSet``
  (member the window's key, score the duplicates seen, ZADD GT) and
  ``…:expirationSet`` (score the window's end, in seconds since the epoch).

qdone adds what Node does not have: ``QdoneDeduplicationToken``, an id per enqueued
message, so a worker tells copies of one send (SQS keeps both when a batch's answer
is lost and botocore sends it again) from a later enqueue of the same command. The
worker claims ``(id, token)`` before running: a copy received while the job runs, or
after it succeeded, is deleted without running; a failed job releases its claim.

Where windows and claims live is a ``DedupStore``: Redis (``cache/dedup.py``) or
the SQLite store's own tables (``broker/sqlite_dedup.py``).
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from .broker.base import Message, SendEntry
from .config import DEFAULTS

__all__ = [
    "ATTRIBUTE",
    "DEFAULT_PERIOD",
    "TOKEN_ATTRIBUTE",
    "Admission",
    "DedupSettings",
    "DedupStore",
    "Deduper",
    "RunClaims",
    "dedup_id",
]

log = logging.getLogger("qdone.cache.dedup")

ATTRIBUTE = "QdoneDeduplicationId"  # Node qdone 2.x's
TOKEN_ATTRIBUTE = "QdoneDeduplicationToken"  # qdone's own: one per message sent
DEFAULT_PERIOD = DEFAULTS.dedup_period
MAX_ID = 128
_SHA_SEPARATOR = "...sha1:"
_REFUSED = re.compile(r"[^a-zA-Z0-9!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~]")


def dedup_id(command: str) -> str:
    """The deduplication id Node qdone 2.x derives from a command."""
    text = command.strip(_JS_WHITESPACE)
    # JavaScript replaces each UTF-16 code unit: a character beyond U+FFFF is two.
    text = _REFUSED.sub(lambda m: "__" if ord(m.group()) > 0xFFFF else "_", text)
    if len(text) > MAX_ID:
        digest = hashlib.sha1(text.encode()).hexdigest()
        text = text[: MAX_ID - len(_SHA_SEPARATOR) - len(digest)] + _SHA_SEPARATOR + digest
    return text


# What JavaScript's String.prototype.trim removes.
_JS_WHITESPACE = (
    "\t\n\x0b\x0c\r \xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
)


class DedupStore(Protocol):
    """Where windows and claims live (Redis, or the SQLite store). Every method
    answers None (or False) when the store did not answer; it never raises."""

    def open_windows(self, ids: Sequence[str], period: int, stats: bool) -> list[int] | None:
        """Count one more copy of each id in its window, opening a window that is not
        open for ``period`` seconds: the copies now counted (1: this one opened it)."""

    def close_windows(self, ids: Sequence[str]) -> bool:
        """Close the windows of ``ids`` (their job ran, or their send was refused)."""

    def claim(self, key: str, holder: str, ttl: int) -> bool | None:
        """Claim the run of ``key`` for ``holder`` (a message id) for ``ttl`` seconds:
        True if it is ours (free, or already held by this holder)."""

    def finish(self, key: str, done_ttl: int | None) -> bool:
        """End a claim: keep it marked done for ``done_ttl`` seconds, or (None) drop it."""


@dataclass(frozen=True)
class DedupSettings:
    """``--external-dedup`` and its options."""

    period: int = DEFAULT_PERIOD
    explicit_id: str | None = None  # --deduplication-id
    id_per_message: bool = False
    stats: bool = False
    on_error: Literal["send", "fail"] = "send"


@dataclass
class Admission:
    """What may be sent of some entries: ``keep`` (their places) and ``entries``
    (with the deduplication attributes), how many were duplicates, and the places
    of entries not sent because the store did not answer (``--dedup-on-error fail``)."""

    ids: list[str] = field(default_factory=list)  # every entry's deduplication id
    keep: list[int] = field(default_factory=list)
    entries: list[SendEntry] = field(default_factory=list)
    skipped: int = 0
    failed: list[int] = field(default_factory=list)


def _new_id() -> str:
    return str(uuid.uuid1())


class Deduper:
    """The enqueue side: which entries open a window and are sent. Thread-safe."""

    def __init__(
        self,
        store: DedupStore,
        settings: DedupSettings,
        ids: Callable[[], str] = _new_id,
    ) -> None:
        self.store = store
        self.settings = settings
        self.ids = ids
        self._warned = threading.Event()

    def admit(self, entries: Sequence[SendEntry], fifo: bool) -> Admission:
        """Give each entry its id and token, open their windows, keep the first copy."""
        marked = [self._mark(entry, fifo) for entry in entries]
        ids = [entry.attributes[ATTRIBUTE] for entry in marked]
        counts = self.store.open_windows(ids, self.settings.period, self.settings.stats)
        admission = Admission(ids)
        if counts is None:
            if self.settings.on_error == "fail":
                admission.failed = list(range(len(entries)))
                return admission
            self._warn_open(len(entries))
            counts = [1] * len(entries)
        for n, (entry, copies) in enumerate(zip(marked, counts, strict=True)):
            if copies == 1:
                admission.keep.append(n)
                admission.entries.append(entry)
            else:
                admission.skipped += 1
        return admission

    def release(self, entries: Sequence[SendEntry]) -> None:
        """Close the windows opened for entries that were not sent after all."""
        ids = [entry.attributes[ATTRIBUTE] for entry in entries if ATTRIBUTE in entry.attributes]
        if ids:
            self.store.close_windows(ids)

    def _mark(self, entry: SendEntry, fifo: bool) -> SendEntry:
        settings = self.settings
        if settings.explicit_id:
            ident = settings.explicit_id
        elif settings.id_per_message:
            ident = self.ids()
        else:
            ident = dedup_id(entry.body)
        attributes = {**entry.attributes, ATTRIBUTE: ident, TOKEN_ATTRIBUTE: self.ids()}
        # FIFO: a new SQS deduplication id, so SQS's own window stays out of ours.
        return entry._replace(attributes=attributes, dedup_id=self.ids() if fifo else None)

    def _warn_open(self, n: int) -> None:
        if not self._warned.is_set():
            self._warned.set()
            log.warning(
                "duplicates not checked: the deduplication store did not answer; "
                "sending anyway (--dedup-on-error send), %d line%s so far",
                n,
                "" if n == 1 else "s",
            )


def claim_key(m: Message) -> str | None:
    """The claim of a message's run: its deduplication id and token, or None."""
    ident = m.attributes.get(ATTRIBUTE)
    if not ident:
        return None
    token = m.attributes.get(TOKEN_ATTRIBUTE)
    return f"{ident}#{token}" if token else ident


class RunClaims:
    """The worker side: claim a message's run before its job starts, and say how it
    ended. Thread-safe. A message without ``QdoneDeduplicationId`` is always run."""

    def __init__(
        self,
        store: DedupStore,
        done_ttl: int = DEFAULT_PERIOD,
        *,
        prune_stats: Callable[[], object] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.done_ttl = done_ttl
        # --dedup-stats: after 1 success in 100, drop ended windows from the stats
        # sets, as Node qdone's worker does.
        self.prune_stats = prune_stats
        self.rng = rng or random.Random()
        self._warned = threading.Event()

    def claim(self, m: Message, ttl: int) -> bool:
        """True: run the job. False: a copy of this message runs or ran; delete it."""
        key = claim_key(m)
        if key is None:
            return True
        held = self.store.claim(key, m.message_id, ttl)
        if held is None:
            if not self._warned.is_set():
                self._warned.set()
                log.warning(
                    "the deduplication store did not answer: running jobs without "
                    "claims, so copies of one message may run twice"
                )
            return True
        return held

    def finish(self, m: Message, succeeded: bool) -> None:
        """After the job: success marks the claim done (copies of this send are then
        deleted unrun) and closes the window, as Node qdone's worker does; failure
        releases the claim, so a retry can run."""
        key = claim_key(m)
        if key is None:
            return
        has_token = TOKEN_ATTRIBUTE in m.attributes
        self.store.finish(key, self.done_ttl if succeeded and has_token else None)
        if succeeded:
            self.store.close_windows([m.attributes[ATTRIBUTE]])
            if self.prune_stats is not None and self.rng.random() < 0.01:
                self.prune_stats()
