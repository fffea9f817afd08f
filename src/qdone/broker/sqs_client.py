"""The AWS SDK at qdone's edge: botocore clients (made lazily, once, from one session,
shared by all threads, every request counted) and the translation of every botocore
error into a ``QdoneError``.

With ``cloudwatch.py`` and ``sqs.py``, the only modules that know about the AWS SDK.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConfigParseError,
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
    QdoneError,
    QueueAlreadyExists,
    QueueDeletedRecently,
    QueueNotFound,
)

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_sqs import SQSClient

__all__ = ["MAX_WAIT_TIME", "Clients", "check_endpoint", "env_endpoint", "mapped"]

log = logging.getLogger(__name__)

MAX_WAIT_TIME = 20  # SQS's longest long poll
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


_AWS_CONFIG_ERRORS = (ProfileNotFound, ConfigParseError)
# What reading an answer that lacks a field, or holds one of the wrong type, raises.
_MALFORMED = (KeyError, TypeError, ValueError, AttributeError, IndexError)


def _config_error(exc: BotoCoreError) -> BrokerUnavailable:
    """An AWS configuration that cannot be used: no call was made."""
    return BrokerUnavailable(f"cannot use the AWS configuration: {exc}", hint=_CREDENTIALS_HINT)


def check_endpoint(url: str | None) -> None:
    """Raise ConfigError for an endpoint URL no request could go to."""
    if url is None:
        return
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError when out of range)
    except ValueError as exc:
        raise ConfigError(f"cannot use endpoint {url!r}: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"cannot use endpoint {url!r}: not an http:// or https:// URL")


CONNECT_TIMEOUT = 3  # s to open a connection: SQS accepts within milliseconds
# s to wait for an answer: past a long poll's 20 s. Not shorter for other calls: a
# send whose answer is given up on is sent again, and a slow server then keeps both
# copies (a second signal ends a worker within seconds whatever its calls wait for).
READ_TIMEOUT = MAX_WAIT_TIME + 10


def _client_config(read_timeout: float = READ_TIMEOUT) -> Config:
    """A new Config per client: botocore writes the resolved retry settings into
    the ``retries`` dict it is given, so a shared one would freeze the first's."""
    # A worker polls many queues from many threads through one client: a large pool.
    # A call hanging on a dead network costs at most 3 tries of the timeouts.
    return Config(
        retries={"mode": "standard"},
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=read_timeout,
        max_pool_connections=50,
        tcp_keepalive=True,
    )


def env_endpoint(service_env: str) -> str | None:
    """The endpoint botocore would take from the environment for one service."""
    if os.environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() == "true":
        return None
    return os.environ.get(service_env) or os.environ.get("AWS_ENDPOINT_URL") or None


class Clients:
    """The SQS and CloudWatch clients of one broker; ``on_request(service, action)``
    is called for every HTTP request botocore sends (``before-send``)."""

    def __init__(
        self,
        region: str,
        endpoint_url: str | None,
        explicit_endpoint: str | None,
        on_request: Callable[[str, str], None],
    ) -> None:
        self.region = region
        self.endpoint_url = endpoint_url
        self._explicit_endpoint = explicit_endpoint
        self._on_request = on_request
        self._lock = threading.Lock()
        self._session: boto3.session.Session | None = None
        self._sqs_client: SQSClient | None = None
        self._cw_client: CloudWatchClient | None = None

    def _count_request(self, event_name: str, **_: Any) -> None:
        _event, service_id, action = event_name.split(".", 2)
        with self._lock:
            self._on_request(_SERVICE_IDS.get(service_id, service_id), action)

    def _new_client(
        self, service: str, endpoint_url: str | None, read_timeout: float = READ_TIMEOUT
    ) -> Any:
        """A client of ``service`` from the shared session; call with the lock held."""
        try:
            if self._session is None:
                self._session = boto3.session.Session()
            client = self._session.client(
                service,  # type: ignore[call-overload]
                region_name=self.region,
                endpoint_url=endpoint_url,
                config=_client_config(read_timeout),
            )
        except _AWS_CONFIG_ERRORS as exc:
            raise _config_error(exc) from exc
        except ValueError as exc:  # botocore's "Invalid endpoint" or a malformed region
            if "region" in str(exc).lower():
                raise ConfigError(f"invalid AWS region {self.region!r}: {exc}") from exc
            raise ConfigError(f"cannot use endpoint {endpoint_url!r}: {exc}") from exc
        client.meta.events.register(f"before-send.{service}", self._count_request)
        log.debug("created %s client", service, extra={"region": self.region})
        return client

    def sqs(self) -> SQSClient:
        if self._sqs_client is None:
            with self._lock:
                if self._sqs_client is None:
                    self._sqs_client = cast("SQSClient", self._new_client("sqs", self.endpoint_url))
        return self._sqs_client

    def cloudwatch(self) -> CloudWatchClient:
        if self._cw_client is None:
            with self._lock:
                if self._cw_client is None:
                    client = self._new_client("cloudwatch", self._explicit_endpoint)
                    self._cw_client = cast("CloudWatchClient", client)
        return self._cw_client

    def endpoint_of(self, service: str) -> str:
        if service == "SQS":
            given = self.endpoint_url
            client: Any = self._sqs_client
        else:
            given = self._explicit_endpoint or env_endpoint("AWS_ENDPOINT_URL_CLOUDWATCH")
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


@contextmanager
def mapped(
    clients: Clients, service: str, queue: str | None, forget: Callable[[str], object]
) -> Iterator[None]:
    """Translate botocore errors raised inside the block; ``queue`` names the queue,
    ``forget(queue)`` drops its cached url when SQS says it does not exist."""
    try:
        yield
    except ClientError as exc:
        raise _client_error(exc, service, queue, forget) from exc
    except _AWS_CONFIG_ERRORS as exc:
        raise _config_error(exc) from exc
    except (NoCredentialsError, PartialCredentialsError) as exc:
        raise BrokerUnavailable(
            f"no usable AWS credentials for {service}: {exc}", hint=_CREDENTIALS_HINT
        ) from exc
    except BotoConnectionError as exc:  # no connection could be made
        endpoint = exc.kwargs.get("endpoint_url") or clients.endpoint_of(service)
        raise BrokerUnavailable(f"cannot reach {service} at {endpoint}: {exc}") from exc
    except HTTPClientError as exc:
        # The connection broke or timed out mid-request: the request may have
        # reached the queue. Not "unreachable": the next call may well succeed.
        endpoint = exc.kwargs.get("endpoint_url") or clients.endpoint_of(service)
        raise BrokerError(
            f"the connection to {service} at {endpoint} failed during the call, which "
            f"may or may not have taken effect: {exc}"
        ) from exc
    except BotoCoreError as exc:
        raise BrokerError(f"{service} call failed: {exc}") from exc
    except _MALFORMED as exc:
        # An answer that is not what SQS sends (a proxy's page, an emulator's bug): a
        # broker error like any other, retried by whoever retries those.
        raise BrokerError(
            f"{service} at {clients.endpoint_of(service)} gave an answer qdone cannot "
            f"read ({type(exc).__name__}: {exc})"
        ) from exc


def _client_error(
    exc: ClientError, service: str, queue: str | None, forget: Callable[[str], object]
) -> QdoneError:
    error = exc.response.get("Error", {})
    codes = {error.get("Code", ""), str(error.get("QueryErrorCode", ""))}
    message = error.get("Message") or str(exc)
    action = exc.operation_name
    if codes & _NOT_FOUND:
        if queue is not None:
            forget(queue)
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
