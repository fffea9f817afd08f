"""Idle queues: find queues nobody used for a while, and delete them safely.

A queue and its failed queue form a pair, idle only when both are. Each queue
is checked in two steps, cheapest first:

1. its approximate counts (one ``GetQueueAttributes``): any visible, in-flight
   or delayed message means active, and the queue goes no further;
2. every queue still undecided goes into *one* ``Broker.active_since`` call:
   on SQS a few CloudWatch ``GetMetricData`` calls answer all of them together
   (Node qdone spent up to 7 ``GetMetricStatistics`` per queue); SQLite answers
   exactly from its own records.

Deleting goes through ``Broker.delete_if_empty``: on SQLite the check and the
delete of a pair are one transaction, so a message whose send succeeded is
never deleted with its queue. SQS has no conditional delete: each queue's counts
are read again right before its own delete, and a message sent in between is
lost with its queue; the window is one round trip.

Patterns and counts come from ``matching.py``, shared with ``check`` and ``monitor``.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from .broker.base import Broker
from .config import DEFAULTS, Options
from .errors import QueueNotFound, UsageError
from .matching import Matched, failed_name, match_queues, read_counts
from .naming import short_name

__all__ = [
    "SQS_MIN_IDLE_MINUTES",
    "DeleteOutcome",
    "IdleResult",
    "IdleSettings",
    "PairVerdict",
    "State",
    "Verdict",
    "delete_idle",
    "find_idle",
]

#: CloudWatch keeps hourly data points for 455 days: a longer window cannot be answered.
SQS_MAX_IDLE_MINUTES = 455 * 24 * 60
MAX_IDLE_MINUTES = 100 * 365 * 24 * 60
#: CloudWatch publishes SQS metrics every 5 minutes: a shorter window says nothing.
SQS_MIN_IDLE_MINUTES = 5


# -- verdicts -------------------------------------------------------------------


class State(enum.Enum):
    ACTIVE = "active"
    IDLE = "idle"
    MISSING = "missing"  # does not exist (or was deleted during the scan)
    UNCHECKED = "not checked"  # its pair was already found active


@dataclass(frozen=True)
class Verdict:
    """What was found about one queue, and why."""

    queue: str  # full name
    state: State
    reason: str = ""


@dataclass(frozen=True)
class PairVerdict:
    """A queue and (unless unpaired) its failed queue: idle only if both are.
    A missing failed queue counts as idle."""

    name: str  # the main queue, without prefix
    main: Verdict
    failed: Verdict | None
    url: str
    failed_url: str | None

    @property
    def idle(self) -> bool:
        if self.main.state is not State.IDLE:
            return False
        return self.failed is None or self.failed.state in (State.IDLE, State.MISSING)

    def verdicts(self) -> list[Verdict]:
        return [self.main] if self.failed is None else [self.main, self.failed]


@dataclass(frozen=True)
class IdleSettings:
    idle_for: float = DEFAULTS.idle_for  # minutes
    unpair: bool = False
    include_failed: bool = False


@dataclass
class IdleResult:
    pairs: list[PairVerdict]
    matched: Matched

    @property
    def idle(self) -> list[PairVerdict]:
        return [p for p in self.pairs if p.idle]


def _shown(minutes: float) -> str:
    text = str(minutes) if isinstance(minutes, int) else f"{minutes:g}"
    return text if len(text) <= 20 else f"{text[:12]}... ({len(text)} digits)"


def _validate(broker: Broker, settings: IdleSettings) -> None:
    if settings.include_failed and not settings.unpair:
        raise UsageError("--include-failed only works with --unpair")
    minutes = settings.idle_for
    if not minutes >= 0:  # also NaN
        raise UsageError(f"--idle-for must be 0 minutes or more, not {_shown(minutes)}")
    sqs = broker.service == "SQS"
    if sqs and minutes < SQS_MIN_IDLE_MINUTES:
        raise UsageError(
            f"--idle-for must be at least {SQS_MIN_IDLE_MINUTES} minutes on SQS, "
            f"not {_shown(minutes)}: CloudWatch publishes SQS metrics every 5 minutes"
        )
    most, why = (
        (SQS_MAX_IDLE_MINUTES, "CloudWatch keeps metrics 455 days")
        if sqs
        else (
            MAX_IDLE_MINUTES,
            "100 years",
        )
    )
    if minutes > most:
        raise UsageError(
            f"--idle-for must be at most {most:,} minutes ({why}), not {_shown(minutes)}"
        )


def _cheap_check(broker: Broker, name: str, url: str) -> Verdict | None:
    """A verdict from the counts alone, or None when only activity can tell."""
    try:
        counts = read_counts(broker, url)
    except QueueNotFound:
        return Verdict(name, State.MISSING, "deleted during the scan")
    if counts.total:
        return Verdict(name, State.ACTIVE, counts.describe())
    return None


def _failed_url(broker: Broker, name: str, matched: Matched) -> str | None:
    if name in matched.known:
        return matched.known[name]
    try:
        return broker.get_queue_url(name)
    except QueueNotFound:
        return None


@dataclass
class _Plan:
    """Pairs being checked: verdicts known so far, and queues left for ``active_since``."""

    members: list[tuple[str, str, tuple[str, str | None] | None]] = field(default_factory=list)
    verdicts: dict[str, Verdict] = field(default_factory=dict)  # by url
    undecided: dict[str, str] = field(default_factory=dict)  # url -> full name


def _check_pair(
    broker: Broker, plan: _Plan, main: tuple[str, str], failed: tuple[str, str | None] | None
) -> None:
    """Counts first: an active queue settles its pair; the rest wait for ``active_since``."""
    name, url = main
    verdict = _cheap_check(broker, name, url)
    if verdict is not None:
        plan.verdicts[url] = verdict
        return
    if failed is not None:
        fname, furl = failed
        fverdict = (
            Verdict(fname, State.MISSING, "does not exist")
            if furl is None
            else _cheap_check(broker, fname, furl)
        )
        if fverdict is None:
            assert furl is not None
            plan.undecided[furl] = fname
        else:
            plan.verdicts[furl or fname] = fverdict
            if fverdict.state is State.ACTIVE:
                plan.verdicts[url] = Verdict(name, State.UNCHECKED, "its failed queue is active")
                return
    plan.undecided[url] = name


def _plan(broker: Broker, options: Options, matched: Matched, unpair: bool) -> _Plan:
    plan = _Plan()
    for name, url in matched.queues:
        failed: tuple[str, str | None] | None = None
        if not unpair:
            fname = failed_name(name, options)
            failed = (fname, _failed_url(broker, fname, matched))
        plan.members.append((name, url, failed))
        _check_pair(broker, plan, (name, url), failed)
    return plan


def _activity(broker: Broker, plan: _Plan, idle_for: float, clock: Callable[[], float]) -> None:
    if not plan.undecided:
        return
    source = "CloudWatch" if broker.service == "SQS" else "store records"
    window = f"{idle_for:g} minutes"
    active = broker.active_since(list(plan.undecided), clock() - idle_for * 60)
    for url, name in plan.undecided.items():
        if active.get(url, True):
            plan.verdicts[url] = Verdict(
                name, State.ACTIVE, f"used in the last {window} ({source})"
            )
        else:
            plan.verdicts[url] = Verdict(name, State.IDLE, f"unused for {window} ({source})")


def find_idle(
    broker: Broker,
    options: Options,
    patterns: Sequence[str],
    settings: IdleSettings,
    clock: Callable[[], float] = time.time,
) -> IdleResult:
    """Check every matching queue (pair); see the module docstring for the steps."""
    _validate(broker, settings)
    matched = match_queues(broker, options, patterns, include_failed=settings.include_failed)
    plan = _plan(broker, options, matched, settings.unpair)
    _activity(broker, plan, settings.idle_for, clock)
    pairs = []
    for name, url, failed in plan.members:
        fverdict, furl = None, None
        if failed is not None:
            fname, furl = failed
            unchecked = Verdict(fname, State.UNCHECKED, "its queue is active")
            fverdict = plan.verdicts.get(furl or fname, unchecked)
        short = short_name(name, options.prefix)
        pairs.append(PairVerdict(short, plan.verdicts[url], fverdict, url, furl))
    return IdleResult(pairs, matched)


# -- deleting -------------------------------------------------------------------


@dataclass(frozen=True)
class DeleteOutcome:
    """What happened when deleting one idle pair: queues deleted, and why not, if not."""

    pair: PairVerdict
    deleted: list[str]
    skipped: str = ""  # why the pair was left alone
    notes: list[str] = field(default_factory=list)


def _delete_pair(broker: Broker, pair: PairVerdict) -> DeleteOutcome:
    # The main queue first: its messages redrive into the failed queue, never the reverse.
    urls = [u for u in (pair.url, pair.failed_url) if u is not None]
    done = broker.delete_if_empty(urls)
    notes = [
        f"{name} was already deleted (a queue deleted a moment ago may still be listed)"
        for name in done.gone
    ]
    skipped = f"{done.busy} now holds messages" if done.busy else ""
    if done.busy and done.deleted:
        skipped += f" (deleted before it was seen: {', '.join(done.deleted)})"
    return DeleteOutcome(pair, done.deleted, skipped=skipped, notes=notes)


def delete_idle(broker: Broker, pairs: Iterable[PairVerdict]) -> list[DeleteOutcome]:
    """Delete each idle pair (both queues), after checking again that it holds no message."""
    return [_delete_pair(broker, pair) for pair in pairs if pair.idle]
