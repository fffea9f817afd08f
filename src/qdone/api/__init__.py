"""qdone's public Python API: ``Client`` and what its methods return.

``import qdone`` gives these names and the rest of the public API (events, the
handler's ``Job``, counts, errors): see ``qdone.__all__``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .client import Client

if TYPE_CHECKING:
    from .results import EnqueueBatchResult, NotEnqueued

__all__ = ["Client", "EnqueueBatchResult", "NotEnqueued"]


def __getattr__(name: str) -> Any:
    # enqueue-batch's results, loaded on first use: ``qdone enqueue`` never needs them.
    if name not in ("EnqueueBatchResult", "NotEnqueued"):
        raise AttributeError(f"module 'qdone.api' has no attribute {name!r}")
    from . import results

    return getattr(results, name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
