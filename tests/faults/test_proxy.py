"""The fault proxy itself: each fault happens at its rate, as a client sees it, the
same way for the same seed; botocore reads its answers as SQS errors."""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError

from .conftest import ProxyFactory
from .proxy import ALL_FAULTS, ERROR_FAULTS, Fault, FaultPlan, FaultProxy, per_queue

N = 1400
RATE = 0.05  # per kind: 7 kinds, 35% of requests faulted


class _Stub(BaseHTTPRequestHandler):
    """An upstream that answers every request with ``{}`` and counts them."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    seen: Counter[str]

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).seen[self.headers.get("X-Amz-Target", "")] += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/x-amz-json-1.0")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def stub() -> Iterator[tuple[str, Counter[str]]]:
    """A fast upstream (moto would do, slower): its URL and its count of requests."""
    seen: Counter[str] = Counter()
    handler = type("Stub", (_Stub,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()
    thread.join()


def _outcome(conn: http.client.HTTPConnection, action: str, body: bytes) -> str:
    """What a client sees of one request: ``200``, ``500``, ``400:Code``… or ``reset``."""
    headers = {"X-Amz-Target": f"AmazonSQS.{action}", "Content-Type": "application/x-amz-json-1.0"}
    try:
        conn.request("POST", "/", body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
    except (ConnectionError, http.client.HTTPException):
        conn.close()  # http.client reconnects on the next request
        return "reset"
    if response.status == 200:
        return "200"
    error = json.loads(data)
    return f"{response.status}:{response.getheader('x-amzn-query-error')}:{error['__type']}"


def _run(proxy: FaultProxy, n: int, action: str = "SendMessageBatch") -> list[str]:
    conn = http.client.HTTPConnection("127.0.0.1", int(proxy.url.rsplit(":", 1)[1]), timeout=10)
    try:
        return [_outcome(conn, action, b'{"QueueUrl": "http://x/1/q"}') for _ in range(n)]
    finally:
        conn.close()


def _within(count: int, n: int, rate: float) -> bool:
    """``count`` is a plausible draw of Binomial(n, rate): within 4.5 sigma."""
    sigma = math.sqrt(n * rate * (1 - rate))
    return abs(count - n * rate) <= 4.5 * sigma


def test_each_fault_happens_at_its_rate_as_the_client_sees_it(
    fault_proxy: ProxyFactory, stub: tuple[str, Counter[str]]
) -> None:
    upstream, seen = stub
    proxy = fault_proxy(FaultPlan.mixed(RATE * len(ALL_FAULTS), seed=11, latency=0.001), upstream)
    outcomes = Counter(_run(proxy, N))
    faults = proxy.stats.faults
    for kind in ALL_FAULTS:
        assert _within(faults[kind], N, RATE), (kind, faults[kind])
    assert (
        outcomes["500:InternalError;Receiver:com.amazonaws.sqs#InternalError"]
        == faults[Fault.HTTP_500]
    )
    assert (
        outcomes["503:ServiceUnavailable;Receiver:com.amazonaws.sqs#ServiceUnavailable"]
        == (faults[Fault.HTTP_503])
    )
    throttling = "400:ThrottlingException;Sender:com.amazon.coral.availability#ThrottlingException"
    assert outcomes[throttling] == faults[Fault.THROTTLING]
    assert (
        outcomes["400:RequestThrottled;Sender:com.amazonaws.sqs#RequestThrottled"]
        == faults[Fault.REQUEST_THROTTLED]
    )
    assert outcomes["reset"] == faults[Fault.RESET_BEFORE] + faults[Fault.RESET_AFTER]
    not_forwarded = sum(faults[k] for k in ERROR_FAULTS) + faults[Fault.RESET_BEFORE]
    assert seen["AmazonSQS.SendMessageBatch"] == N - not_forwarded
    assert proxy.stats.forwarded["SendMessageBatch"] == N - not_forwarded
    assert proxy.stats.requests["SendMessageBatch"] == N
    assert proxy.stats.count(action="SendMessageBatch") == sum(faults.values())
    # Every reset ended a connection; the other requests shared connections.
    assert proxy.stats.connections == 1 + outcomes["reset"]


def test_a_seed_gives_the_same_faults_and_another_seed_others(
    fault_proxy: ProxyFactory, stub: tuple[str, Counter[str]]
) -> None:
    upstream, _ = stub
    plan = FaultPlan.mixed(0.5, seed=5, latency=0.0)
    first = _run(fault_proxy(plan, upstream), 200)
    again = _run(fault_proxy(plan, upstream), 200)
    other = _run(fault_proxy(FaultPlan.mixed(0.5, seed=6, latency=0.0), upstream), 200)
    assert first == again
    assert first != other


def test_per_queue_streams_do_not_depend_on_interleaving(
    fault_proxy: ProxyFactory, stub: tuple[str, Counter[str]]
) -> None:
    upstream, _ = stub
    plan = FaultPlan.mixed(0.5, ERROR_FAULTS, seed=3, stream=per_queue)

    def queue_outcomes(order: list[str]) -> dict[str, list[str]]:
        proxy = fault_proxy(plan, upstream)
        conn = http.client.HTTPConnection("127.0.0.1", int(proxy.url.rsplit(":", 1)[1]))
        seen: dict[str, list[str]] = {}
        for queue in order:
            body = json.dumps({"QueueUrl": f"http://h/123/{queue}"}).encode()
            seen.setdefault(queue, []).append(_outcome(conn, "SendMessageBatch", body))
        conn.close()
        return seen

    assert queue_outcomes(["a", "b"] * 50) == queue_outcomes(["a"] * 50 + ["b"] * 50)


def test_faults_only_hit_the_chosen_actions_and_requests(
    fault_proxy: ProxyFactory, stub: tuple[str, Counter[str]]
) -> None:
    upstream, _ = stub
    plan = FaultPlan.always(
        Fault.HTTP_503, actions={"SendMessageBatch"}, select=lambda _, body: b"poison" in body
    )
    proxy = fault_proxy(plan, upstream)
    conn = http.client.HTTPConnection("127.0.0.1", int(proxy.url.rsplit(":", 1)[1]))
    assert _outcome(conn, "SendMessageBatch", b'{"x": "poison"}').startswith("503:")
    assert _outcome(conn, "SendMessageBatch", b'{"x": "fine"}') == "200"
    assert _outcome(conn, "SendMessage", b'{"x": "poison"}') == "200"
    assert proxy.stats.by_action == {"SendMessageBatch": Counter({Fault.HTTP_503: 1})}


def test_added_latency(fault_proxy: ProxyFactory, stub: tuple[str, Counter[str]]) -> None:
    upstream, _ = stub
    proxy = fault_proxy(FaultPlan(rates={Fault.LATENCY: 1.0}, latency=0.15), upstream)
    start = time.perf_counter()
    assert _run(proxy, 3) == ["200"] * 3
    assert time.perf_counter() - start >= 0.45
    assert proxy.stats.faults[Fault.LATENCY] == 3


def test_query_protocol_gets_an_xml_error(
    fault_proxy: ProxyFactory, stub: tuple[str, Counter[str]]
) -> None:
    upstream, _ = stub
    proxy = fault_proxy(FaultPlan.always(Fault.THROTTLING), upstream)
    conn = http.client.HTTPConnection("127.0.0.1", int(proxy.url.rsplit(":", 1)[1]))
    conn.request(
        "POST",
        "/",
        body=b"Action=SendMessageBatch&Version=2012-11-05",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    response = conn.getresponse()
    body = response.read().decode()
    assert response.status == 400
    assert "<Code>ThrottlingException</Code>" in body
    assert proxy.stats.by_action["SendMessageBatch"][Fault.THROTTLING] == 1


def _client(url: str) -> Any:
    """boto3 SQS without retries: each call is one request, each fault one error."""
    return boto3.client(
        "sqs",
        endpoint_url=url,
        config=Config(retries={"mode": "standard", "total_max_attempts": 1}),
    )


@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [
        (Fault.HTTP_500, 500, "InternalError"),
        (Fault.HTTP_503, 503, "ServiceUnavailable"),
        (Fault.THROTTLING, 400, "ThrottlingException"),
        (Fault.REQUEST_THROTTLED, 400, "RequestThrottled"),
    ],
)
def test_botocore_reads_error_answers_as_sqs_errors(
    fault_proxy: ProxyFactory, moto_endpoint: str, prefix: str, kind: Fault, status: int, code: str
) -> None:
    proxy = fault_proxy()
    client = _client(proxy.url)
    url = client.create_queue(QueueName=f"{prefix}errors")["QueueUrl"]
    proxy.plan = FaultPlan.always(kind, actions={"SendMessageBatch"})
    with pytest.raises(ClientError) as info:
        client.send_message_batch(QueueUrl=url, Entries=[{"Id": "0", "MessageBody": "x"}])
    assert info.value.response["Error"]["Code"] == code
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    # The request never reached moto; other actions pass through.
    assert _client(moto_endpoint).receive_message(QueueUrl=url).get("Messages", []) == []


@pytest.mark.parametrize(("kind", "applied"), [(Fault.RESET_BEFORE, 0), (Fault.RESET_AFTER, 1)])
def test_resets_before_and_after_the_server_applies_the_request(
    fault_proxy: ProxyFactory, moto_endpoint: str, prefix: str, kind: Fault, applied: int
) -> None:
    proxy = fault_proxy()
    client = _client(proxy.url)
    url = client.create_queue(QueueName=f"{prefix}resets")["QueueUrl"]
    proxy.plan = FaultPlan.always(kind, actions={"SendMessage"})
    with pytest.raises(ConnectionClosedError):
        client.send_message(QueueUrl=url, MessageBody="x")
    direct = _client(moto_endpoint)
    attributes = direct.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    assert int(attributes["ApproximateNumberOfMessages"]) == applied
    # The connection pool recovers: the next call goes through on a new connection.
    proxy.plan = FaultPlan()
    with contextlib.closing(client):
        client.send_message(QueueUrl=url, MessageBody="y")
    assert proxy.stats.faults[kind] == 1
