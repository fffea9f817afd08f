"""SQS's rules, as the SQLite store applies them: queue attributes (defaults, ranges,
redrive policy) and the entries of batches (ids, sizes, characters, FIFO fields).

Stateless; shared by ``broker/sqlite.py`` and its helper modules.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from ..errors import BrokerError, FailedEntry
from .base import MAX_BATCH, SendEntry, invalid_character
from .sqlite_schema import ARN_PREFIX

__all__ = [
    "COUNT_ATTRIBUTES",
    "DEDUP_WINDOW",
    "MAX_BATCH_BYTES",
    "MAX_DELAY",
    "MAX_VISIBILITY",
    "QueueSettings",
    "attribute_conflicts",
    "check_attributes",
    "check_batch_ids",
    "entry_error",
    "entry_size",
    "failed_entry",
    "initial_attributes",
    "invalid_receipt",
    "queue_settings",
]

DEDUP_WINDOW = 300.0  # seconds, SQS's FIFO deduplication interval
MAX_DELAY = 900
MAX_VISIBILITY = 43_200
MAX_BATCH_BYTES = 1_048_576  # a whole SendMessageBatch, like SQS
_BATCH_ID = re.compile(r"[\w-]{1,80}", re.ASCII)

COUNT_ATTRIBUTES = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
)

_DEFAULTS = {
    "DelaySeconds": "0",
    "MaximumMessageSize": "1048576",
    "MessageRetentionPeriod": "345600",
    "ReceiveMessageWaitTimeSeconds": "0",
    "VisibilityTimeout": "30",
}
_FIFO_DEFAULTS = {
    "FifoQueue": "true",
    "ContentBasedDeduplication": "false",
    "DeduplicationScope": "queue",
    "FifoThroughputLimit": "perQueue",
}
_RANGES = {
    "DelaySeconds": (0, MAX_DELAY),
    "MaximumMessageSize": (1024, 1_048_576),
    "MessageRetentionPeriod": (60, 1_209_600),
    "ReceiveMessageWaitTimeSeconds": (0, 20),
    "VisibilityTimeout": (0, MAX_VISIBILITY),
}
_BOOLEANS = ("FifoQueue", "ContentBasedDeduplication", "SqsManagedSseEnabled")
_FREE_TEXT = (
    "DeduplicationScope",
    "FifoThroughputLimit",
    "Policy",
    "RedriveAllowPolicy",
    "KmsMasterKeyId",
    "KmsDataKeyReusePeriodSeconds",
)


def _check_one(name: str, value: str) -> str:
    """``value`` normalised (``"030"`` → ``"30"``), or BrokerError."""
    if name in _RANGES:
        low, high = _RANGES[name]
        try:
            number = int(value)
        except ValueError:
            number = low - 1
        if not low <= number <= high:
            raise BrokerError(f"invalid value {value!r} for {name}: must be {low} to {high}")
        return str(number)
    if name in _BOOLEANS:
        if value.lower() not in ("true", "false"):
            raise BrokerError(f"invalid value {value!r} for {name}: must be true or false")
        return value.lower()
    if name == "RedrivePolicy":
        return _check_redrive(value)
    if name in _FREE_TEXT:
        return value
    raise BrokerError(f"unknown queue attribute {name!r}")


def _check_redrive(value: str) -> str:
    if value == "":
        return ""
    try:
        policy = json.loads(value)
        arn = policy["deadLetterTargetArn"]
        count = int(policy["maxReceiveCount"])
    except (ValueError, TypeError, KeyError) as exc:
        raise BrokerError(
            f"invalid RedrivePolicy {value!r}: need JSON with deadLetterTargetArn "
            "and maxReceiveCount"
        ) from exc
    if not isinstance(arn, str) or not 1 <= count <= 1000:
        raise BrokerError(f"invalid RedrivePolicy {value!r}: maxReceiveCount must be 1 to 1000")
    return json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": count})


def check_attributes(name: str, attributes: Mapping[str, str]) -> dict[str, str]:
    """The given attributes, normalised; raises BrokerError like SQS would."""
    fifo = name.endswith(".fifo")
    result = {key: _check_one(key, str(value)) for key, value in attributes.items()}
    if result.get("FifoQueue", "true" if fifo else "false") != ("true" if fifo else "false"):
        raise BrokerError(
            f"queue {name}: FifoQueue={result['FifoQueue']} but the name "
            + ("ends" if fifo else "does not end")
            + " in .fifo; a FIFO queue's name must end in .fifo"
        )
    if not fifo and "ContentBasedDeduplication" in result:
        raise BrokerError(f"queue {name}: ContentBasedDeduplication applies to FIFO queues only")
    return result


def initial_attributes(name: str, given: Mapping[str, str]) -> dict[str, str]:
    """SQS's defaults for a new queue ``name``, overridden by ``given`` (checked)."""
    result = dict(_DEFAULTS)
    if name.endswith(".fifo"):
        result.update(_FIFO_DEFAULTS)
    result.update(given)
    if result.get("RedrivePolicy") == "":
        del result["RedrivePolicy"]
    return result


