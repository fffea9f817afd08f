"""Amazon SQS (or any SQS-compatible server): a thin mapping of the Broker interface.

This module, ``sqs_client.py`` (clients and error translation), ``sqs_messages.py``
(message shapes) and ``cloudwatch.py`` are the only ones that know about the AWS
SDK; every botocore error is translated into a ``QdoneError`` in ``sqs_client``.

Call counting: ``calls`` counts HTTP requests actually sent, by action, through
botocore's ``before-send`` event, so a request that botocore retries counts once
per attempt and a call refused before sending (no credentials) counts zero.
"""

from __future__ import annotations

import datetime as dt
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, cast
from urllib.parse import urlsplit

from . import cloudwatch
from . import sqs_messages as shapes
from .base import (
    BatchResult,
    Broker,
    ChangeVisibility,
    Message,
    Receipt,
    SendEntry,
    SendResult,
)
from .sqs_client import MAX_WAIT_TIME, Clients, check_endpoint, env_endpoint, mapped

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_cloudwatch.type_defs import (
        GetMetricDataInputTypeDef,
        GetMetricDataOutputTypeDef,
    )
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.literals import QueueAttributeFilterType, QueueAttributeNameType
    from mypy_boto3_sqs.type_defs import (
        ChangeMessageVisibilityBatchRequestEntryTypeDef,
        CreateQueueRequestTypeDef,
        DeleteMessageBatchRequestEntryTypeDef,
        ListQueuesRequestTypeDef,
        ReceiveMessageRequestTypeDef,
        SendMessageRequestTypeDef,
    )

__all__ = ["SqsBroker"]

DEFAULT_REGION = "us-east-1"


