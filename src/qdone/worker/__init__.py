"""The worker: takes commands off queues and runs them.

``loop`` owns polling and the worker's life (start, drain, stop, kill);
``runner`` runs received messages as jobs; ``acker`` batches deletes and
visibility changes; ``policy`` holds job slots and the retry backoff;
``queues`` resolves names and wildcards to queues; ``events`` defines the
dataclasses the worker reports through ``on_event``.
"""

from __future__ import annotations

from .loop import Worker

__all__ = ["Worker"]
