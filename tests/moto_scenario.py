"""The SQS calls qdone makes, against a moto server in this process, stock or with the
benchmarks' patch (``bench/moto_fast.py``); prints the replies, less what differs from
run to run (ids, receipts, timestamps), and how often moto scanned a queue's
messages for its counts, as one JSON document.

Run:  python tests/moto_scenario.py stock|patched   (``tests/test_moto_fast.py``)
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

from qdone.broker.base import Broker, ChangeVisibility, Receipt, SendEntry

_COUNTS = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
_CHANGING = {"CreatedTimestamp", "LastModifiedTimestamp"}


def _attributes(broker: Broker, url: str) -> dict[str, Any]:
    every = broker.get_queue_attributes(url)
    return {
        "all": {k: v for k, v in every.items() if k not in _CHANGING},
        "counts": broker.get_queue_attributes(url, _COUNTS),
        "one": broker.get_queue_attributes(url, ["MessageRetentionPeriod"]),
    }


def _pair(broker: Broker, name: str, fifo: bool) -> tuple[str, str]:
    end = ".fifo" if fifo else ""
    extra = {"FifoQueue": "true"} if fifo else {}
    failed = broker.create_queue(f"{name}_failed{end}", extra)
    policy = {"deadLetterTargetArn": broker.queue_arn(failed), "maxReceiveCount": 1}
    main = broker.create_queue(f"{name}{end}", {**extra, "RedrivePolicy": json.dumps(policy)})
    return main, failed


def standard(broker: Broker) -> dict[str, Any]:
    main, failed = _pair(broker, "scn", fifo=False)
    seen: dict[str, Any] = {"again": broker.create_queue("scn", {}) == main}
    sent = broker.send_batch(main, [SendEntry(str(n), f"job {n}") for n in range(10)])
    seen["sent"] = (len(sent.sent), sent.failed)
    broker.send(main, SendEntry("x", "delayed job", delay=600))
    seen["after send"] = _attributes(broker, main)
    got = broker.receive(main, 10, 30, 0)
    seen["received"] = sorted((m.body, m.receive_count) for m in got)
    seen["in flight"] = _attributes(broker, main)
    let_go = [ChangeVisibility(str(n), m.receipt, 0) for n, m in enumerate(got[:3])]
    seen["let go"] = broker.change_visibility_batch(main, let_go).ok
    done = [Receipt(str(n), m.receipt) for n, m in enumerate(got[3:8])]
    seen["deleted"] = sorted(broker.delete_batch(main, done).ok)
    seen["after delete"] = _attributes(broker, main)
    # The three let go had their one attempt: the next receive redrives them.
    seen["redriven receive"] = sorted(m.body for m in broker.receive(main, 10, 30, 0))
    seen["main after redrive"] = _attributes(broker, main)
    seen["failed after redrive"] = _attributes(broker, failed)
    seen["failed bodies"] = sorted(m.body for m in broker.receive(failed, 10, 30, 0))
    return seen


def fifo(broker: Broker) -> dict[str, Any]:
    main, _failed = _pair(broker, "scf", fifo=True)
    entries = [SendEntry(str(n), f"f {n}", f"g{n % 2}", f"d{n}") for n in range(6)]
    entries.append(SendEntry("dup", "f again", "g0", "d0"))  # a dedup id seen: not enqueued
    sent = broker.send_batch(main, entries)
    seen: dict[str, Any] = {"sent": (len(sent.sent), sent.failed)}
    seen["after send"] = _attributes(broker, main)
    seen["received"] = [(m.body, m.group_id) for m in broker.receive(main, 10, 30, 0)]
    seen["in flight"] = _attributes(broker, main)
    return seen


def run(broker: Broker) -> dict[str, Any]:
    seen = {"standard": standard(broker), "fifo": fifo(broker)}
    seen["listed"] = [broker.queue_name(u) for u in broker.list_queues("sc")]
    for url in broker.list_queues("sc"):
        broker.delete_queue(url)
    seen["left"] = broker.list_queues("sc")
    return seen


def _count_scans() -> list[int]:
    """Counts, in its one cell, the scans of a queue's messages for its delayed count
    (one per attribute dict built with counts)."""
    from moto.sqs import models

    scans = [0]
    stock = models.Queue.approximate_number_of_messages_delayed

    def counted(queue: Any) -> Any:
        scans[0] += 1
        return stock.fget(queue)  # type: ignore[misc]

    models.Queue.approximate_number_of_messages_delayed = property(counted)  # type: ignore[method-assign, assignment]
    return scans


def main(mode: str) -> None:
    from moto.server import ThreadedMotoServer

    from qdone.broker.sqs import SqsBroker

    scans = _count_scans()
    if mode == "patched":
        sys.path.insert(0, str(Path(__file__).parent.parent / "bench"))
        from moto_fast import patch

        patch()
    os.environ.update(AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        broker = SqsBroker(region="us-east-1", endpoint_url=f"http://127.0.0.1:{port}")
        replies = run(broker)
        print(json.dumps({"replies": replies, "scans": scans[0]}, sort_keys=True, default=str))
        broker.close()
    finally:
        server.stop()


if __name__ == "__main__":
    main(sys.argv[1])
