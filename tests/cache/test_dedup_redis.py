"""--external-dedup on SQS with Redis: Node qdone 2.x's keys and attribute, the
worker's claims, and Redis away."""

from __future__ import annotations

import json
import math
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import redis

from qdone.broker.base import Message, SendEntry
from qdone.cache import Cache, open_cache
from qdone.cache.dedup import RedisDedup
from qdone.dedup import ATTRIBUTE, Deduper, DedupSettings, RunClaims
from qdone.errors import ExitCode

from ..cli_helpers import run_qdone
from ..redis_server import RedisServer


@pytest.fixture
def cache(redis_uri: str, cache_prefix: str) -> Iterator[Cache]:
    with open_cache(redis_uri, cache_prefix) as c:
        yield c


@pytest.fixture
def raw(redis_uri: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_uri, decode_responses=True)
    yield client
    client.close()


def sqs_args(endpoint: str, prefix: str, uri: str, cache_prefix: str) -> list[str]:
    return [
        "--broker", "sqs", "--endpoint-url", endpoint, "--prefix", prefix,
        "--cache-uri", uri, "--cache-prefix", cache_prefix,
    ]  # fmt: skip


def receive_raw(endpoint: str, url: str) -> list[dict[str, object]]:
    sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1")
    got = sqs.receive_message(
        QueueUrl=url,
        MaxNumberOfMessages=10,
        MessageAttributeNames=["All"],
        WaitTimeSeconds=0,
        VisibilityTimeout=0,  # a peek: the message stays for the worker
    )
    return list(got.get("Messages", []))


def test_windows_in_node_layout(cache: Cache, raw: redis.Redis, cache_prefix: str) -> None:
    store = RedisDedup(cache)
    assert store.open_windows(["ls_-al", "ls_-al", "other"], 300, stats=False) == [1, 2, 1]
    key = f"{cache_prefix}dedup:ls_-al"
    assert raw.get(key) == "2"  # a counter, as Node's INCR leaves it
    assert 290 < raw.ttl(key) <= 300  # seconds, not a millisecond timestamp
    raw.incr(key)  # a Node enqueue of the same command counts in the same window
    assert store.open_windows(["ls_-al"], 300, stats=False) == [4]
    assert store.close_windows(["ls_-al"])
    assert raw.exists(key) == 0


def test_stats_in_node_layout(cache: Cache, raw: redis.Redis, cache_prefix: str) -> None:
    store = RedisDedup(cache, clock=lambda: 1_800_000_000.5)
    store.open_windows(["a", "a", "a", "b", "b"], 300, stats=True)
    duplicates = raw.zrange(f"{cache_prefix}dedup-stats:duplicateSet", 0, -1, withscores=True)
    ends = raw.zrange(f"{cache_prefix}dedup-stats:expirationSet", 0, -1, withscores=True)
    assert duplicates == [(f"{cache_prefix}dedup:b", 1.0), (f"{cache_prefix}dedup:a", 2.0)]
    assert {member: score for member, score in ends} == {
        f"{cache_prefix}dedup:a": 1_800_000_300.0,
        f"{cache_prefix}dedup:b": 1_800_000_300.0,
    }
    assert RedisDedup(cache, clock=lambda: 1_800_000_301.0).stat_maintenance()
    assert raw.zcard(f"{cache_prefix}dedup-stats:duplicateSet") == 0


def test_claims_in_redis(cache: Cache) -> None:
    claims = RunClaims(RedisDedup(cache), done_ttl=300)

    def m(message_id: str, token: str | None = "t1") -> Message:
        attributes = {ATTRIBUTE: "job"} | ({"QdoneDeduplicationToken": token} if token else {})
        return Message("url", message_id, "r", "cmd", 1, 0.0, attributes=attributes)

    assert claims.claim(m("m1"), 60)
    assert not claims.claim(m("m2"), 60)
    assert claims.claim(m("m1"), 60)
    claims.finish(m("m1"), succeeded=True)
    assert not claims.claim(m("m2"), 60)
    assert claims.claim(m("m3", token="t2"), 60)
    claims.finish(m("m3", token="t2"), succeeded=False)
    assert claims.claim(m("m4", token="t2"), 60)


def test_three_enqueues_one_message_then_again_after_the_job(
    tmp_path: Path, moto_endpoint: str, prefix: str, redis_uri: str, cache_prefix: str,
    raw: redis.Redis,
) -> None:  # fmt: skip
    args = sqs_args(moto_endpoint, prefix, redis_uri, cache_prefix)
    runs = tmp_path / "runs"
    command = f"echo ran >> {runs}"
    for n in range(3):
        result = run_qdone(*args, "enqueue", "--external-dedup", "q", command)
        assert result.returncode == 0, result.stderr
        assert ('"ENQUEUED"' if n == 0 else '"DUPLICATE_SKIPPED"') in result.stdout
    # What Node qdone 2.x reads: the key, a counter, and the message attribute
    # (looked at on another queue: a receive counts against maxReceiveCount 1).
    ident = f"echo_ran_>>_{runs}"
    assert raw.get(f"{cache_prefix}dedup:{ident}") == "3"
    assert run_qdone(*args, "enqueue", "--external-dedup", "peek", "ls  -l").returncode == 0
    url = boto3.client("sqs", endpoint_url=moto_endpoint, region_name="us-east-1").get_queue_url(
        QueueName=f"{prefix}peek"
    )["QueueUrl"]
    (msg,) = receive_raw(moto_endpoint, url)
    attributes = msg["MessageAttributes"]
    assert isinstance(attributes, dict)
    assert attributes[ATTRIBUTE] == {"StringValue": "ls__-l", "DataType": "String"}
    result = run_qdone(*args, "worker", "q", "--drain", "--wait-time", "1")
    assert result.returncode == 0, result.stderr
    assert runs.exists(), result.stdout + result.stderr
    assert runs.read_text() == "ran\n"
    assert raw.exists(f"{cache_prefix}dedup:{ident}") == 0  # cleared, as Node's worker does
    result = run_qdone(*args, "enqueue", "--external-dedup", "q", command)
    assert '"ENQUEUED"' in result.stdout


