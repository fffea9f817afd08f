"""moto's SQS server without its per-call scan of every message: for the benchmarks,
so that they measure qdone and not the emulator. Never used by the tests' server.

Stock moto 5 builds a queue's whole attribute dict (``Queue.attributes``), whose
three ``ApproximateNumberOfMessages*`` counts walk every message of the queue, each
time it reads one setting: on every send (``ContentBasedDeduplication``), on every
message a receive returns (``MessageRetentionPeriod``, through
``is_message_valid_based_on_retention_period``), on FIFO checks. A queue n deep
costs O(n) per message sent or received, so a deep queue's benchmark times moto.

The patch: the counts are computed only while a GetQueueAttributes request is being
answered, the one call whose reply holds them; every other reader of
``Queue.attributes`` gets the same dict without the three counts, which none of them
reads. Replies are unchanged (``tests/test_moto_fast.py`` compares them with stock
moto's for the calls qdone makes).

Run:  python bench/moto_fast.py [moto_server's arguments]  (``_util.moto_server``)
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["COUNTS", "patch"]

COUNTS = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesDelayed",
    "ApproximateNumberOfMessagesNotVisible",
)
_COUNT_PROPERTIES = (
    "approximate_number_of_messages",
    "approximate_number_of_messages_delayed",
    "approximate_number_of_messages_not_visible",
)
# Per server thread: how deep in GetQueueAttributes requests, and whether the counts
# are being left out of the attribute dict being built.
_state = threading.local()


def _answering() -> bool:
    return bool(getattr(_state, "answering", 0))


def _count(stock: property) -> property:
    """A count that is 0 while ``attributes`` builds a dict without counts (the key is
    then dropped), and stock moto's count otherwise."""

    def fget(queue: Any) -> Any:
        if getattr(_state, "skip_counts", False):
            return 0
        return stock.fget(queue)  # type: ignore[misc]

    return property(fget)


def _attributes(stock: property) -> property:
    def fget(queue: Any) -> Any:
        if _answering():
            return stock.fget(queue)  # type: ignore[misc]
        _state.skip_counts = True
        try:
            result = stock.fget(queue)  # type: ignore[misc]
        finally:
            _state.skip_counts = False
        for key in COUNTS:
            result.pop(key, None)
        return result

    return property(fget)


def _answer(stock: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def get_queue_attributes(self: Any) -> Any:
        _state.answering = getattr(_state, "answering", 0) + 1
        try:
            return stock(self)
        finally:
            _state.answering -= 1

    return get_queue_attributes


def patch() -> None:
    """Patch moto's SQS models in this process (once)."""
    from moto.sqs import models, responses

    queue = models.Queue
    if getattr(queue, "_qdone_bench_patched", False):
        return
    for name in _COUNT_PROPERTIES:
        setattr(queue, name, _count(getattr(queue, name)))
    queue.attributes = _attributes(queue.__dict__["attributes"])  # type: ignore[method-assign]
    handler = responses.SQSResponse
    handler.get_queue_attributes = _answer(handler.get_queue_attributes)  # type: ignore[method-assign]
    queue._qdone_bench_patched = True  # type: ignore[attr-defined]


def main() -> None:
    patch()
    from moto.server import main as serve

    serve(sys.argv[1:])


if __name__ == "__main__":
    main()
