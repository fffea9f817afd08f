"""SqsBroker against the session's moto server (never AWS): configuration, error
mapping, the url cache, ARNs, paging, call counting and CloudWatch activity."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, ConnectionClosedError, ReadTimeoutError

from qdone.broker.base import ChangeVisibility, Receipt, SendEntry
from qdone.broker.sqs import SqsBroker
from qdone.errors import (
    BrokerError,
    BrokerUnavailable,
    ConfigError,
    QueueAlreadyExists,
    QueueDeletedRecently,
    QueueNotFound,
)

NOW = 1_900_000_000.0


@pytest.fixture
def sqs(moto_endpoint: str) -> Iterator[SqsBroker]:
    broker = SqsBroker(region="us-east-1", endpoint_url=moto_endpoint)
    yield broker
    broker.close()


@pytest.fixture
def cloudwatch(moto_endpoint: str) -> Any:
    """A plain CloudWatch client, to seed the AWS/SQS metrics moto never produces."""
    return boto3.client("cloudwatch", region_name="us-east-1", endpoint_url=moto_endpoint)


def _closed_port_url() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# -- configuration --------------------------------------------------------------


def test_region_and_endpoint_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    assert SqsBroker().describe() == "SQS in us-east-1"
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert SqsBroker().region == "eu-west-1"
    monkeypatch.setenv("AWS_REGION", "eu-central-1")
    assert SqsBroker().region == "eu-central-1"
    assert SqsBroker(region="ap-south-1").region == "ap-south-1"
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", "http://127.0.0.1:9")
    assert SqsBroker().describe() == "SQS at http://127.0.0.1:9 (region eu-central-1)"
    given = SqsBroker(endpoint_url="http://127.0.0.1:8", region="us-east-1")
    assert given.describe() == "SQS at http://127.0.0.1:8 (region us-east-1)"
    assert given.calls.total() == 0  # describing makes no call


def test_package_import_does_not_load_the_aws_sdk() -> None:
    code = "import sys, qdone.broker, qdone.broker.base; print('boto3' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_one_client_shared_by_threads(sqs: SqsBroker) -> None:
    seen: list[object] = []
    threads = [threading.Thread(target=lambda: seen.append(sqs._sqs())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(c) for c in seen}) == 1


# -- error mapping --------------------------------------------------------------


def test_missing_queue(sqs: SqsBroker, prefix: str) -> None:
    name = f"{prefix}absent"
    with pytest.raises(QueueNotFound) as err:
        sqs.get_queue_url(name)
    assert err.value.queue == name
    url = sqs.create_queue(name, {})
    sqs.delete_queue(url)
    for call in (
        lambda: sqs.get_queue_attributes(url),
        lambda: sqs.send(url, SendEntry("a", "x")),
        lambda: sqs.receive(url, 1, 30, 0),
        lambda: sqs.delete_queue(url),
    ):
        with pytest.raises(QueueNotFound, match=name):
            call()


def test_stale_cached_url_is_dropped(sqs: SqsBroker, moto_endpoint: str, prefix: str) -> None:
    url = sqs.create_queue(f"{prefix}q", {})
    other = SqsBroker(region="us-east-1", endpoint_url=moto_endpoint)
    other.delete_queue(url)
    with pytest.raises(QueueNotFound):
        sqs.send(url, SendEntry("a", "x"))
    with pytest.raises(QueueNotFound):
        sqs.get_queue_url(f"{prefix}q")  # asks again rather than trusting the cache
    assert sqs.calls.by_action("SQS")["GetQueueUrl"] == 1


def test_create_existing_queue(sqs: SqsBroker, prefix: str) -> None:
    name = f"{prefix}q"
    url = sqs.create_queue(name, {"VisibilityTimeout": "30"})
    assert sqs.create_queue(name, {"VisibilityTimeout": "30"}) == url
    with pytest.raises(QueueAlreadyExists, match="different attributes") as err:
        sqs.create_queue(name, {"VisibilityTimeout": "31"})
    assert err.value.hint is not None and "qdone check" in err.value.hint


def test_sqs_refusals_become_broker_errors(sqs: SqsBroker, prefix: str) -> None:
    url = sqs.create_queue(f"{prefix}q", {})
    with pytest.raises(BrokerError, match="TooManyEntriesInBatchRequest"):
        sqs.send_batch(url, [SendEntry(str(i), "x") for i in range(11)])
    with pytest.raises(BrokerError, match="InvalidParameterValue"):
        sqs.receive(url, 11, 30, 0)
    with pytest.raises(BrokerError, match="EmptyBatchRequest"):
        sqs.delete_batch(url, [])  # refused by SQS, as by the SQLite broker


def test_missing_credentials(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, moto_endpoint: str
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    for name in ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(name, raising=False)
    empty = tmp_path / "empty-config"
    empty.write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    broker = SqsBroker(endpoint_url=moto_endpoint)
    with pytest.raises(BrokerUnavailable, match="credentials") as err:
        broker.get_queue_url("anything")
    assert err.value.hint is not None and "AWS_PROFILE" in err.value.hint
    assert broker.calls.total() == 0  # refused before any request was sent


def test_unknown_profile_makes_the_broker_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    """An AWS configuration that cannot be used is exit 3, as missing credentials are."""
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    broker = SqsBroker(endpoint_url=_closed_port_url())
    with pytest.raises(BrokerUnavailable, match="no-such-profile"):
        broker.get_queue_url("anything")
    assert broker.calls.total() == 0


def test_malformed_endpoint_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not a url"):
        SqsBroker(endpoint_url="not a url").list_queues("x")


def test_unreachable_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    endpoint = _closed_port_url()
    broker = SqsBroker(endpoint_url=endpoint)
    with pytest.raises(BrokerUnavailable, match=f"SQS at {endpoint}"):
        broker.get_queue_url("anything")
    with pytest.raises(BrokerUnavailable, match=f"CloudWatch at {endpoint}"):
        broker.put_metric_data("qdone", [("m", 1.0, {})])
    assert broker.calls.snapshot() == {
        "CloudWatch": {"PutMetricData": 1},
        "SQS": {"GetQueueUrl": 1},
    }


def test_retried_requests_are_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")  # one retry: a backoff of at most 1 s
    broker = SqsBroker(endpoint_url=_closed_port_url())
    with pytest.raises(BrokerUnavailable):
        broker.list_queues("x")
    assert broker.calls.by_action("SQS") == {"ListQueues": 2}


@pytest.mark.parametrize(
    ("error", "expected", "text"),
    [
        ("QueueDeletedRecently", QueueDeletedRecently, "60 seconds"),
        ("AccessDenied", BrokerError, "User is not authorized"),
        ("InvalidClientTokenId", BrokerUnavailable, "rejected the AWS credentials"),
        ("BatchRequestTooLong", BrokerError, "BatchRequestTooLong"),
    ],
)
def test_client_errors_moto_cannot_produce(
    sqs: SqsBroker, error: str, expected: type[BrokerError], text: str
) -> None:
    response: Any = {"Error": {"Code": error, "Message": "User is not authorized"}}
    with pytest.raises(expected, match=text) as err, sqs._mapped(queue="qdone_q"):
        raise ClientError(response, "CreateQueue")
    assert type(err.value) is expected


def test_a_call_cut_off_midway_is_a_broker_error_not_unreachable(
    sqs: SqsBroker, moto_endpoint: str
) -> None:
    # The request may have reached the queue: callers must not treat it as never sent.
    for error in (ReadTimeoutError, ConnectionClosedError):
        expected = pytest.raises(BrokerError, match="may or may not have taken effect")
        with expected as caught, sqs._mapped():
            raise error(endpoint_url=moto_endpoint)
        assert not isinstance(caught.value, BrokerUnavailable)


# -- url cache, names, ARNs -----------------------------------------------------


def test_url_cache(sqs: SqsBroker, moto_endpoint: str, prefix: str) -> None:
    name = f"{prefix}q"
    url = sqs.create_queue(name, {})
    assert sqs.get_queue_url(name) == url
    assert sqs.calls.by_action("SQS") == {"CreateQueue": 1}
    fresh = SqsBroker(region="us-east-1", endpoint_url=moto_endpoint)
    assert fresh.get_queue_url(name) == fresh.get_queue_url(name) == url
    assert fresh.calls.by_action("SQS") == {"GetQueueUrl": 1}
    fresh.delete_queue(url)
    with pytest.raises(QueueNotFound):
        fresh.get_queue_url(name)
    assert fresh.calls.by_action("SQS") == {"DeleteQueue": 1, "GetQueueUrl": 2}


@pytest.mark.parametrize("suffix", ["", ".fifo"])
def test_arn_and_name_derived_without_a_call(sqs: SqsBroker, prefix: str, suffix: str) -> None:
    name = f"{prefix}q{suffix}"
    url = sqs.create_queue(name, {"FifoQueue": "true"} if suffix else {})
    before = sqs.calls.total()
    arn, derived_name = sqs.queue_arn(url), sqs.queue_name(url)
    assert sqs.calls.total() == before
    assert derived_name == name
    assert arn == sqs.get_queue_attributes(url, ["QueueArn"])["QueueArn"]


def test_arn_partition_and_aws_urls() -> None:
    url = "https://sqs.cn-north-1.amazonaws.com.cn/123456789012/qdone_x"
    assert SqsBroker(region="cn-north-1").queue_arn(url) == (
        "arn:aws-cn:sqs:cn-north-1:123456789012:qdone_x"
    )
    url = "https://sqs.eu-west-1.amazonaws.com/123456789012/qdone_x.fifo"
    broker = SqsBroker(region="eu-west-1")
    assert broker.queue_arn(url) == "arn:aws:sqs:eu-west-1:123456789012:qdone_x.fifo"
    assert broker.queue_name(url) == "qdone_x.fifo"


# -- listing --------------------------------------------------------------------


def _page_list_queues(broker: SqsBroker) -> list[tuple[int, str | None]]:
    """Make moto (which ignores MaxResults) page ListQueues like SQS; record requests."""
    requests: list[tuple[int, str | None]] = []

    def before(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        requests.append((params["MaxResults"], params.get("NextToken")))
        context["page"] = requests[-1]

    def after(parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        size, token = context["page"]
        urls = sorted(parsed.get("QueueUrls", []))
        start = int(token or 0)
        parsed["QueueUrls"] = urls[start : start + size]
        if start + size < len(urls):
            parsed["NextToken"] = str(start + size)

    events = broker._sqs().meta.events
    events.register("before-parameter-build.sqs.ListQueues", before)
    events.register("after-call.sqs.ListQueues", after)
    return requests


def test_list_queues_by_prefix(sqs: SqsBroker, prefix: str) -> None:
    urls = sorted(sqs.create_queue(f"{prefix}{i}", {}) for i in range(3))
    sqs.create_queue(f"x{prefix}", {})
    assert sorted(sqs.list_queues(prefix)) == urls
    assert sqs.list_queues(f"{prefix}nothing") == []
    assert sqs.calls.by_action("SQS")["ListQueues"] == 2


def test_list_queues_follows_next_token(sqs: SqsBroker, prefix: str) -> None:
    urls = sorted(sqs.create_queue(f"{prefix}{i}", {}) for i in range(5))
    requests = _page_list_queues(sqs)
    sqs.list_page_size = 2
    assert sqs.list_queues(prefix) == urls
    assert requests == [(2, None), (2, "2"), (2, "4")]
    assert sqs.calls.by_action("SQS")["ListQueues"] == 3


# -- messages -------------------------------------------------------------------


def test_create_and_send_cost_one_call_each(sqs: SqsBroker, prefix: str) -> None:
    url = sqs.create_queue(f"{prefix}q", {}, tags={"team": "a"})
    sqs.send(url, SendEntry("0", "echo hi"))
    sqs.send_batch(url, [SendEntry(str(i), f"echo {i}") for i in range(10)])
    assert sqs.calls.snapshot() == {
        "SQS": {"CreateQueue": 1, "SendMessage": 1, "SendMessageBatch": 1}
    }
    assert sqs.list_queue_tags(url) == {"team": "a"}


def test_message_round_trip(sqs: SqsBroker, prefix: str) -> None:
    url = sqs.create_queue(f"{prefix}q", {})
    before = time.time()
    sent = sqs.send_batch(
        url, [SendEntry("a", "echo a", attributes={"k": "v"}), SendEntry("b", "echo b", delay=0)]
    )
    assert sorted(sent.sent) == ["a", "b"] and sent.failed == []
    messages = sqs.receive(url, 10, 30, 0)
    assert sorted(m.body for m in messages) == ["echo a", "echo b"]
    first = next(m for m in messages if m.body == "echo a")
    assert first.message_id == sent.sent["a"]
    assert first.attributes == {"k": "v"} and first.receive_count == 1
    assert first.group_id is None and before - 5 <= first.sent_at <= time.time() + 5
    hidden = sqs.change_visibility_batch(
        url, [ChangeVisibility("1", first.receipt, 0), ChangeVisibility("2", "bogus", 0)]
    )
    assert hidden.ok == ["1"] and [f.id for f in hidden.failed] == ["2"]
    done = sqs.delete_batch(url, [Receipt(m.message_id, m.receipt) for m in messages])
    assert sorted(done.ok) == sorted(sent.sent.values()) and done.failed == []
    bad = sqs.delete_batch(url, [Receipt("x", "bogus")])
    assert bad.ok == [] and bad.failed[0].code == "ReceiptHandleIsInvalid"
    assert bad.failed[0].sender_fault is True


def test_fifo_group_id_comes_back(sqs: SqsBroker, prefix: str) -> None:
    url = sqs.create_queue(f"{prefix}q.fifo", {"FifoQueue": "true"})
    sqs.send(url, SendEntry("a", "echo", group_id="g1", dedup_id="d1"))
    [message] = sqs.receive(url, 10, 30, 0)
    assert message.group_id == "g1"


def test_attributes(sqs: SqsBroker, prefix: str) -> None:
    url = sqs.create_queue(f"{prefix}q", {"VisibilityTimeout": "30"})
    sqs.set_queue_attributes(url, {"VisibilityTimeout": "45"})
    sqs.tag_queue(url, {"a": "1"})
    assert sqs.get_queue_attributes(url, ["VisibilityTimeout"]) == {"VisibilityTimeout": "45"}
    assert "ApproximateNumberOfMessages" in sqs.get_queue_attributes(url)
    assert sqs.list_queue_tags(url) == {"a": "1"}


# -- CloudWatch -----------------------------------------------------------------


def _seed(cloudwatch: Any, queue: str, metric: str, value: float, at: float) -> None:
    cloudwatch.put_metric_data(
        Namespace="AWS/SQS",
        MetricData=[
            {
                "MetricName": metric,
                "Value": value,
                "Dimensions": [{"Name": "QueueName", "Value": queue}],
                "Timestamp": dt.datetime.fromtimestamp(at, dt.timezone.utc),
            }
        ],
    )


def test_active_since_20_queues_in_one_call(
    moto_endpoint: str, cloudwatch: Any, prefix: str
) -> None:
    now = time.time()
    broker = SqsBroker(region="us-east-1", endpoint_url=moto_endpoint, clock=lambda: now)
    urls = [f"{moto_endpoint}/123456789012/{prefix}{i}" for i in range(20)]
    seeds = {
        0: ("NumberOfMessagesSent", 3.0, now - 120),
        3: ("ApproximateNumberOfMessagesVisible", 7.0, now - 600),
        7: ("NumberOfMessagesDeleted", 1.0, now - 60),
        8: ("ApproximateNumberOfMessagesDelayed", 2.0, now - 300),
        9: ("NumberOfEmptyReceives", 40.0, now - 120),  # polling is not activity
        11: ("NumberOfMessagesReceived", 0.0, now - 120),  # a zero is not activity
        12: ("NumberOfMessagesSent", 5.0, now - 7200),  # before `since`
    }
    for i, (metric, value, at) in seeds.items():
        _seed(cloudwatch, f"{prefix}{i}", metric, value, at)
    active = broker.active_since(urls, now - 3600)
    assert active == {url: i in (0, 3, 7, 8) for i, url in enumerate(urls)}
    assert broker.calls.snapshot() == {"CloudWatch": {"GetMetricData": 1}}

    broker.metric_queries_per_call = 12  # two queues per call
    assert broker.active_since(urls, now - 3600) == active
    assert broker.calls.by_action("CloudWatch") == {"GetMetricData": 11}


def test_active_since_without_a_call(sqs: SqsBroker, moto_endpoint: str) -> None:
    url = f"{moto_endpoint}/123456789012/q"
    assert sqs.active_since([], 0) == {}
    assert sqs.active_since([url], time.time() + 60) == {url: False}
    assert sqs.calls.total() == 0


def test_put_metric_data_batches(
    sqs: SqsBroker, cloudwatch: Any, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # botocore gzips PutMetricData bodies over 10 KB; moto's server then fails to
    # read them (BadGzipFile), though AWS accepts them.
    monkeypatch.setenv("AWS_DISABLE_REQUEST_COMPRESSION", "true")
    metrics = [(f"{prefix}m", float(i), {"queue": f"q{i % 3}"}) for i in range(1500)]
    sqs.put_metric_data("qdone", metrics)
    sqs.put_metric_data("qdone", [])
    assert sqs.calls.snapshot() == {"CloudWatch": {"PutMetricData": 2}}
    listed = cloudwatch.list_metrics(Namespace="qdone", MetricName=f"{prefix}m")["Metrics"]
    assert sorted(m["Dimensions"][0]["Value"] for m in listed) == ["q0", "q1", "q2"]
