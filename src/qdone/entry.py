"""The ``qdone`` console script: answers ``qdone --version`` (or ``-V``) alone before
loading the command line, which every other use loads (click and one command).

The line is click's, as ``qdone --broker x --version`` prints it through click."""

from __future__ import annotations

import sys

from . import __version__

__all__ = ["main"]

_VERSION_ALONE = (["--version"], ["-V"])


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``qdone`` console script and of ``python -m qdone``."""
    if (sys.argv[1:] if argv is None else argv) in _VERSION_ALONE:
        try:
            sys.stdout.write(f"qdone, version {__version__}\n")
            sys.stdout.flush()
        except OSError:  # the reader went away: as the command line exits then
            sys.exit(1)
        sys.exit(0)
    from .cli import main as run

    run(argv)
