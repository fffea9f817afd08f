"""``qdone check``: compare queues with what qdone would create, and fix them.

For each queue, its failed queue and (with ``dlq``) its dead queue, the
attributes expected are exactly those ``queues.py`` creates them with
(``main_attributes``, ``failed_attributes``, ``dead_attributes``), plus what an
attribute left out means (``DelaySeconds`` 0, no ``RedrivePolicy``):

- ``RedrivePolicy`` compared as parsed JSON: the target ARN and
  ``maxReceiveCount`` (``retries + 1`` on the main queue, ``dlq_after`` on the
  failed queue), whether SQS returns the count as a string or a number;
- ``FifoQueue``, ``MessageRetentionPeriod`` and ``DelaySeconds`` as values;
- tags given with ``--tag``: each must be present with that value (other tags
  are left alone).

A missing queue is a difference. ``create`` creates missing queues (dead,
failed, then main, so each redrive target exists first); ``overwrite`` sets
differing attributes and tags. ``FifoQueue`` cannot be changed on an existing
queue and stays a difference.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from .broker.base import Broker
from .config import Options, QueueOptions
from .errors import QueueNotFound
from .matching import match_queues
from .naming import is_wildcard, short_name
from .queues import (
    dead_attributes,
    failed_attributes,
    main_attributes,
    names_for,
    validate_patterns,
)

__all__ = [
    "CheckResult",
    "Difference",
    "Fix",
    "QueueCheck",
    "check_queues",
    "differences",
]

#: What an attribute qdone leaves out means on a new queue.
_IMPLIED = {"DelaySeconds": "0"}
_COMPARED = ("FifoQueue", "MessageRetentionPeriod", "DelaySeconds", "RedrivePolicy")
_UNCHANGEABLE = {"FifoQueue"}


@dataclass(frozen=True)
class Fix:
    create: bool = False
    overwrite: bool = False


@dataclass(frozen=True)
class Difference:
    """An attribute (or ``tag KEY``) whose value is not what qdone expects.
    ``expected``/``actual`` are shown to the user; None means absent."""

    attribute: str
    expected: str | None
    actual: str | None
    value: str  # what ``overwrite`` sets ("" removes an attribute)

    @property
    def fixable(self) -> bool:
        return self.attribute not in _UNCHANGEABLE


@dataclass
class QueueCheck:
    """One queue's findings, and what was done about them."""

    name: str  # full name
    role: str  # "queue", "failed queue" or "dead queue"
    missing: bool = False
    differences: list[Difference] = field(default_factory=list)
    created: bool = False
    fixed: list[Difference] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing is left to fix."""
        if self.missing:
            return self.created
        return len(self.fixed) == len(self.differences)


@dataclass
class CheckResult:
    queues: list[QueueCheck] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)  # wildcards matching nothing

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.queues)


# -- comparing ------------------------------------------------------------------


def _redrive(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    try:
        policy = json.loads(value)
        return str(policy["deadLetterTargetArn"]), int(policy["maxReceiveCount"])
    except (ValueError, TypeError, KeyError):
        return ("<unreadable: " + value + ">", -1)


def _normal(attribute: str, value: str | None) -> object:
    if attribute == "RedrivePolicy":
        return _redrive(value)
    if attribute == "FifoQueue":
        return (value or "false").lower() == "true"
    return None if value is None else int(value)


def _shown(attribute: str, value: str | None) -> str | None:
    if attribute == "RedrivePolicy":
        policy = _redrive(value)
        if policy is None:
            return None
        return f"maxReceiveCount {policy[1]} to {policy[0]}"
    if attribute == "FifoQueue":
        return "true" if _normal(attribute, value) else "false"
    return value


def differences(
    expected: Mapping[str, str],
    actual: Mapping[str, str],
    tags: Mapping[str, str] | None = None,
    actual_tags: Mapping[str, str] | None = None,
) -> list[Difference]:
    """How ``actual`` attributes (and tags) differ from ``expected`` ones."""
    wanted = {**_IMPLIED, **expected}
    found: list[Difference] = []
    for name in _COMPARED:
        want, have = wanted.get(name), actual.get(name, _IMPLIED.get(name))
        if _normal(name, want) != _normal(name, have):
            found.append(
                Difference(name, _shown(name, want), _shown(name, have), want if want else "")
            )
    for key, value in (tags or {}).items():
        have = (actual_tags or {}).get(key)
        if have != value:
            found.append(Difference(f"tag {key}", value, have, value))
    return found


# -- checking -------------------------------------------------------------------


def _sibling_arn(broker: Broker, url: str, name: str) -> str:
    """The ARN queue ``name`` has next to the queue at ``url`` (same account, region)."""
    return broker.queue_arn(url).rsplit(":", 1)[0] + ":" + name


def _overwrite(broker: Broker, url: str, found: Sequence[Difference]) -> list[Difference]:
    fixable = [d for d in found if d.fixable]
    attributes = {d.attribute: d.value for d in fixable if not d.attribute.startswith("tag ")}
    tags = {d.attribute[4:]: d.value for d in fixable if d.attribute.startswith("tag ")}
    if attributes:
        broker.set_queue_attributes(url, attributes)
    if tags:
        broker.tag_queue(url, tags)
    return fixable


@dataclass(frozen=True)
class _Wanted:
    """A queue to check: its name, role, redrive target and expected attributes."""

    name: str
    role: str
    target: str | None  # the full name of its redrive target
    build: Callable[[str | None], dict[str, str]]  # target ARN -> attributes


def _check_one(
    broker: Broker, wanted: _Wanted, target_url: str | None, q: QueueOptions, fix: Fix
) -> tuple[QueueCheck, str | None]:
    check = QueueCheck(wanted.name, wanted.role)
    try:
        url = broker.get_queue_url(wanted.name)
    except QueueNotFound:
        check.missing = True
        if not fix.create or (wanted.target is not None and target_url is None):
            return check, None
        arn = broker.queue_arn(target_url) if target_url is not None else None
        url = broker.create_queue(wanted.name, wanted.build(arn), q.tags or None)
        check.created = True
        return check, url
    arn = _sibling_arn(broker, url, wanted.target) if wanted.target else None
    actual = broker.get_queue_attributes(url)
    actual_tags = broker.list_queue_tags(url) if q.tags else None
    check.differences = differences(wanted.build(arn), actual, q.tags, actual_tags)
    if fix.overwrite and check.differences:
        check.fixed = _overwrite(broker, url, check.differences)
    return check, url


def _wanted(options: Options, q: QueueOptions, queue: str) -> tuple[list[_Wanted], QueueOptions]:
    names = names_for(options, queue, q.fifo)
    q = dataclasses.replace(q, fifo=names.fifo)
    chain: list[_Wanted] = []
    if q.dlq:
        chain.append(_Wanted(names.dead, "dead queue", None, lambda _arn: dead_attributes(q)))
    dead = names.dead if q.dlq else None
    chain.append(_Wanted(names.failed, "failed queue", dead, lambda arn: failed_attributes(q, arn)))
    chain.append(
        _Wanted(names.main, "queue", names.failed, lambda arn: main_attributes(q, arn or ""))
    )
    return chain, q


def check_queue(
    broker: Broker, options: Options, q: QueueOptions, queue: str, fix: Fix
) -> list[QueueCheck]:
    """Check (and with ``fix``, repair) one queue with its failed and dead queues."""
    chain, q = _wanted(options, q, queue)
    checks: list[QueueCheck] = []
    url: str | None = None
    for wanted in chain:
        check, url = _check_one(broker, wanted, url if wanted.target else None, q, fix)
        checks.append(check)
    return checks


def _expand(
    broker: Broker, options: Options, patterns: Iterable[str]
) -> tuple[dict[str, bool], list[str]]:
    """Queue names to check, each with whether a wildcard matched it; and the
    wildcards that matched nothing."""
    validate_patterns(options, patterns)
    queues: dict[str, bool] = {}
    unmatched: list[str] = []
    for pattern in patterns:
        if not is_wildcard(pattern):
            queues.setdefault(pattern, False)
            continue
        found = match_queues(broker, options, [pattern]).queues
        if not found:
            unmatched.append(pattern)
        for name, _url in found:
            queues.setdefault(short_name(name, options.prefix), True)
    return queues, unmatched


def check_queues(
    broker: Broker, options: Options, q: QueueOptions, patterns: Sequence[str], fix: Fix
) -> CheckResult:
    """Check every queue named (wildcards match existing main queues, checked as they
    are: FIFO when the name ends in ``.fifo``)."""
    queues, unmatched = _expand(broker, options, patterns)
    result = CheckResult(unmatched=unmatched)
    for queue, matched in queues.items():
        as_is = dataclasses.replace(q, fifo=False) if matched else q
        result.queues.extend(check_queue(broker, options, as_is, queue, fix))
    return result
