"""Checking a ``--cache-uri`` before anything connects, and showing it without its
password."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from ..errors import ConfigError

__all__ = ["check_uri", "masked"]

_FORMS = "redis://[:PASSWORD@]HOST[:PORT][/DB], rediss://… (TLS) or unix:///path/to/socket"


def _bad(uri: str, why: str) -> ConfigError:
    return ConfigError(f"--cache-uri {masked(uri)!r} {why}; expected {_FORMS}")


def check_uri(uri: str) -> str:
    """``uri`` if redis-py can connect with it; a ConfigError naming what is wrong."""
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        raise _bad(uri, "has a port that is not a number from 1 to 65535") from None
    scheme = parts.scheme.lower()
    if scheme in ("redis", "rediss"):
        if not parts.hostname:
            raise _bad(uri, "names no host")
        if port == 0:
            raise _bad(uri, "has a port that is not a number from 1 to 65535")
        db = parts.path.strip("/")
        if db and not db.isdigit():
            raise _bad(uri, f"names database {db!r}, which is not a number")
    elif scheme == "unix":
        if not parts.path:
            raise _bad(uri, "names no socket path")
    else:
        raise _bad(uri, "is not a Redis URI" if scheme else "has no scheme")
    return uri


def masked(uri: str) -> str:
    """``uri`` with its password replaced by ``***``, for messages and logs."""
    try:
        parts = urlsplit(uri)
        password = parts.password
    except ValueError:
        return uri
    if not password:
        return uri
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
