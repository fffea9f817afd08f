"""Warnings of a library's logger (the cache's) shown as ``Output`` warning lines.

Apart from ``log.py`` so that the commands that forward none never import
``logging``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .log import Output

__all__ = ["forward_warnings"]


class _ToOutput(logging.Handler):
    def __init__(self, output: Output) -> None:
        super().__init__(logging.WARNING)
        self.output = output

    def emit(self, record: logging.LogRecord) -> None:
        # A warning that cannot be written (its stream closed or full) is dropped:
        # whatever logged it goes on, and there is nowhere left to say it.
        try:
            self.output.warn(record.getMessage())
        except Exception:
            return


def forward_warnings(logger: str, output: Output) -> Callable[[], None]:
    """Show the warnings of ``logger`` (e.g. ``qdone.cache``) as ``output.warn`` lines,
    instead of any earlier output's; returns what undoes it (call it when the
    command ends, so that a later one in this process does not write to this
    output)."""
    log = logging.getLogger(logger)
    for handler in [h for h in log.handlers if isinstance(h, _ToOutput)]:
        log.removeHandler(handler)
    handler = _ToOutput(output)
    log.addHandler(handler)
    log.propagate = False

    def undo() -> None:
        log.removeHandler(handler)
        if not any(isinstance(h, _ToOutput) for h in log.handlers):
            log.propagate = True

    return undo
