"""Session fixtures: a moto server on loopback for SQS, a real redis-server on
loopback for the Redis cache, a scrubbed environment, and a ``broker`` fixture
parametrised over both brokers."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from .redis_server import RedisServer, redis_server_path
from .sites import Site

if TYPE_CHECKING:
    from qdone.broker.base import Broker

# Read before any test runs: the autouse fixture below removes QDONE_* variables.
# CI sets it, so that a missing redis-server fails the Redis tests instead of skipping them.
REQUIRE_REDIS = os.environ.get("QDONE_REQUIRE_REDIS") == "1"

# Nothing a test runs may reach AWS: fake credentials, and no profile or config.
_SCRUB = (
    "AWS_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_SQS",
    "AWS_ENDPOINT_URL_CLOUDWATCH",
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("QDONE_") or name in _SCRUB:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    # The default store lives under XDG_DATA_HOME: keep it inside the test's temp dir.
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """URL of a moto server (SQS, CloudWatch) on loopback, for the whole session; its
    SQS calls atomic, as SQS's are (``tests/moto_atomic.py``)."""
    from moto.server import ThreadedMotoServer

    from .moto_atomic import install

    install()

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite://{tmp_path / 'store.db'}"


@pytest.fixture
def sqlite_broker(tmp_path: Path) -> Iterator[Broker]:
    from qdone.broker.sqlite import SqliteBroker

    broker = SqliteBroker(tmp_path / "store.db")
    yield broker
    broker.close()


@pytest.fixture
def sqs_broker(moto_endpoint: str) -> Iterator[Broker]:
    from qdone.broker.sqs import SqsBroker

    broker = SqsBroker(region="us-east-1", endpoint_url=moto_endpoint)
    yield broker
    broker.close()


@pytest.fixture(params=["sqlite", "sqs"])
def broker(request: pytest.FixtureRequest) -> Broker:
    """Each test that takes ``broker`` runs once per broker."""
    result: Broker = request.getfixturevalue(f"{request.param}_broker")
    return result


@pytest.fixture
def prefix() -> str:
    """A queue-name prefix unique to this test, so tests never share queues on moto."""
    return f"t{os.urandom(4).hex()}_"


@pytest.fixture(params=["sqlite", "sqs"])
def site(request: pytest.FixtureRequest, tmp_path: Path, prefix: str) -> Iterator[Site]:
    """Each test that takes ``site`` runs once per broker."""
    env = {**os.environ, "QDONE_PREFIX": prefix}
    broker: Broker
    if request.param == "sqlite":
        from qdone.broker.sqlite import SqliteBroker

        path = tmp_path / "site.db"
        env["QDONE_BROKER"] = f"sqlite://{path}"
        broker = SqliteBroker(path)
    else:
        from qdone.broker.sqs import SqsBroker

        endpoint = request.getfixturevalue("moto_endpoint")
        env.update(QDONE_BROKER="sqs", QDONE_ENDPOINT_URL=endpoint)
        broker = SqsBroker(region="us-east-1", endpoint_url=endpoint)
    try:
        yield Site(request.param, env, broker, prefix)
    finally:
        broker.close()


def _redis_program() -> str:
    program = redis_server_path()
    if program is None:
        reason = "redis-server is not installed (Debian: apt-get install redis-server)"
        if REQUIRE_REDIS:
            pytest.fail(f"{reason}, and QDONE_REQUIRE_REDIS=1", pytrace=False)
        pytest.skip(reason)
    return program


@pytest.fixture(scope="session")
def redis_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``redis://127.0.0.1:PORT/0`` of a real redis-server, for the whole session.

    Tests share it: give each its own key prefix (``cache_prefix``). Skipped when
    redis-server is missing, unless QDONE_REQUIRE_REDIS=1 (then they fail)."""
    server = RedisServer(_redis_program(), tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server.uri
    finally:
        server.kill()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, running; the test may ``kill()`` and
    ``start()`` it again (same port)."""
    server = RedisServer(_redis_program(), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def cache_prefix() -> str:
    """A cache key prefix unique to this test, so tests never share keys in Redis."""
    return f"t{os.urandom(4).hex()}:"
