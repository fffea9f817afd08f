"""Amazon SQS (or any SQS-compatible server): a thin mapping of the Broker interface.

This module and ``cloudwatch.py`` are the only ones that know about the AWS SDK;
every botocore error is translated here into a ``QdoneError``. Clients are made
lazily, once, from one session, and shared by all threads.

Call counting: ``calls`` counts HTTP requests actually sent, by action, through
botocore's ``before-send`` event, so a request that botocore retries counts once
per attempt and a call refused before sending (no credentials) counts zero.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from ..errors import (
    BrokerError,
    BrokerUnavailable,
    ConfigError,
    FailedEntry,
    QdoneError,
    QueueAlreadyExists,
    QueueDeletedRecently,
    QueueNotFound,
)
from . import cloudwatch
from .base import (
    BatchResult,
    Broker,
    ChangeVisibility,
    Message,
    Receipt,
    SendEntry,
    SendResult,
)

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_cloudwatch.type_defs import (
        GetMetricDataInputTypeDef,
        GetMetricDataOutputTypeDef,
    )
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.literals import QueueAttributeFilterType, QueueAttributeNameType
    from mypy_boto3_sqs.type_defs import (
        BatchResultErrorEntryTypeDef,
        ChangeMessageVisibilityBatchRequestEntryTypeDef,
        CreateQueueRequestTypeDef,
        DeleteMessageBatchRequestEntryTypeDef,
        ListQueuesRequestTypeDef,
        MessageAttributeValueTypeDef,
        MessageTypeDef,
        ReceiveMessageRequestTypeDef,
        SendMessageBatchRequestEntryTypeDef,
        SendMessageRequestTypeDef,
    )

__all__ = ["SqsBroker"]

log = logging.getLogger(__name__)

DEFAULT_REGION = "us-east-1"
MAX_WAIT_TIME = 20  # SQS's longest long poll
_SYSTEM_ATTRIBUTES = ["ApproximateReceiveCount", "SentTimestamp", "MessageGroupId"]
_SERVICE_IDS = {"sqs": "SQS", "cloudwatch": "CloudWatch"}

_NOT_FOUND = {"QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue"}
_EXISTS = {"QueueAlreadyExists", "QueueNameExists"}
_DELETED_RECENTLY = {"QueueDeletedRecently", "AWS.SimpleQueueService.QueueDeletedRecently"}
_BAD_CREDENTIALS = {
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidSecurity",
}
_CREDENTIALS_HINT = (
    "set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run `aws configure`"
)


def _client_config() -> Config:
    """A new Config per client: botocore writes the resolved retry settings into
    the ``retries`` dict it is given, so a shared one would freeze the first's."""
    # Long polls last up to 20 s, so reads wait longer than that; a worker polls
    # many queues from many threads through one client, so its pool is large.
    return Config(
        retries={"mode": "standard"},
        connect_timeout=5,
        read_timeout=MAX_WAIT_TIME + 10,
        max_pool_connections=50,
        tcp_keepalive=True,
    )


def _env_endpoint(service_env: str) -> str | None:
    """The endpoint botocore would take from the environment for one service."""
    if os.environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() == "true":
        return None
    return os.environ.get(service_env) or os.environ.get("AWS_ENDPOINT_URL") or None


