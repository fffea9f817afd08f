"""FIFO receives carry a ReceiveRequestAttemptId that botocore's retries of the same
call reuse: SQS then answers a retried receive whose first answer was lost with the
same messages, instead of hiding them for nothing and burning an attempt. (moto
ignores the id; what is tested is that qdone sends it, and keeps it across retries.)"""

from __future__ import annotations

import itertools
import json
from typing import Any

from qdone.broker.base import SendEntry
from qdone.broker.sqs import SqsBroker

from .conftest import ProxyFactory
from .proxy import Fault, FaultPlan


def _attempt_ids(broker: SqsBroker) -> list[str | None]:
    """The ReceiveRequestAttemptId of every ReceiveMessage request the broker sends,
    retries included."""
    seen: list[str | None] = []

    def record(request: Any, **_: Any) -> None:
        body = request.body
        text = body.decode() if isinstance(body, bytes) else str(body)
        seen.append(json.loads(text).get("ReceiveRequestAttemptId"))

    broker._sqs().meta.events.register("before-send.sqs.ReceiveMessage", record)
    return seen


def test_fifo_receive_attempt_id_sent_and_reused_by_retries(
    fault_proxy: ProxyFactory, prefix: str
) -> None:
    receives = itertools.count()

    def first_receive(action: str, _body: bytes) -> bool:
        return action == "ReceiveMessage" and next(receives) == 0

    proxy = fault_proxy(FaultPlan.always(Fault.RESET_AFTER, select=first_receive))
    broker = SqsBroker(region="us-east-1", endpoint_url=proxy.url)
    try:
        url = broker.create_queue(f"{prefix}q.fifo", {"FifoQueue": "true"})
        broker.send(url, SendEntry("0", "echo", "g", "d"))
        seen = _attempt_ids(broker)
        broker.receive(url, 1, 30, 0)  # the first answer is lost; botocore tries again
        broker.receive(url, 1, 30, 0)
    finally:
        broker.close()
    assert proxy.stats.count(Fault.RESET_AFTER, "ReceiveMessage") == 1
    assert len(seen) == 3
    first, retry, second_call = seen
    assert first is not None and 1 <= len(first) <= 128
    assert retry == first  # the retry of the same call
    assert second_call not in (None, first)  # a new call, a new attempt


def test_standard_receive_sends_no_attempt_id(fault_proxy: ProxyFactory, prefix: str) -> None:
    broker = SqsBroker(region="us-east-1", endpoint_url=fault_proxy().url)
    try:
        url = broker.create_queue(f"{prefix}q", {})
        seen = _attempt_ids(broker)
        broker.receive(url, 1, 30, 0)
    finally:
        broker.close()
    assert seen == [None]
