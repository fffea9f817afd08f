"""SQS's message shapes: the request entries qdone sends and the messages and batch
failures it reads back, as ``broker/base.py``'s types.

Pure conversions, no calls; used by ``broker/sqs.py``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..errors import FailedEntry
from .base import Message, SendEntry

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import (
        BatchResultErrorEntryTypeDef,
        MessageAttributeValueTypeDef,
        MessageTypeDef,
        SendMessageBatchRequestEntryTypeDef,
    )

__all__ = ["SYSTEM_ATTRIBUTES", "failed", "message", "send_entry", "system_attributes_param"]

SYSTEM_ATTRIBUTES = [
    "ApproximateReceiveCount",
    "ApproximateFirstReceiveTimestamp",
    "SentTimestamp",
    "MessageGroupId",
]


def system_attributes_param(client: SQSClient) -> str:
    """``MessageSystemAttributeNames``, or ``AttributeNames`` before botocore knew it (2024)."""
    shape = client.meta.service_model.operation_model("ReceiveMessage").input_shape
    new = "MessageSystemAttributeNames"
    return new if shape is not None and new in shape.members else "AttributeNames"


def failed(entries: Iterable[BatchResultErrorEntryTypeDef]) -> list[FailedEntry]:
    # SenderFault is a bool on the wire, but some SQS emulators send "true"/"false".
    return [
        FailedEntry(
            e["Id"], e["Code"], e.get("Message", ""), str(e["SenderFault"]).lower() == "true"
        )
        for e in entries
    ]


def send_entry(entry: SendEntry) -> SendMessageBatchRequestEntryTypeDef:
    request: SendMessageBatchRequestEntryTypeDef = {"Id": entry.id, "MessageBody": entry.body}
    if entry.group_id is not None:
        request["MessageGroupId"] = entry.group_id
    if entry.dedup_id is not None:
        request["MessageDeduplicationId"] = entry.dedup_id
    if entry.delay is not None:
        request["DelaySeconds"] = entry.delay
    if entry.attributes:
        values: dict[str, MessageAttributeValueTypeDef] = {
            k: {"DataType": "String", "StringValue": v} for k, v in entry.attributes.items()
        }
        request["MessageAttributes"] = values
    return request


def message(url: str, m: MessageTypeDef) -> Message:
    system = m.get("Attributes", {})
    attributes = {
        k: v["StringValue"] for k, v in m.get("MessageAttributes", {}).items() if "StringValue" in v
    }
    return Message(
        queue_url=url,
        message_id=m["MessageId"],
        receipt=m["ReceiptHandle"],
        body=m.get("Body", ""),
        receive_count=int(system.get("ApproximateReceiveCount", "1")),
        sent_at=int(system.get("SentTimestamp", "0")) / 1000,
        group_id=system.get("MessageGroupId"),
        attributes=attributes,
        first_received_at=int(first) / 1000
        if (first := system.get("ApproximateFirstReceiveTimestamp"))
        else None,
    )
