"""qdone: a command-line job queue on Amazon SQS or an embedded SQLite store."""

from __future__ import annotations

__version__ = "2.0.0"
__all__ = ["__version__"]