def attribute_conflicts(stored: Mapping[str, str], given: Mapping[str, str]) -> list[str]:
    """Names of the given (checked) attributes whose value differs from the stored one."""
    stored_redrive = stored.get("RedrivePolicy", "")
    return sorted(
        key
        for key, value in given.items()
        if value != (stored_redrive if key == "RedrivePolicy" else stored.get(key))
    )


@dataclass(frozen=True)
class QueueSettings:
    """A queue's stored attributes and what the broker reads from them on every call."""

    attributes: Mapping[str, str]
    fifo: bool
    max_size: int
    delay: int
    retention: int
    content_dedup: bool
    dead_letter: str | None  # the name of the RedrivePolicy's target, if a SQLite queue
    max_receives: int | None


@functools.lru_cache(maxsize=64)
def queue_settings(text: str) -> QueueSettings:
    """The settings of the attributes stored as JSON ``text`` (cached: a queue is
    looked up on every call)."""
    attributes: dict[str, str] = json.loads(text)
    policy = json.loads(attributes.get("RedrivePolicy") or "{}")
    arn = str(policy.get("deadLetterTargetArn", ""))
    return QueueSettings(
        attributes=MappingProxyType(attributes),
        fifo=attributes.get("FifoQueue") == "true",
        max_size=int(attributes["MaximumMessageSize"]),
        delay=int(attributes["DelaySeconds"]),
        retention=int(attributes["MessageRetentionPeriod"]),
        content_dedup=attributes.get("ContentBasedDeduplication") == "true",
        dead_letter=arn[len(ARN_PREFIX) :] if arn.startswith(ARN_PREFIX) else None,
        max_receives=int(policy["maxReceiveCount"]) if policy else None,
    )


def check_batch_ids(ids: Sequence[str], action: str) -> None:
    """Whole-batch errors, as SQS raises them."""
    if not ids:
        raise BrokerError(f"{action}: empty batch")
    if len(ids) > MAX_BATCH:
        raise BrokerError(f"{action}: {len(ids)} entries, at most {MAX_BATCH} allowed")
    if len(set(ids)) != len(ids):
        raise BrokerError(f"{action}: batch entry ids are not distinct")
    bad = [i for i in ids if not _BATCH_ID.fullmatch(i)]
    if bad:
        raise BrokerError(f"{action}: invalid batch entry id {bad[0]!r}")


def _utf8_length(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode(errors="replace"))


def entry_size(entry: SendEntry) -> int:
    """Bytes SQS counts: the body plus attribute names and values, in UTF-8."""
    if not entry.attributes:
        body = entry.body
        return len(body) if body.isascii() else len(body.encode(errors="replace"))
    parts = [entry.body, *entry.attributes.keys(), *entry.attributes.values()]
    return sum(map(_utf8_length, parts))


def failed_entry(entry_id: str, code: str, message: str) -> FailedEntry:
    return FailedEntry(id=entry_id, code=code, message=message, sender_fault=True)


def entry_error(queue: QueueSettings, entry: SendEntry, size: int) -> FailedEntry | None:
    """Why SQS would refuse this entry, or None."""
    limit = queue.max_size
    body = entry.body
    # (The isascii/isprintable test spares most bodies a regular-expression scan.)
    plain = body.isascii() and body.isprintable()
    if not body or (not plain and invalid_character(body) is not None):
        return failed_entry(entry.id, "InvalidMessageContents", "empty body or invalid characters")
    if size > limit:
        text = f"message is {size} bytes; the queue allows {limit}"
        return failed_entry(entry.id, "InvalidParameterValue", text)
    if entry.delay is not None and not 0 <= entry.delay <= MAX_DELAY:
        return failed_entry(entry.id, "InvalidParameterValue", f"delay must be 0 to {MAX_DELAY} s")
    if not queue.fifo:
        return None
    if not entry.group_id:
        return failed_entry(entry.id, "MissingParameter", "a FIFO queue needs a message group id")
    if entry.delay:
        return failed_entry(
            entry.id, "InvalidParameterValue", "FIFO queues take no per-message delay"
        )
    if not entry.dedup_id and not queue.content_dedup:
        return failed_entry(entry.id, "InvalidParameterValue", "a FIFO queue needs a dedup id")
    return None


def invalid_receipt(entry_id: str) -> FailedEntry:
    return failed_entry(
        entry_id,
        "ReceiptHandleIsInvalid",
        "the receipt handle is not valid: the message was deleted or received again since",
    )
