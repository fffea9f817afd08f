"""The Redis cache against a real redis-server: Node qdone's key layout for shared
queue checks, wake-ups, and fail-soft behaviour when Redis is away or not Redis."""

from __future__ import annotations

import json
import logging
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from qdone.cache import Cache, open_cache
from qdone.errors import ConfigError, ExitCode

from ..redis_server import RedisServer

URL = "https://sqs.us-east-1.amazonaws.com/123456789012/qdone_q1"
COUNTS = {
    "ApproximateNumberOfMessages": "3",
    "ApproximateNumberOfMessagesNotVisible": "0",
    "ApproximateNumberOfMessagesDelayed": "0",
}


class Clock:
    """Time that moves only when the test says so (backoff without sleeping)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def cache(redis_uri: str, cache_prefix: str) -> Iterator[Cache]:
    with open_cache(redis_uri, cache_prefix) as c:
        yield c


@pytest.fixture
def raw(redis_uri: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_uri, decode_responses=True)
    yield client
    client.close()


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "qdone.cache" and r.levelno == logging.WARNING
    ]


# -- the URI ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "why"),
    [
        ("localhost:6379", "is not a Redis URI"),
        ("http://localhost:6379", "is not a Redis URI"),
        ("6379", "has no scheme"),
        ("redis://", "names no host"),
        ("redis://localhost:port/0", "port that is not a number"),
        ("redis://localhost:99999", "port that is not a number"),
        ("redis://localhost:0", "port that is not a number"),
        ("redis://localhost:6379/zero", "database 'zero'"),
        ("unix://", "names no socket path"),
    ],
)
def test_malformed_uri_is_one_clear_line(uri: str, why: str) -> None:
    with pytest.raises(ConfigError) as info:
        open_cache(uri)
    message = str(info.value)
    assert why in message
    assert "\n" not in message
    assert "expected redis://" in message
    assert info.value.exit_code == ExitCode.USAGE


def test_uri_forms_accepted_without_connecting() -> None:
    for uri in (
        "redis://127.0.0.1:1/0",
        "redis://:pw@127.0.0.1:1",
        "rediss://127.0.0.1:1/2",
        "unix:///tmp/nothing-here.sock",
    ):
        open_cache(uri).close()


def test_password_never_shown(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ConfigError) as info:
        open_cache("redis://:hunter2@localhost:6379/x")
    assert "hunter2" not in str(info.value)
    with open_cache(f"redis://:hunter2@127.0.0.1:{_closed_port()}/0") as c:
        c.ping()
    assert warnings(caplog) and all("hunter2" not in w for w in warnings(caplog))


def test_without_redis_py_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(ConfigError, match=r"pip install 'qdone\[redis\]'") as info:
        open_cache("redis://127.0.0.1:6379/0")
    assert info.value.exit_code == ExitCode.USAGE


# -- shared queue checks: Node qdone's layout --------------------------------------


def test_counts_round_trip_in_node_layout(
    cache: Cache, raw: redis.Redis, cache_prefix: str
) -> None:
    assert cache.get_counts([URL]) == {}
    assert cache.put_counts(URL, COUNTS, name="q1")
    key = f"{cache_prefix}cheap-idle-check:{URL}"
    stored = json.loads(raw.get(key) or "null")
    assert stored == {**COUNTS, "idle": False, "exists": True, "queue": "q1"}
    assert 0 < raw.ttl(key) <= 10
    assert cache.get_counts([URL, URL + "x"]) == {URL: COUNTS}


def test_idle_verdict_for_node(cache: Cache, raw: redis.Redis, cache_prefix: str) -> None:
    idle = dict.fromkeys(COUNTS, "0")
    cache.put_counts(URL, idle)
    stored = json.loads(raw.get(f"{cache_prefix}cheap-idle-check:{URL}") or "null")
    assert stored["idle"] is True
    assert "queue" not in stored


def test_reads_what_node_qdone_writes(cache: Cache, raw: redis.Redis, cache_prefix: str) -> None:
    # Node qdone's cheapIdleCheck stores the Attributes object plus queue/idle/exists.
    node_value = {**COUNTS, "queue": "q1", "idle": False, "exists": True}
    raw.set(f"{cache_prefix}cheap-idle-check:{URL}", json.dumps(node_value), ex=10)
    raw.set(f"{cache_prefix}cheap-idle-check:{URL}/bad", "not json", ex=10)
    assert cache.get_counts([URL, URL + "/bad"]) == {URL: COUNTS}


def test_ttl_setting(redis_uri: str, raw: redis.Redis, cache_prefix: str) -> None:
    with open_cache(redis_uri, cache_prefix, ttl=300) as c:
        c.put_counts(URL, COUNTS)
    assert 10 < raw.ttl(f"{cache_prefix}cheap-idle-check:{URL}") <= 300
    with pytest.raises(ConfigError, match="at least 1"):
        open_cache(redis_uri, cache_prefix, ttl=0)


# -- wake-ups -------------------------------------------------------------------------


def test_notify_wakes_a_subscriber(cache: Cache) -> None:
    wakeups = cache.subscribe()
    assert cache.notify(["qdone_a", "qdone_b", "qdone_a"])
    assert wakeups.wakeups(10) == ["qdone_a", "qdone_b"]
    assert wakeups.wakeups(0.1) == []


def test_notify_is_one_publish_per_queue(redis_server: RedisServer, cache_prefix: str) -> None:
    stats = redis.Redis.from_url(redis_server.uri, decode_responses=True)

    def publishes() -> int:
        return int(stats.info("commandstats").get("cmdstat_publish", {}).get("calls", 0))

    with open_cache(redis_server.uri, cache_prefix) as c:
        before = publishes()
        c.notify(["qdone_a"] * 50 + ["qdone_b"] * 50)
        assert publishes() - before == 2
    stats.close()


def test_other_prefixes_do_not_wake(redis_uri: str, cache: Cache) -> None:
    wakeups = cache.subscribe()
    with open_cache(redis_uri, "elsewhere:") as other:
        other.notify(["qdone_a"])
    assert wakeups.wakeups(0.3) == []


def test_close_ends_a_waiting_subscriber(cache: Cache) -> None:
    wakeups = cache.subscribe()
    got: list[list[str]] = []
    reader = threading.Thread(target=lambda: got.append(wakeups.wakeups(60)))
    reader.start()
    wakeups.close()
    reader.join(10)
    assert not reader.is_alive()
    assert got == [[]]


# -- fail-soft --------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _everything_answers_nothing(c: Cache) -> None:
    assert c.get_counts([URL]) == {}
    assert c.put_counts(URL, COUNTS) is False
    assert c.notify(["qdone_a"]) is False
    assert c.ping() is False


def test_unreachable_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    with open_cache(f"redis://127.0.0.1:{_closed_port()}/0", timeout=0.5) as c:
        for _ in range(3):
            _everything_answers_nothing(c)
        assert c.subscribe().wakeups(0.1) == []
    (warning,) = warnings(caplog)
    assert "is unreachable" in warning
    assert "Connection refused" in warning
    assert "going on without it" in warning


def test_password_protected_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, redis_server: RedisServer
) -> None:
    locked = RedisServer(redis_server.program, tmp_path, password="s3cret")
    locked.start()
    try:
        with open_cache(f"redis://127.0.0.1:{locked.port}/0") as c:
            _everything_answers_nothing(c)
            _everything_answers_nothing(c)
        (warning,) = warnings(caplog)
        assert "needs a password" in warning
        with open_cache(locked.uri) as c:
            assert c.put_counts(URL, COUNTS)
    finally:
        locked.kill()


class _FakeServer:
    """A TCP port that is not Redis: it says nothing, or answers like a web server."""

    def __init__(self, reply: bytes | None) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = int(self.sock.getsockname()[1])
        self.reply = reply
        self.held: list[socket.socket] = []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)
            if self.reply is not None:
                conn.recv(4096)
                conn.sendall(self.reply)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (None, "did not answer within 0.3 s (is it a Redis server?)"),
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", "does not answer as Redis does"),
    ],
)
def test_not_redis_one_warning(
    reply: bytes | None, expected: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = _FakeServer(reply)
    try:
        with open_cache(f"redis://127.0.0.1:{server.port}/0", timeout=0.3) as c:
            _everything_answers_nothing(c)
            _everything_answers_nothing(c)
    finally:
        server.close()
    (warning,) = warnings(caplog)
    assert expected in warning


def test_redis_killed_mid_use_then_back(
    redis_server: RedisServer, cache_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    caplog.set_level(logging.INFO, logger="qdone.cache")
    with open_cache(redis_server.uri, cache_prefix, clock=clock) as c:
        wakeups = c.subscribe()
        assert c.put_counts(URL, COUNTS)
        redis_server.kill()
        for _ in range(3):
            _everything_answers_nothing(c)
            assert wakeups.wakeups(0.05) == []
        assert len(warnings(caplog)) == 1
        redis_server.start()
        # Within the backoff period nothing tries Redis, even now that it is back.
        assert c.put_counts(URL, COUNTS) is False
        clock.now += 60
        assert c.put_counts(URL, COUNTS)
        assert c.get_counts([URL]) == {URL: COUNTS}
        assert wakeups.wakeups(0.05) == []  # subscribes again
        assert c.notify(["qdone_a"])
        assert wakeups.wakeups(10) == ["qdone_a"]
    assert len(warnings(caplog)) == 1
    assert any("is back" in r.getMessage() for r in caplog.records)


def test_backoff_grows_while_down(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    with open_cache(f"redis://127.0.0.1:{_closed_port()}/0", clock=clock) as c:
        c.ping()
        waits = []
        for _ in range(8):
            retry_at = c.health.retry_at
            waits.append(retry_at - clock.now)
            clock.now = retry_at
            c.ping()
    assert waits == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert len(warnings(caplog)) == 1


def test_a_warning_that_cannot_be_written_changes_nothing() -> None:
    """Warnings go where the command's output goes; when that stream is gone (a
    command that ran earlier in this process), the cache still answers."""
    import io

    from qdone.log import Output
    from qdone.log_forward import forward_warnings

    gone = io.StringIO()
    gone.close()
    undo = forward_warnings("qdone.cache", Output(verbose=False, json_lines=True, out=gone))
    try:
        with open_cache(f"redis://127.0.0.1:{_closed_port()}/0") as c:
            assert c.get_counts([URL]) == {}
    finally:
        undo()
    assert not logging.getLogger("qdone.cache").handlers


def test_cache_for_forwards_warnings_only_while_it_runs() -> None:
    import io

    from qdone.cli.common import cache_for
    from qdone.config import Options
    from qdone.log import Output

    err = io.StringIO()
    output = Output(verbose=True, json_lines=False, err=err, colour=False)
    options = Options(cache_uri=f"redis://127.0.0.1:{_closed_port()}/0")
    with cache_for(options, output) as c:
        assert c is not None
        c.ping()
    assert "is unreachable" in err.getvalue()
    assert not logging.getLogger("qdone.cache").handlers