def test_worker_clears_a_window_node_qdone_opened(
    tmp_path: Path, moto_endpoint: str, prefix: str, redis_uri: str, cache_prefix: str,
    raw: redis.Redis,
) -> None:  # fmt: skip
    """Node qdone 2.x enqueues with INCR + a message carrying QdoneDeduplicationId
    only; our worker runs it and deletes the key, so Node can enqueue it again."""
    runs = tmp_path / "runs"
    command = f"echo node >> {runs}"
    ident = f"echo_node_>>_{runs}"
    args = sqs_args(moto_endpoint, prefix, redis_uri, cache_prefix)
    result = run_qdone(*args, "check", "--create", "q")  # the queue pair, as Node makes it
    assert result.returncode == 0, result.stderr
    sqs = boto3.client("sqs", endpoint_url=moto_endpoint, region_name="us-east-1")
    url = sqs.get_queue_url(QueueName=f"{prefix}q")["QueueUrl"]
    key = f"{cache_prefix}dedup:{ident}"
    assert raw.incr(key) == 1
    raw.expireat(key, math.floor(time.time() * 1000) + 300)  # Node 2.0.37's expiry, as it is
    sqs.send_message(
        QueueUrl=url,
        MessageBody=command,
        MessageAttributes={ATTRIBUTE: {"DataType": "String", "StringValue": ident}},
    )
    result = run_qdone(*args, "worker", "q", "--drain", "--wait-time", "1")
    assert result.returncode == 0, result.stderr
    assert runs.read_text() == "node\n"
    assert raw.exists(key) == 0


def test_redis_down_enqueue_sends_or_fails_as_told(
    tmp_path: Path, moto_endpoint: str, prefix: str
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = sqs_args(moto_endpoint, prefix, f"redis://127.0.0.1:{port}/0", "x:")
    result = run_qdone(*args, "enqueue", "--external-dedup", "q", "echo 1")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    warnings = [json.loads(line)["message"] for line in lines if '"WARNING"' in line]
    assert any("is unreachable" in w for w in warnings)
    assert any("duplicates not checked" in w for w in warnings)
    assert '"ENQUEUED"' in result.stdout
    result = run_qdone(
        *args, "enqueue", "--external-dedup", "--dedup-on-error", "fail", "q", "echo 2"
    )
    assert result.returncode == ExitCode.UNAVAILABLE
    assert "--dedup-on-error is fail" in result.stderr
    result = run_qdone(
        *args, "enqueue-batch", "--external-dedup", "--dedup-on-error", "fail", "-",
        input=b"q echo 3\nq echo 4\n",
    )  # fmt: skip
    assert result.returncode == ExitCode.FAILURE
    assert "2 of 2 lines were not enqueued" in result.stderr


def test_worker_runs_without_claims_when_redis_is_down(
    tmp_path: Path, redis_server: RedisServer, moto_endpoint: str, prefix: str, cache_prefix: str,
) -> None:  # fmt: skip
    args = sqs_args(moto_endpoint, prefix, redis_server.uri, cache_prefix)
    runs = tmp_path / "runs"
    for n in range(3):
        assert (
            run_qdone(*args, "enqueue", "--external-dedup", "q", f"echo {n} >> {runs}").returncode
            == 0
        )
    redis_server.kill()
    result = run_qdone(*args, "worker", "q", "--drain", "--wait-time", "1")
    assert result.returncode == 0, result.stderr
    assert sorted(runs.read_text().split()) == ["0", "1", "2"]
    warnings = [line for line in result.stdout.splitlines() if '"WARNING"' in line]
    assert sum("without claims" in w for w in warnings) == 1


def test_deduper_one_script_per_entry(redis_server: RedisServer, cache_prefix: str) -> None:
    stats = redis.Redis.from_url(redis_server.uri, decode_responses=True)

    def calls(command: str) -> int:
        return int(stats.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))

    with open_cache(redis_server.uri, cache_prefix) as c:
        deduper = Deduper(RedisDedup(c), DedupSettings())
        deduper.admit([SendEntry(str(n), f"echo {n}") for n in range(10)], fifo=False)
        deduper.admit([SendEntry(str(n), f"echo {n}") for n in range(10)], fifo=False)
    # INCR and, for the first copy only, EXPIRE: one script call per entry.
    assert (calls("evalsha") + calls("eval"), calls("incr"), calls("expire")) == (20, 20, 10)
    stats.close()
