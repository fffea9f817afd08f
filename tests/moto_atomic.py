"""moto's SQS backend, made atomic per call as SQS is, for the test session's server.

Stock moto 5 runs each request on its own thread and lets them interleave inside
``receive_message``: a message's receive count is raised before its new visibility
is set, so a second receive running at that moment takes it for a message
received before and visible again. With a redrive policy (qdone's layout,
``maxReceiveCount`` 1) that receive moves it to the dead-letter queue while the
first one returns it to its worker (the job runs, and its message is also in the
failed queue); when two receives both move it, the second fails with
``ValueError: list.remove(x): x not in list`` and an HTTP 500, and the messages it
had already marked received are lost to every worker until their visibility
timeout ends, then moved to the dead-letter queue unrun. Two workers draining
2,000 messages hit this a dozen times a run (``bench/bench_dedup_faults.py``).

SQS itself does not do this, and qdone cannot tell it from a real failure, so the
suite's server runs the calls that change messages one at a time: receive (each
pass over the queue; a long poll waits between passes without the lock, as stock
moto waits), send, delete, change visibility, purge. Replies and timing
otherwise stay stock moto's.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["install", "installed"]

_LOCK = threading.RLock()
_MUTATORS = (
    "send_message",
    "send_message_batch",
    "delete_message",
    "change_message_visibility",
    "purge_queue",
)
_done = False


def installed() -> bool:
    return _done


def install() -> None:
    """Patch moto's ``SQSBackend`` in this process (once; later calls do nothing)."""
    global _done
    if _done:
        return
    from moto.sqs.models import SQSBackend

    for name in _MUTATORS:
        setattr(SQSBackend, name, _serialized(getattr(SQSBackend, name)))
    SQSBackend.receive_message = _receive(SQSBackend.receive_message)  # type: ignore[method-assign]
    _done = True


def _serialized(stock: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(stock)
    def call(*args: Any, **kwargs: Any) -> Any:
        with _LOCK:
            return stock(*args, **kwargs)

    return call


def _receive(stock: Callable[..., Any]) -> Callable[..., Any]:
    """Stock moto's receive without its wait, under the lock; between empty passes,
    moto's own wait for a message to arrive (at most a second), without the lock."""

    @functools.wraps(stock)
    def receive_message(
        self: Any,
        queue_name: str,
        count: int,
        wait_seconds_timeout: int,
        visibility_timeout: int,
        message_attribute_names: list[str] | None = None,
    ) -> Any:
        end = time.time() + (wait_seconds_timeout or 0)
        while True:
            with _LOCK:
                result = stock(
                    self, queue_name, count, 0, visibility_timeout, message_attribute_names
                )
            left = end - time.time()
            if result or left <= 0:
                return result
            self.get_queue(queue_name).wait_for_messages(min(1.0, left))

    return receive_message
