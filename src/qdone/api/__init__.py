"""qdone's public Python API: ``Client`` and what its methods return.

``import qdone`` gives these names and the rest of the public API (events, the
handler's ``Job``, counts, errors): see ``qdone.__all__``."""

from __future__ import annotations

from .client import Client
from .results import EnqueueBatchResult, NotEnqueued

__all__ = ["Client", "EnqueueBatchResult", "NotEnqueued"]
