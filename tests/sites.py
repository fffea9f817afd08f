"""A ``site`` for black-box worker tests: the environment that points the ``qdone``
command at one broker (a SQLite store in the test's temp dir, or the session's
moto server under a prefix of the test's own), and a broker object to look at
the queues directly. The ``site`` fixture, in ``conftest.py``, runs a test once
per broker."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

from qdone.broker.base import Broker, Receipt

QDONE = shutil.which("qdone") or "qdone"


@dataclass
class Site:
    """One broker, as the command line and the tests see it."""

    kind: str  # "sqlite" or "sqs"
    env: dict[str, str]
    broker: Broker
    prefix: str

    @property
    def wait(self) -> str:
        """A --wait-time that drains: SQS needs a long poll, SQLite none."""
        return "1" if self.kind == "sqs" else "0"

    def qdone(self, *args: str, timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess[str]:
        kw.setdefault("stdout", subprocess.PIPE)
        return subprocess.run(
            [QDONE, *args],
            env=self.env,
            stderr=subprocess.PIPE,
            text=True,
            timeout=timeout,
            check=False,
            **kw,
        )

    def enqueue(self, queue: str, command: str, *extra: str) -> None:
        result = self.qdone("enqueue", *extra, queue, command)
        assert result.returncode == 0, result.stderr

    def enqueue_many(self, queue: str, commands: list[str], *extra: str) -> None:
        lines = "".join(f"{queue} {c}\n" for c in commands)
        result = self.qdone("enqueue-batch", *extra, "-", input=lines)
        assert result.returncode == 0, result.stderr

    def full(self, name: str) -> str:
        return self.prefix + name

    def counts(self, name: str) -> tuple[int, int]:
        """(visible, in flight) of queue ``name`` (without the prefix)."""
        a = self.broker.get_queue_attributes(
            self.broker.get_queue_url(self.full(name)),
            ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
        return int(a["ApproximateNumberOfMessages"]), int(
            a["ApproximateNumberOfMessagesNotVisible"]
        )

    def take(self, name: str) -> list[tuple[str, int]]:
        """(body, receive count) of every visible message of ``name``, deleted."""
        url = self.broker.get_queue_url(self.full(name))
        got: list[tuple[str, int]] = []
        while batch := self.broker.receive(url, 10, 60, 0):
            got.extend((m.body, m.receive_count) for m in batch)
            self.broker.delete_batch(url, [Receipt(str(n), m.receipt) for n, m in enumerate(batch)])
        return got
