"""Queue brokers. ``open_broker`` picks one from a URL and imports it lazily,
so that the SQLite path never loads the AWS SDK."""

from __future__ import annotations

from collections.abc import Callable

from ..config import Options, default_store_path
from ..errors import ConfigError
from .base import Broker

__all__ = ["Broker", "open_broker", "parse_broker_url"]


def parse_broker_url(url: str) -> tuple[str, str | None]:
    """``("sqlite", path)`` or ``("sqs", None)``; raises ConfigError otherwise."""
    if url in ("", "sqlite"):
        return "sqlite", default_store_path()
    if url.startswith("sqlite://"):
        rest = url[len("sqlite://") :]
        if not rest.startswith("/") or rest == "/":
            raise ConfigError(
                f"broker URL {url!r} has no path; write sqlite:///path/to/file.db "
                "(three slashes before an absolute path)"
            )
        # sqlite:////abs/path (SQLAlchemy's spelling) is the same file.
        return "sqlite", "/" + rest.lstrip("/")
    if url == "sqs":
        return "sqs", None
    raise ConfigError(
        f"unknown broker {url!r}; use 'sqlite' (the default), 'sqlite:///path/to/file.db' or 'sqs'"
    )


def open_broker(
    options: Options, clock: Callable[[], float] | None = None, *, reads_only: bool = False
) -> Broker:
    """The broker that ``options.broker`` names. ``reads_only``: the command only
    reads, and may look at a SQLite store it cannot write."""
    kind, path = parse_broker_url(options.broker)
    if kind == "sqlite":
        given = [
            flag
            for flag, value in (
                ("--region", options.region),
                ("--endpoint-url", options.endpoint_url),
            )
            if value is not None
        ]
        if given:
            raise ConfigError(
                f"{' and '.join(given)} {'apply' if len(given) > 1 else 'applies'} only to "
                "--broker sqs; "
                f"the broker in use is the SQLite store at {path}"
            )
        from .sqlite import SqliteBroker

        assert path is not None
        return SqliteBroker(path, clock=clock, defer=True, reads_only=reads_only)
    from .sqs import SqsBroker

    return SqsBroker(region=options.region, endpoint_url=options.endpoint_url)
