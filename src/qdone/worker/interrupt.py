"""Jobs interrupted by the worker's own shutdown: not failures.

A service manager stopping a service may signal every process in it at once
(systemd's default, ``KillMode=control-group``: SIGTERM to the worker and to every
job). A job that dies of such a signal did nothing wrong, yet on qdone's layout
(``maxReceiveCount`` 1) its message, made visible again, would be moved to the
failed queue on its next receive: the receive that ran it was its one attempt.
Nor did a job that the worker killed itself at its second signal.

So a job that a stop signal (SIGHUP, SIGINT, SIGTERM; or its shell's exit status
128 + one of them) ended while the worker is stopping, and a shell job that the
worker's second signal killed, give their message back *without using an
attempt*: the worker sends a fresh copy of it (same body, attributes and FIFO
group, receive count 0, visible at once, so another worker runs it now), then
deletes the received one. Receive counts cannot be lowered on SQS, and a copy is
the only way to keep a ``maxReceiveCount`` 1 queue safe. Sending before deleting
keeps at-least-once delivery: a worker that dies in between leaves both, and the
job may run twice, never zero times. A job killed at ``--kill-after`` ran too
long: that one is a failure. (A Python handler's thread cannot be killed: it
runs on after a second signal, and its end counts as it would have.)

After a second signal the worker must end within seconds whatever the network
does, so a killed job's copy is waited for ``KILL_GIVE_BACK`` seconds from the
signal at most: a copy not sent by then leaves the message in flight, and it
comes back after its visibility timeout with this attempt used (its copy may
still arrive: then the job runs twice). The same holds for the rest of a FIFO
chain received with the killed job and not yet run.

On a FIFO queue the copy needs a new deduplication id (the old one is within its
5-minute window, and SQS would drop the copy), and it joins the end of its group:
the group's later messages run before it. Where the message has attempts left
(``--retries``), a FIFO message is made visible again instead, which keeps its
place in the group and uses one attempt.

The worker's own signal may reach it just after the job died of the service's,
so a job that died of a stop signal waits up to ``STOP_WAIT`` seconds for the
worker to be stopping before it counts as failed.
"""

from __future__ import annotations

import os
import signal
import threading
import time

from ..broker.base import Broker, Message, SendEntry
from ..job import JobResult
from .queues import QueueRef

__all__ = [
    "KILL_GIVE_BACK",
    "STOP_SIGNALS",
    "STOP_WAIT",
    "killed_by_worker",
    "late",
    "send_back",
    "stopped_by_service",
]

STOP_SIGNALS = frozenset({signal.SIGHUP, signal.SIGINT, signal.SIGTERM})
STOP_WAIT = 5.0  # seconds a job killed by a stop signal waits for the worker's stop
# Seconds from the second signal within which killed jobs' copies must be sent:
# well within the 5 s in which the worker ends, leaving time for the deletes.
KILL_GIVE_BACK = 2.0


def stopped_by_service(result: JobResult, stopping: threading.Event) -> bool:
    """Whether ``result`` is a job ended by a stop signal while the worker stops."""
    if result.timed_out or result.killed or result.error is not None:
        return False
    if result.signal is not None:
        sig = result.signal
    elif result.exit_code is not None and result.exit_code > 128:
        sig = result.exit_code - 128
    else:
        return False
    return sig in STOP_SIGNALS and stopping.wait(STOP_WAIT)


def killed_by_worker(result: JobResult) -> bool:
    """Whether ``result`` is a shell job that the worker's second signal killed (not
    one killed at ``--kill-after``, nor one that ended by itself meanwhile)."""
    return result.killed and not result.timed_out and result.signal == signal.SIGKILL


def keeps_its_place(q: QueueRef, m: Message) -> bool:
    """A FIFO message with attempts left goes back by being made visible again."""
    return q.fifo and q.max_receives is not None and m.receive_count < q.max_receives


def send_back(broker: Broker, q: QueueRef, m: Message, deadline: float | None = None) -> str:
    """Send a fresh copy of ``m`` to its queue (visible at once); its message id.
    With a ``deadline`` (``time.monotonic``), its answer is waited for until then at
    most. Raises ``BrokerError``, or ``TimeoutError`` when no answer came in time
    (the copy may still be sent). The caller deletes ``m`` once this returned."""
    if deadline is None:
        return _send_copy(broker, q, m)
    answer: list[str | BaseException] = []
    done = threading.Event()

    def send() -> None:
        try:
            answer.append(_send_copy(broker, q, m))
        except BaseException as exc:  # handed to the caller
            answer.append(exc)
        finally:
            done.set()

    threading.Thread(target=send, name="qdone-send-back", daemon=True).start()
    if not done.wait(max(0.0, deadline - time.monotonic())):
        raise TimeoutError
    if isinstance(answer[0], BaseException):
        raise answer[0]
    return answer[0]


def _send_copy(broker: Broker, q: QueueRef, m: Message) -> str:
    entry = SendEntry(
        id="0",
        body=m.body,
        group_id=m.group_id,
        dedup_id=os.urandom(16).hex() if q.fifo else None,
        delay=None if q.fifo else 0,  # FIFO queues take no per-message delay
        attributes=m.attributes,
    )
    return broker.send(q.url, entry)


def late(job: str) -> str:
    """The warning for a killed job's copy not sent in time."""
    return (
        f"sending back job {job}: no answer within {KILL_GIVE_BACK:g} s of the second "
        "signal; it stays in flight and comes back after its visibility timeout, this "
        "attempt used"
    )
