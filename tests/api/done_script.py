"""The typed Python API, end to end, using only ``qdone``'s public names: enqueue
1,000 jobs with ``enqueue_batch``, run them with a handler (one raises), and find
999 succeeded and 1 in the failed queue. ``mypy --strict`` checks this file.

    python tests/api/done_script.py --broker sqlite:///tmp/store.db
    python tests/api/done_script.py --broker sqs --endpoint-url http://127.0.0.1:5000
"""

from __future__ import annotations

import argparse
import threading

import qdone

JOBS = 1_000
BAD = "frame 500"


def run(broker: str, endpoint_url: str | None, prefix: str) -> qdone.Summary:
    failures: list[qdone.JobFailed] = []
    seen: set[str] = set()
    lock = threading.Lock()

    def handle(job: qdone.Job) -> None:
        with lock:
            seen.add(job.body)
        if job.body == BAD:
            raise ValueError(f"cannot render {job.body}")

    def on_event(event: qdone.Event) -> None:
        if isinstance(event, qdone.JobFailed):
            failures.append(event)

    with qdone.Client(broker, prefix=prefix, endpoint_url=endpoint_url) as client:
        result: qdone.EnqueueBatchResult = client.enqueue_batch(
            [("render", f"frame {n}") for n in range(JOBS)]
        )
        assert result.enqueued == JOBS and result.failed == [], result
        summary = client.work(
            ["render"], handler=handle, concurrency=8, drain=True, wait_time=1, on_event=on_event
        )
        snapshot: qdone.Snapshot = client.counts(["render"])
    assert (summary.ran, summary.succeeded, summary.failed) == (JOBS, JOBS - 1, 1), summary
    assert len(seen) == JOBS
    [failure] = failures
    assert failure.command == BAD and failure.final
    assert failure.result.exception == f"ValueError: cannot render {BAD}"
    [row] = snapshot.rows
    assert row.counts == qdone.Counts(0, 0, 0), row
    assert row.failed == qdone.Counts(visible=1), row
    return summary


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--broker", required=True)
    parser.add_argument("--endpoint-url")
    parser.add_argument("--prefix", default="qdone_")
    args = parser.parse_args()
    summary = run(args.broker, args.endpoint_url, args.prefix)
    print(f"{summary.succeeded} succeeded, {summary.failed} failed")


if __name__ == "__main__":
    main()