def _partition(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


class SqsBroker(Broker):
    """Queues on Amazon SQS, or on any server speaking its API at ``endpoint_url``."""

    service = "SQS"
    send_concurrency = 8  # batches in flight at once: SQS scales, latency dominates
    #: ListQueues page size (SQS allows 1 to 1000).
    list_page_size = 1000
    #: GetMetricData queries per call (CloudWatch allows up to 500).
    metric_queries_per_call = cloudwatch.MAX_QUERIES

    def __init__(
        self,
        region: str | None = None,
        endpoint_url: str | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.region = (
            region
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
            or DEFAULT_REGION
        )
        self.endpoint_url = endpoint_url or env_endpoint("AWS_ENDPOINT_URL_SQS")
        check_endpoint(self.endpoint_url)
        self._clock = clock
        self._clients = Clients(self.region, self.endpoint_url, endpoint_url, self._count_request)
        self._urls: dict[str, str] = {}

    def describe(self) -> str:
        if self.endpoint_url:
            return f"SQS at {self.endpoint_url} (region {self.region})"
        return f"SQS in {self.region}"

    def _count_request(self, service: str, action: str) -> None:
        self.calls.count(service, action)

    def _sqs(self) -> SQSClient:
        return self._clients.sqs()

    def _cloudwatch(self) -> CloudWatchClient:
        return self._clients.cloudwatch()

    def close(self) -> None:
        self._clients.close()

    @contextmanager
    def _mapped(self, service: str = "SQS", queue: str | None = None) -> Iterator[None]:
        """Translate botocore errors raised inside the block; ``queue`` names the queue."""
        with mapped(self._clients, service, queue, lambda name: self._urls.pop(name, None)):
            yield

    # -- queues ------------------------------------------------------------------

    def queue_name(self, url: str) -> str:
        return urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]

    def queue_arn(self, url: str) -> str:
        parts = [p for p in urlsplit(url).path.split("/") if p]
        account = parts[0] if len(parts) >= 2 else ""
        return f"arn:{_partition(self.region)}:sqs:{self.region}:{account}:{self.queue_name(url)}"

    def get_queue_url(self, name: str) -> str:
        url = self._urls.get(name)
        if url is None:
            with self._mapped(queue=name):
                url = str(self._sqs().get_queue_url(QueueName=name)["QueueUrl"])
            self._urls[name] = url
        return url

    def create_queue(
        self, name: str, attributes: Mapping[str, str], tags: Mapping[str, str] | None = None
    ) -> str:
        request: CreateQueueRequestTypeDef = {
            "QueueName": name,
            "Attributes": cast("dict[QueueAttributeNameType, str]", dict(attributes)),
        }
        if tags:
            request["tags"] = dict(tags)
        with self._mapped(queue=name):
            response = self._sqs().create_queue(**request)
            url = str(response["QueueUrl"])
        self._urls[name] = url
        return url

    def get_queue_attributes(self, url: str, names: Sequence[str] = ("All",)) -> dict[str, str]:
        wanted = cast("list[QueueAttributeFilterType]", list(names))
        with self._mapped(queue=self.queue_name(url)):
            response = self._sqs().get_queue_attributes(QueueUrl=url, AttributeNames=wanted)
            return {str(k): str(v) for k, v in response.get("Attributes", {}).items()}

    def set_queue_attributes(self, url: str, attributes: Mapping[str, str]) -> None:
        attrs = cast("dict[QueueAttributeNameType, str]", dict(attributes))
        with self._mapped(queue=self.queue_name(url)):
            self._sqs().set_queue_attributes(QueueUrl=url, Attributes=attrs)

    def list_queue_tags(self, url: str) -> dict[str, str]:
        with self._mapped(queue=self.queue_name(url)):
            response = self._sqs().list_queue_tags(QueueUrl=url)
            return dict(response.get("Tags", {}))

    def tag_queue(self, url: str, tags: Mapping[str, str]) -> None:
        with self._mapped(queue=self.queue_name(url)):
            self._sqs().tag_queue(QueueUrl=url, Tags=dict(tags))

    def list_queues(self, prefix: str) -> list[str]:
        urls: list[str] = []
        request: ListQueuesRequestTypeDef = {"MaxResults": self.list_page_size}
        if prefix:
            request["QueueNamePrefix"] = prefix
        while True:
            with self._mapped():
                response = self._sqs().list_queues(**request)
                urls.extend(str(u) for u in response.get("QueueUrls", []))
            if not response.get("NextToken"):
                return sorted(urls)  # SQS's order is arbitrary
            request["NextToken"] = response["NextToken"]

    def delete_queue(self, url: str) -> None:
        name = self.queue_name(url)
        with self._mapped(queue=name):
            self._sqs().delete_queue(QueueUrl=url)
        self._urls.pop(name, None)

    # -- messages ----------------------------------------------------------------

    def send(self, url: str, entry: SendEntry) -> str:
        fields = {k: v for k, v in shapes.send_entry(entry).items() if k != "Id"}
        request = cast("SendMessageRequestTypeDef", {"QueueUrl": url, **fields})
        with self._mapped(queue=self.queue_name(url)):
            response = self._sqs().send_message(**request)
            return str(response["MessageId"])

    def send_batch(self, url: str, entries: Sequence[SendEntry]) -> SendResult:
        batch = [shapes.send_entry(e) for e in entries]
        with self._mapped(queue=self.queue_name(url)):
            response = self._sqs().send_message_batch(QueueUrl=url, Entries=batch)
            sent = {s["Id"]: s["MessageId"] for s in response.get("Successful", [])}
            return SendResult(sent, shapes.failed(response.get("Failed", [])))

    def receive(
        self, url: str, max_messages: int, visibility_timeout: int, wait_time: float
    ) -> list[Message]:
        wait = min(MAX_WAIT_TIME, max(0, int(wait_time)))
        request = {
            "QueueUrl": url,
            "MaxNumberOfMessages": max_messages,
            "VisibilityTimeout": visibility_timeout,
            "WaitTimeSeconds": wait,
            "MessageAttributeNames": ["All"],
        }
        if url.endswith(".fifo"):
            # botocore sends the same id again when it retries this call, so a receive
            # whose answer was lost returns the same messages (SQS keeps the attempt
            # for 5 minutes) instead of hiding them and burning an attempt.
            request["ReceiveRequestAttemptId"] = uuid.uuid4().hex
        with self._mapped(queue=self.queue_name(url)):
            client = self._sqs()
            request[shapes.system_attributes_param(client)] = shapes.SYSTEM_ATTRIBUTES
            response = client.receive_message(**cast("ReceiveMessageRequestTypeDef", request))
            return [shapes.message(url, m) for m in response.get("Messages", [])]

    def delete_batch(self, url: str, entries: Sequence[Receipt]) -> BatchResult:
        batch: list[DeleteMessageBatchRequestEntryTypeDef] = [
            {"Id": e.id, "ReceiptHandle": e.receipt} for e in entries
        ]
        with self._mapped(queue=self.queue_name(url)):
            response = self._sqs().delete_message_batch(QueueUrl=url, Entries=batch)
            ok = [s["Id"] for s in response.get("Successful", [])]
            return BatchResult(ok, shapes.failed(response.get("Failed", [])))

    def change_visibility_batch(self, url: str, entries: Sequence[ChangeVisibility]) -> BatchResult:
        batch: list[ChangeMessageVisibilityBatchRequestEntryTypeDef] = [
            {"Id": e.id, "ReceiptHandle": e.receipt, "VisibilityTimeout": e.timeout}
            for e in entries
        ]
        with self._mapped(queue=self.queue_name(url)):
            response = self._sqs().change_message_visibility_batch(QueueUrl=url, Entries=batch)
            ok = [s["Id"] for s in response.get("Successful", [])]
            return BatchResult(ok, shapes.failed(response.get("Failed", [])))

    # -- CloudWatch --------------------------------------------------------------

    def active_since(self, urls: Iterable[str], since: float) -> dict[str, bool]:
        """Ask CloudWatch: 500 queries (83 queues) per call; see ``cloudwatch.py``."""
        queues = {url: self.queue_name(url) for url in urls}
        now = self._clock()
        if not queues or since >= now:
            return dict.fromkeys(queues, False)
        start = dt.datetime.fromtimestamp(since, dt.timezone.utc)
        end = dt.datetime.fromtimestamp(now, dt.timezone.utc)

        def fetch(request: GetMetricDataInputTypeDef) -> GetMetricDataOutputTypeDef:
            with self._mapped("CloudWatch"):
                return self._cloudwatch().get_metric_data(**request)

        plan = cloudwatch.activity_queries(queues, cloudwatch.activity_period(now - since))
        with self._mapped("CloudWatch"):  # reading the answers
            active = plan.fetch_active(fetch, start, end, self.metric_queries_per_call)
        return {url: url in active for url in queues}

    def put_metric_data(
        self, namespace: str, metrics: Sequence[tuple[str, float, dict[str, str]]]
    ) -> None:
        """Publish ``(name, value, dimensions)`` metrics, up to 1000 per call."""
        data = cloudwatch.metric_data(metrics)
        for chunk in cloudwatch.chunked(data, cloudwatch.MAX_METRIC_DATA):
            with self._mapped("CloudWatch"):
                self._cloudwatch().put_metric_data(Namespace=namespace, MetricData=list(chunk))
