"""Warnings of a library's logger (the cache's) shown as ``Output`` warning lines.

Apart from ``log.py`` so that the commands that forward none never import
``logging``.
"""

from __future__ import annotations

import logging

from .log import Output

__all__ = ["forward_warnings"]


class _ToOutput(logging.Handler):
    def __init__(self, output: Output) -> None:
        super().__init__(logging.WARNING)
        self.output = output

    def emit(self, record: logging.LogRecord) -> None:
        self.output.warn(record.getMessage())


def forward_warnings(logger: str, output: Output) -> None:
    """Show the warnings of ``logger`` (e.g. ``qdone.cache``) as ``output.warn`` lines,
    instead of any earlier output's."""
    log = logging.getLogger(logger)
    for handler in [h for h in log.handlers if isinstance(h, _ToOutput)]:
        log.removeHandler(handler)
    log.addHandler(_ToOutput(output))
    log.propagate = False
