"""The checks and conversions of ``Client``'s keyword options (the command's
options, with its messages), and the process generation that tells a client it
runs in a child after ``fork``."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from ..config import QueueOptions
from ..errors import UsageError

if TYPE_CHECKING:
    from ..broker.base import Broker
    from ..dedup import DedupSettings

__all__ = ["INHERITED", "ForkState", "dedup_settings", "names", "queue_options", "whole"]


class ForkState:
    """Bumped in a child process after ``fork``: a client then opens its broker anew."""

    generation = 0
    lock = threading.Lock()


def _after_fork_in_child() -> None:
    ForkState.generation += 1
    ForkState.lock = threading.Lock()  # another thread may have held the parent's


os.register_at_fork(after_in_child=_after_fork_in_child)

#: Brokers a child inherited from its parent: neither used nor closed there (SQLite
#: forbids using a connection across fork), only kept from being collected.
INHERITED: list[Broker] = []


def whole(option: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise UsageError(f"{option} must be a whole number, not {value!r}")


def names(what: str, given: str | Iterable[str]) -> tuple[str, ...]:
    names = (given,) if isinstance(given, str) else tuple(given)
    if not names:
        raise UsageError(f"no {what} given")
    for name in names:
        if not isinstance(name, str):
            raise UsageError(f"{what} must be strings, not {name!r}")
    return names


def dedup_settings(
    external_dedup: bool,
    explicit_id: str | None,
    period: int,
    id_per_message: bool,
    stats: bool,
    on_error: str,
) -> DedupSettings | None:
    """The settings of ``--external-dedup``; None without it."""
    whole("--dedup-period", period)
    if id_per_message and explicit_id:
        raise UsageError("use either --deduplication-id or --dedup-id-per-message, not both")
    if not external_dedup:
        return None
    if not 1 <= period <= 1_209_600:
        raise UsageError(f"--dedup-period must be 1 to 1209600 seconds, not {period}")
    if on_error not in ("send", "fail"):
        raise UsageError(f"--dedup-on-error must be 'send' or 'fail', not {on_error!r}")
    from ..dedup import DedupSettings

    return DedupSettings(
        period=period,
        explicit_id=explicit_id,
        id_per_message=id_per_message,
        stats=stats,
        on_error="send" if on_error == "send" else "fail",
    )


def queue_options(
    *,
    fifo: bool,
    retries: int,
    dlq: bool,
    dlq_after: int,
    fail_delay: int,
    message_retention_period: int,
    tags: Mapping[str, str] | None,
) -> QueueOptions:
    for option, value in (
        ("--retries", retries),
        ("--dlq-after", dlq_after),
        ("--fail-delay", fail_delay),
        ("--message-retention-period", message_retention_period),
    ):
        whole(option, value)
    return QueueOptions(
        fifo=fifo,
        message_retention_period=message_retention_period,
        fail_delay=fail_delay,
        dlq=dlq,
        dlq_after=dlq_after,
        retries=retries,
        tags=dict(tags or {}),
    )
