"""Options shared by every command, with all defaults in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .naming import validate_layout

__all__ = [
    "DEFAULTS",
    "Defaults",
    "Options",
    "QueueOptions",
    "default_store_path",
]


@dataclass(frozen=True)
class Defaults:
    prefix: str = "qdone_"
    fail_suffix: str = "_failed"
    dlq_suffix: str = "_dead"
    dlq_after: int = 3
    region: str = "us-east-1"
    message_retention_period: int = 1_209_600  # 14 days, SQS's maximum
    kill_after: int = 30
    wait_time: int = 20
    retry_delay: int = 10
    idle_for: int = 60
    cache_prefix: str = "qdone:"
    dedup_period: int = 300  # --external-dedup's window, seconds
    cache_ttl_seconds: int = 10


DEFAULTS = Defaults()


def default_store_path() -> str:
    """``$XDG_DATA_HOME/qdone/qdone.db``, else ``~/.local/share/qdone/qdone.db``."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return os.path.join(base, "qdone", "qdone.db")


@dataclass(frozen=True)
class Options:
    """Global options: which broker, and how queue names are spelled."""

    broker: str = "sqlite"  # "sqlite", "sqlite:///path" or "sqs"
    prefix: str = DEFAULTS.prefix
    fail_suffix: str = DEFAULTS.fail_suffix
    dlq_suffix: str = DEFAULTS.dlq_suffix
    region: str | None = None
    endpoint_url: str | None = None
    verbose: bool = False
    cache_uri: str | None = None  # the fleet's Redis (optional accelerator)
    cache_prefix: str = DEFAULTS.cache_prefix
    cache_ttl_seconds: int = DEFAULTS.cache_ttl_seconds

    def __post_init__(self) -> None:
        # Before any queue is made: a suffix that builds a broken layout is bad input.
        validate_layout(self.fail_suffix, self.dlq_suffix)


@dataclass(frozen=True)
class QueueOptions:
    """How qdone creates a queue, its failed queue and (with ``dlq``) its dead queue."""

    fifo: bool = False
    message_retention_period: int = DEFAULTS.message_retention_period
    fail_delay: int = 0
    dlq: bool = False
    dlq_after: int = DEFAULTS.dlq_after
    retries: int = 0
    tags: dict[str, str] = field(default_factory=dict)
