"""``--cache-uri`` on the command line: enqueues wake the fleet's workers, and a
cache that is malformed, missing or down is one clear line."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from qdone.cache import Cache, open_cache
from qdone.errors import ExitCode

from ..cli_helpers import run_qdone
from ..redis_server import RedisServer


@pytest.fixture
def cache(redis_uri: str, cache_prefix: str) -> Iterator[Cache]:
    with open_cache(redis_uri, cache_prefix) as c:
        yield c


def qdone(
    store: Path, prefix: str, *args: str, input: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    return run_qdone("--broker", f"sqlite://{store}", "--prefix", prefix, *args, input=input)


def events(result: subprocess.CompletedProcess[str], name: str) -> list[dict[str, object]]:
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return [r for r in records if r["event"] == name]


def test_enqueue_wakes_subscribers(
    tmp_path: Path, prefix: str, redis_uri: str, cache_prefix: str, cache: Cache
) -> None:
    wakeups = cache.subscribe()
    result = qdone(
        tmp_path / "s.db", prefix, "enqueue", "--cache-uri", redis_uri,
        "--cache-prefix", cache_prefix, "jobs", "true",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert wakeups.wakeups(10) == [f"{prefix}jobs"]


def test_cache_uri_from_the_environment(
    tmp_path: Path, prefix: str, redis_uri: str, cache_prefix: str, cache: Cache
) -> None:
    wakeups = cache.subscribe()
    result = run_qdone(
        "--broker", f"sqlite://{tmp_path / 's.db'}", "--prefix", prefix,
        "enqueue", "jobs", "true",
        env={"QDONE_CACHE_URI": redis_uri, "QDONE_CACHE_PREFIX": cache_prefix},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert wakeups.wakeups(10) == [f"{prefix}jobs"]


def test_enqueue_batch_one_publish_per_queue(
    tmp_path: Path, prefix: str, redis_server: RedisServer, cache_prefix: str
) -> None:
    stats = redis.Redis.from_url(redis_server.uri, decode_responses=True)
    lines = "".join(f"{'a' if n % 3 else 'b'} echo {n}\n" for n in range(45)).encode()
    with open_cache(redis_server.uri, cache_prefix) as c:
        wakeups = c.subscribe()
        result = qdone(
            tmp_path / "s.db", prefix, "enqueue-batch", "--cache-uri", redis_server.uri,
            "--cache-prefix", cache_prefix, "-", input=lines,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert sorted(wakeups.wakeups(10) + wakeups.wakeups(0.5)) == [f"{prefix}a", f"{prefix}b"]
    publish = stats.info("commandstats")["cmdstat_publish"]
    assert publish["calls"] == 2
    stats.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_redis_down_enqueue_goes_on_with_one_warning(tmp_path: Path, prefix: str) -> None:
    uri = f"redis://127.0.0.1:{_closed_port()}/0"
    lines = "".join(f"q{n % 4} echo {n}\n" for n in range(40)).encode()
    store = tmp_path / "s.db"
    result = qdone(store, prefix, "enqueue-batch", "--cache-uri", uri, "-", input=lines)
    assert result.returncode == 0, result.stderr
    (warning,) = events(result, "WARNING")
    assert "is unreachable" in str(warning["message"])
    assert events(result, "BATCH_ENQUEUED")[0]["enqueued"] == 40
    # On a terminal-less run with -v, the same warning is one human line on stderr.
    result = qdone(store, prefix, "-v", "enqueue", "--cache-uri", uri, "q0", "true")
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("Warning:")]
    assert len(warnings) == 1
    assert "going on without it" in warnings[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--cache-uri", "localhost:6379"), "is not a Redis URI"),
        (("--cache-uri", "redis://localhost:port"), "port that is not a number"),
        (("--cache-ttl-seconds", "0"), "--cache-ttl-seconds"),
    ],
)
def test_bad_cache_options_one_line_exit_2(
    tmp_path: Path, prefix: str, args: tuple[str, ...], expected: str
) -> None:
    store = tmp_path / "s.db"
    result = qdone(store, prefix, "enqueue", *args, "jobs", "true")
    assert result.returncode == ExitCode.USAGE
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert lines[0].startswith("qdone: error:")
    assert not store.exists()  # refused before the broker was opened


def test_without_redis_py_one_line_exit_2(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "sys.modules['redis'] = None\n"
        "from qdone.cli import main\n"
        f"main(['enqueue', '--broker', 'sqlite://{tmp_path}/s.db', "
        "'--cache-uri', 'redis://127.0.0.1:6379/0', 'q', 'true'])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == ExitCode.USAGE
    assert result.stderr.strip() == (
        "qdone: error: --cache-uri needs the Python package redis; install it with: "
        "pip install 'qdone[redis]'"
    )