def _partition(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def _system_attributes_param(client: SQSClient) -> str:
    """``MessageSystemAttributeNames``, or ``AttributeNames`` before botocore knew it (2024)."""
    shape = client.meta.service_model.operation_model("ReceiveMessage").input_shape
    new = "MessageSystemAttributeNames"
    return new if shape is not None and new in shape.members else "AttributeNames"


def _failed(entries: Iterable[BatchResultErrorEntryTypeDef]) -> list[FailedEntry]:
    # SenderFault is a bool on the wire, but some SQS emulators send "true"/"false".
    return [
        FailedEntry(
            e["Id"], e["Code"], e.get("Message", ""), str(e["SenderFault"]).lower() == "true"
        )
        for e in entries
    ]


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
        self._explicit_endpoint = endpoint_url
        self.endpoint_url = endpoint_url or _env_endpoint("AWS_ENDPOINT_URL_SQS")
        self._clock = clock
        self._lock = threading.Lock()
        self._session: boto3.session.Session | None = None
        self._sqs_client: SQSClient | None = None
        self._cw_client: CloudWatchClient | None = None
        self._urls: dict[str, str] = {}

    def describe(self) -> str:
        if self.endpoint_url:
            return f"SQS at {self.endpoint_url} (region {self.region})"
        return f"SQS in {self.region}"

    # -- clients -----------------------------------------------------------------

    def _count_request(self, event_name: str, **_: Any) -> None:
        _event, service_id, action = event_name.split(".", 2)
        with self._lock:
            self.calls.count(_SERVICE_IDS.get(service_id, service_id), action)

    def _new_client(self, service: str, endpoint_url: str | None) -> Any:
        """A client of ``service`` from the shared session; call with the lock held."""
        try:
            if self._session is None:
                self._session = boto3.session.Session()
            client = self._session.client(
                service,  # type: ignore[call-overload]
                region_name=self.region,
                endpoint_url=endpoint_url,
                config=_client_config(),
            )
        except ProfileNotFound as exc:
            raise ConfigError(str(exc), hint=_CREDENTIALS_HINT) from exc
        except ValueError as exc:  # botocore's "Invalid endpoint" or a malformed region
            if "region" in str(exc).lower():
                raise ConfigError(f"invalid AWS region {self.region!r}: {exc}") from exc
            raise ConfigError(f"cannot use endpoint {endpoint_url!r}: {exc}") from exc
        client.meta.events.register(f"before-send.{service}", self._count_request)
        log.debug("created %s client", service, extra={"region": self.region})
        return client

    def _sqs(self) -> SQSClient:
        if self._sqs_client is None:
            with self._lock:
                if self._sqs_client is None:
                    self._sqs_client = cast("SQSClient", self._new_client("sqs", self.endpoint_url))
        return self._sqs_client

    def _cloudwatch(self) -> CloudWatchClient:
        if self._cw_client is None:
            with self._lock:
                if self._cw_client is None:
                    client = self._new_client("cloudwatch", self._explicit_endpoint)
                    self._cw_client = cast("CloudWatchClient", client)
        return self._cw_client

    def _endpoint_of(self, service: str) -> str:
        if service == "SQS":
            given = self.endpoint_url
            client: Any = self._sqs_client
        else:
            given = self._explicit_endpoint or _env_endpoint("AWS_ENDPOINT_URL_CLOUDWATCH")
            client = self._cw_client
        if given:
            return given
        return str(client.meta.endpoint_url) if client is not None else f"AWS ({self.region})"

    def close(self) -> None:
        with self._lock:
            for client in (self._sqs_client, self._cw_client):
                if client is not None:
                    client.close()
            self._sqs_client = self._cw_client = None

    # -- errors ------------------------------------------------------------------

    @contextmanager
    def _mapped(self, service: str = "SQS", queue: str | None = None) -> Iterator[None]:
        """Translate botocore errors raised inside the block; ``queue`` names the queue."""
        try:
            yield
        except ClientError as exc:
            raise self._client_error(exc, service, queue) from exc
        except (NoCredentialsError, PartialCredentialsError) as exc:
            raise BrokerUnavailable(
                f"no usable AWS credentials for {service}: {exc}", hint=_CREDENTIALS_HINT
            ) from exc
        except BotoConnectionError as exc:  # no connection could be made
            endpoint = exc.kwargs.get("endpoint_url") or self._endpoint_of(service)
            raise BrokerUnavailable(f"cannot reach {service} at {endpoint}: {exc}") from exc
        except HTTPClientError as exc:
            # The connection broke or timed out mid-request: the request may have
            # reached the queue. Not "unreachable": the next call may well succeed.
            endpoint = exc.kwargs.get("endpoint_url") or self._endpoint_of(service)
            raise BrokerError(
                f"the connection to {service} at {endpoint} failed during the call, which "
                f"may or may not have taken effect: {exc}"
            ) from exc
        except BotoCoreError as exc:
            raise BrokerError(f"{service} call failed: {exc}") from exc

    def _client_error(self, exc: ClientError, service: str, queue: str | None) -> QdoneError:
        error = exc.response.get("Error", {})
        codes = {error.get("Code", ""), str(error.get("QueryErrorCode", ""))}
        message = error.get("Message") or str(exc)
        action = exc.operation_name
        if codes & _NOT_FOUND:
            if queue is not None:
                self._urls.pop(queue, None)
            return QueueNotFound(queue or "?")
        if codes & _EXISTS:
            return QueueAlreadyExists(
                f"queue {queue} already exists with different attributes",
                hint="run `qdone check` to compare and fix its attributes",
            )
        if codes & _DELETED_RECENTLY:
            return QueueDeletedRecently(
                f"cannot create queue {queue}: SQS refuses to re-create a queue "
                "for 60 seconds after it was deleted",
                hint="wait a minute and try again",
            )
        if codes & _BAD_CREDENTIALS:
            return BrokerUnavailable(
                f"{service} rejected the AWS credentials ({action}): {message}",
                hint=_CREDENTIALS_HINT,
            )
        code = error.get("QueryErrorCode") or error.get("Code", "Error")
        return BrokerError(f"{service} {action} failed: {code}: {message}")

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
                url = self._sqs().get_queue_url(QueueName=name)["QueueUrl"]
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
        url = response["QueueUrl"]
        self._urls[name] = url
        return url

    def get_queue_attributes(self, url: str, names: Sequence[str] = ("All",)) -> dict[str, str]:
        wanted = cast("list[QueueAttributeFilterType]", list(names))
        with self._mapped(queue=self.queue_name(url)):
            response = self._sqs().get_queue_attributes(QueueUrl=url, AttributeNames=wanted)
        return {str(k): v for k, v in response.get("Attributes", {}).items()}

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
            urls.extend(response.get("QueueUrls", []))
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
        fields = {k: v for k, v in self._send_entry(entry).items() if k != "Id"}
        request = cast("SendMessageRequestTypeDef", {"QueueUrl": url, **fields})
        with self._mapped(queue=self.queue_name(url)):
            response = self._sqs().send_message(**request)
        return response["MessageId"]

    def send_batch(self, url: str, entries: Sequence[SendEntry]) -> SendResult:
        batch = [self._send_entry(e) for e in entries]
        with self._mapped(queue=self.queue_name(url)):
            response = self._sqs().send_message_batch(QueueUrl=url, Entries=batch)
        sent = {s["Id"]: s["MessageId"] for s in response.get("Successful", [])}
        return SendResult(sent, _failed(response.get("Failed", [])))

    @staticmethod
    def _send_entry(entry: SendEntry) -> SendMessageBatchRequestEntryTypeDef:
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

    def receive(
        self, url: str, max_messages: int, visibility_timeout: int, wait_time: float
    ) -> list[Message]:
        request = {
            "QueueUrl": url,
            "MaxNumberOfMessages": max_messages,
            "VisibilityTimeout": visibility_timeout,
            "WaitTimeSeconds": min(MAX_WAIT_TIME, max(0, int(wait_time))),
            "MessageAttributeNames": ["All"],
        }
        with self._mapped(queue=self.queue_name(url)):
            client = self._sqs()
            request[_system_attributes_param(client)] = _SYSTEM_ATTRIBUTES
            response = client.receive_message(**cast("ReceiveMessageRequestTypeDef", request))
        return [self._message(url, m) for m in response.get("Messages", [])]

    @staticmethod
    def _message(url: str, m: MessageTypeDef) -> Message:
        system = m.get("Attributes", {})
        attributes = {
            k: v["StringValue"]
            for k, v in m.get("MessageAttributes", {}).items()
            if "StringValue" in v
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
        )

    def delete_batch(self, url: str, entries: Sequence[Receipt]) -> BatchResult:
        batch: list[DeleteMessageBatchRequestEntryTypeDef] = [
            {"Id": e.id, "ReceiptHandle": e.receipt} for e in entries
        ]
        with self._mapped(queue=self.queue_name(url)):
            response = self._sqs().delete_message_batch(QueueUrl=url, Entries=batch)
        ok = [s["Id"] for s in response.get("Successful", [])]
        return BatchResult(ok, _failed(response.get("Failed", [])))

    def change_visibility_batch(self, url: str, entries: Sequence[ChangeVisibility]) -> BatchResult:
        batch: list[ChangeMessageVisibilityBatchRequestEntryTypeDef] = [
            {"Id": e.id, "ReceiptHandle": e.receipt, "VisibilityTimeout": e.timeout}
            for e in entries
        ]
        with self._mapped(queue=self.queue_name(url)):
            response = self._sqs().change_message_visibility_batch(QueueUrl=url, Entries=batch)
        ok = [s["Id"] for s in response.get("Successful", [])]
        return BatchResult(ok, _failed(response.get("Failed", [])))

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
