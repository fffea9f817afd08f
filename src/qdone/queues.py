"""The queues qdone creates: attributes of a queue, its failed queue and its dead
queue (shared by ``enqueue`` and ``check``), and creation on first use."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .broker.base import Broker
from .config import Options, QueueOptions
from .errors import QueueAlreadyExists, QueueNotFound, UsageError
from .naming import QueueNames, is_wildcard, queue_names, validate_sqs_name, wildcard_prefix

__all__ = [
    "EnsuredQueue",
    "checked_names",
    "dead_attributes",
    "ensure_queue",
    "failed_attributes",
    "main_attributes",
    "names_for",
    "redrive_policy",
    "validate_patterns",
    "validate_queue_options",
]

MAX_RETENTION = 1_209_600
MIN_RETENTION = 60
MAX_DELAY = 900


def names_for(options: Options, queue: str, fifo: bool) -> QueueNames:
    return queue_names(
        queue,
        prefix=options.prefix,
        fail_suffix=options.fail_suffix,
        dead_suffix=options.dlq_suffix,
        fifo=fifo,
    )


def checked_names(options: Options, q: QueueOptions, queue: str) -> QueueNames:
    """The names of ``queue``, each checked (the dead queue's too, with ``--dlq``)."""
    names = names_for(options, queue, q.fifo)
    if q.dlq:
        validate_sqs_name(names.dead, given=queue)
    return names


def validate_patterns(options: Options, patterns: Iterable[str], fifo: bool = False) -> None:
    """Raise InvalidQueueName for a name or wildcard that can match no queue, before
    any call is made."""
    for pattern in patterns:
        if is_wildcard(pattern):
            wildcard_prefix(pattern, options.prefix)
        else:
            names_for(options, pattern, fifo)


def validate_queue_options(q: QueueOptions) -> None:
    """Raise UsageError for values SQS would refuse, before any call is made."""
    if not MIN_RETENTION <= q.message_retention_period <= MAX_RETENTION:
        raise UsageError(
            f"--message-retention-period must be {MIN_RETENTION} to {MAX_RETENTION} seconds, "
            f"not {q.message_retention_period}"
        )
    if not 0 <= q.fail_delay <= MAX_DELAY:
        raise UsageError(f"--fail-delay must be 0 to {MAX_DELAY} seconds, not {q.fail_delay}")
    if not 1 <= q.dlq_after <= 1000:
        raise UsageError(f"--dlq-after must be 1 to 1000, not {q.dlq_after}")
    if not 0 <= q.retries <= 999:
        raise UsageError(f"--retries must be 0 to 999, not {q.retries}")


def redrive_policy(target_arn: str, max_receive_count: int) -> str:
    return json.dumps({"deadLetterTargetArn": target_arn, "maxReceiveCount": max_receive_count})


def _common(q: QueueOptions) -> dict[str, str]:
    attributes = {"MessageRetentionPeriod": str(q.message_retention_period)}
    if q.fifo:
        attributes["FifoQueue"] = "true"
    return attributes


def dead_attributes(q: QueueOptions) -> dict[str, str]:
    return _common(q)


def failed_attributes(q: QueueOptions, dead_arn: str | None) -> dict[str, str]:
    attributes = _common(q)
    if q.fail_delay:
        attributes["DelaySeconds"] = str(q.fail_delay)
    if dead_arn is not None:
        attributes["RedrivePolicy"] = redrive_policy(dead_arn, q.dlq_after)
    return attributes


def main_attributes(q: QueueOptions, failed_arn: str) -> dict[str, str]:
    attributes = _common(q)
    # One receive per attempt: N retries means N+1 receives before the redrive.
    attributes["RedrivePolicy"] = redrive_policy(failed_arn, q.retries + 1)
    return attributes


@dataclass
class EnsuredQueue:
    """A queue ready for sending: its url and the full names of queues created for it."""

    names: QueueNames
    url: str
    created: list[str] = field(default_factory=list)
    #: What of the options the existing queue does not have, said once (the
    #: queue is used as it is).
    notes: list[str] = field(default_factory=list)


def _create_or_reuse(
    broker: Broker, name: str, attributes: dict[str, str], q: QueueOptions, created: list[str]
) -> str:
    """Create ``name``; an existing queue of that name with other settings is used as it
    is (``qdone check`` reports the differences)."""
    try:
        url = broker.create_queue(name, attributes, q.tags or None)
    except QueueAlreadyExists:
        return broker.get_queue_url(name)
    created.append(name)
    return url


def _retries_kept(
    broker: Broker, url: str, names: QueueNames, q: QueueOptions, queue: str
) -> list[str]:
    """With ``--retries``: a note when the existing queue gives another number of
    attempts (one ``GetQueueAttributes``; none without ``--retries``)."""
    if not q.retries:
        return []
    policy = broker.get_queue_attributes(url, ["RedrivePolicy"]).get("RedrivePolicy")
    try:
        have = int(json.loads(policy)["maxReceiveCount"]) if policy else None
    except (ValueError, KeyError, TypeError):
        have = None
    if have == q.retries + 1:
        return []
    has = f"maxReceiveCount {have}" if have is not None else "no redrive policy"
    fifo = " --fifo" if q.fifo and not queue.endswith(".fifo") else ""
    return [
        f"{names.main} has {has}, not the {q.retries + 1} that --retries {q.retries} asks "
        f"for, and is used as it is; 'qdone check {queue}{fifo} --retries {q.retries} "
        "--overwrite' sets it"
    ]


def ensure_queue(
    broker: Broker,
    options: Options,
    q: QueueOptions,
    queue: str,
    on_create: Callable[[str], None] | None = None,
) -> EnsuredQueue:
    """The url of ``queue``, creating it (dead queue, failed queue, then the queue
    itself) when it does not exist. An existing queue costs one ``GetQueueUrl``;
    a new pair two ``CreateQueue`` more: ARNs are derived, never looked up."""
    names = checked_names(options, q, queue)
    try:
        url = broker.get_queue_url(names.main)
    except QueueNotFound:
        pass
    else:
        return EnsuredQueue(names, url, notes=_retries_kept(broker, url, names, q, queue))
    created: list[str] = []
    dead_arn = None
    if q.dlq:
        dead_url = _create_or_reuse(broker, names.dead, dead_attributes(q), q, created)
        dead_arn = broker.queue_arn(dead_url)
    failed_url = _create_or_reuse(broker, names.failed, failed_attributes(q, dead_arn), q, created)
    attributes = main_attributes(q, broker.queue_arn(failed_url))
    url = _create_or_reuse(broker, names.main, attributes, q, created)
    if on_create is not None:
        for name in created:
            on_create(name)
    return EnsuredQueue(names, url, created)
