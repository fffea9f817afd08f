"""Benchmark: API calls of ``idle-queues`` over many queue pairs, against Node qdone.

Starts a moto server on loopback (never AWS), creates PAIRS queue pairs, makes
ACTIVE of them active (half hold a message, half have recent activity seeded in
CloudWatch as ``AWS/SQS`` metrics, since moto produces none), runs the
idle-queues check and prints the SQS and CloudWatch calls it made next to what
Node qdone's scheme costs: one GetQueueAttributes per queue, then up to 7
GetMetricStatistics per queue (stopping at the first metric showing use), so up
to 14 CloudWatch calls per idle pair. Calls are counted, not timed.

Run:  python bench/bench_idle.py [--pairs 100] [--active 10] [--json]

Prints one Markdown table (JSON lines with --json). Nothing here is timed, so
there are no rounds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys
import time
from pathlib import Path

import boto3

from qdone.broker.base import SendEntry
from qdone.broker.sqs import SqsBroker
from qdone.config import Options, QueueOptions
from qdone.idle import IdleSettings, find_idle
from qdone.queues import ensure_queue

NODE_METRICS_PER_QUEUE = 7  # Node qdone's GetMetricStatistics calls for an idle queue

sys.path.insert(0, str(Path(__file__).parent))
from _util import Row, emit, moto_server, progress  # noqa: E402  (bench/ is not a package)


def seed_activity(endpoint: str, names: list[str]) -> None:
    cloudwatch = boto3.client("cloudwatch", endpoint_url=endpoint, region_name="us-east-1")
    when = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=10)
    cloudwatch.put_metric_data(
        Namespace="AWS/SQS",
        MetricData=[
            {
                "MetricName": "NumberOfMessagesSent",
                "Dimensions": [{"Name": "QueueName", "Value": name}],
                "Value": 1.0,
                "Timestamp": when,
            }
            for name in names
        ],
    )


def setup(endpoint: str, options: Options, pairs: int, active: int) -> None:
    broker = SqsBroker(region="us-east-1", endpoint_url=endpoint)
    names = [f"q{i:03d}" for i in range(pairs)]
    for name in names:
        ensure_queue(broker, options, QueueOptions(), name)
    with_message = names[: active // 2]
    with_metrics = names[active // 2 : active]
    for name in with_message:
        broker.send(broker.get_queue_url(options.prefix + name), SendEntry("1", "true"))
    seed_activity(endpoint, [options.prefix + n for n in with_metrics])
    broker.close()


def node_calls(pairs: int, active: int) -> tuple[int, int]:
    """SQS and CloudWatch calls of Node qdone's idle-queues for this setup: ListQueues,
    then per pair the main queue's counts; an idle main queue costs 7 metric calls,
    then the same again for its failed queue. A queue active by metrics stops at
    its first metric (NumberOfMessagesSent, the one seeded)."""
    idle = pairs - active
    by_message = active // 2
    by_metrics = active - by_message
    sqs = 1 + idle * 2 + by_message + by_metrics
    cloudwatch = idle * 2 * NODE_METRICS_PER_QUEUE + by_metrics * 1
    return sqs, cloudwatch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--active", type=int, default=10)
    parser.add_argument("--json", action="store_true", help="print rows as JSON lines")
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    for key, value in (("AWS_ACCESS_KEY_ID", "bench"), ("AWS_SECRET_ACCESS_KEY", "bench")):
        os.environ[key] = value
    options = Options(prefix="qdone_bench_")
    with moto_server() as moto:
        setup(moto.url, options, args.pairs, args.active)
        broker = SqsBroker(region="us-east-1", endpoint_url=moto.url)
        started = time.perf_counter()
        result = find_idle(broker, options, ["*"], IdleSettings(idle_for=60))
        elapsed = time.perf_counter() - started
        counts = {service: broker.calls.by_action(service) for service in ("CloudWatch", "SQS")}
        broker.close()
    node_sqs, node_cw = node_calls(args.pairs, args.active)
    what = (
        f"idle-queues over {args.pairs} queue pairs ({args.active} active, "
        f"{len(result.idle)} found idle)"
    )
    rows = []
    for service, node, scheme, target in (
        (
            "CloudWatch",
            node_cw,
            f"{NODE_METRICS_PER_QUEUE} GetMetricStatistics per idle queue",
            "≥ 10x fewer",
        ),
        ("SQS", node_sqs, "ListQueues, then GetQueueAttributes per queue checked", ""),
    ):
        ours = sum(counts[service].values())
        detail = ", ".join(f"{a} {n}" for a, n in counts[service].items())
        rows.append(
            Row(
                f"{what}: {service} calls",
                f"{ours:,} ({detail})",
                f"Node qdone 1.7.1's scheme, counted from its code: {node:,} ({scheme})",
                f"{node / ours:,.0f}x fewer" if ours and node > ours else f"{ours / node:.2f}x",
                target,
            )
        )
        progress(rows[-1])
    print(
        f"({elapsed:.2f} s against a local moto server; not a measure of AWS latency)",
        file=sys.stderr,
    )
    emit(rows, args, "bench_idle.py")
    return 0 if len(result.idle) == args.pairs - args.active else 1


if __name__ == "__main__":
    sys.exit(main())
