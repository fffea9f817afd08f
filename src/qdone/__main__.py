"""``python -m qdone``: the same as the ``qdone`` command."""

from __future__ import annotations

from .entry import main

main()
