"""CloudWatch requests for the SQS broker, built as data: no calls are made here.

``SqsBroker`` sends what these functions build, so that its error mapping and
call counting stay in one place. Queue activity is read with GetMetricData,
which answers up to 500 queries per call: six metrics per queue, so checking
100 queues costs two calls (Node qdone spent up to seven calls per queue).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch.type_defs import (
        GetMetricDataInputTypeDef,
        GetMetricDataOutputTypeDef,
        MetricDataQueryTypeDef,
        MetricDataResultTypeDef,
        MetricDatumTypeDef,
    )

__all__ = [
    "ACTIVITY_METRICS",
    "MAX_METRIC_DATA",
    "MAX_QUERIES",
    "ActivityQueries",
    "activity_period",
    "activity_queries",
    "chunked",
    "metric_data",
]

#: GetMetricData accepts up to 500 MetricDataQueries per call.
MAX_QUERIES = 500
#: PutMetricData accepts up to 1000 metrics per call.
MAX_METRIC_DATA = 1000

#: What counts as activity, with the statistic to read. Empty receives do not:
#: a worker polling an idle queue keeps it idle.
ACTIVITY_METRICS: tuple[tuple[str, str], ...] = (
    ("NumberOfMessagesSent", "Sum"),
    ("NumberOfMessagesReceived", "Sum"),
    ("NumberOfMessagesDeleted", "Sum"),
    ("ApproximateNumberOfMessagesVisible", "Maximum"),
    ("ApproximateNumberOfMessagesNotVisible", "Maximum"),
    ("ApproximateNumberOfMessagesDelayed", "Maximum"),
)

_T = TypeVar("_T")


def chunked(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    """Consecutive slices of ``items``, each at most ``size`` long."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def activity_period(span: float) -> int:
    """One period covering ``span`` seconds, so each query yields one datapoint.

    At least 300 s (SQS publishes every 5 minutes); a multiple of 300, or of
    3600 beyond 15 days, as CloudWatch requires for older data.
    """
    step = 3600 if span > 15 * 86400 else 300
    return max(300, math.ceil(span / step) * step)


@dataclass(frozen=True)
class ActivityQueries:
    """GetMetricData queries for many queues, and which queue each query id is for."""

    queries: list[MetricDataQueryTypeDef]
    owner: dict[str, str]  # query id -> key (the queue url)

    def active(self, results: Sequence[MetricDataResultTypeDef]) -> set[str]:
        """Keys with a datapoint above zero in ``results``."""
        return {
            self.owner[r["Id"]]
            for r in results
            if r.get("Id") in self.owner and any(v > 0 for v in r.get("Values", []))
        }

    def fetch_active(
        self,
        get_metric_data: Callable[[GetMetricDataInputTypeDef], GetMetricDataOutputTypeDef],
        start: dt.datetime,
        end: dt.datetime,
        per_call: int = MAX_QUERIES,
    ) -> set[str]:
        """Keys active between ``start`` and ``end``: ``per_call`` queries per
        request, each request followed through its NextToken pages."""
        active: set[str] = set()
        for chunk in chunked(self.queries, per_call):
            request: GetMetricDataInputTypeDef = {
                "MetricDataQueries": list(chunk),
                "StartTime": start,
                "EndTime": end,
            }
            while True:
                response = get_metric_data(request)
                active |= self.active(response.get("MetricDataResults", []))
                if not response.get("NextToken"):
                    break
                request["NextToken"] = response["NextToken"]
        return active


def activity_queries(queues: Mapping[str, str], period: int) -> ActivityQueries:
    """Queries for ``queues`` (key -> queue name) in the ``AWS/SQS`` namespace."""
    queries: list[MetricDataQueryTypeDef] = []
    owner: dict[str, str] = {}
    for i, (key, name) in enumerate(queues.items()):
        for j, (metric, stat) in enumerate(ACTIVITY_METRICS):
            query_id = f"q{i}_{j}"  # ids must start with a lowercase letter
            owner[query_id] = key
            queries.append(
                {
                    "Id": query_id,
                    "MetricStat": {
                        "Metric": {
                            "Namespace": "AWS/SQS",
                            "MetricName": metric,
                            "Dimensions": [{"Name": "QueueName", "Value": name}],
                        },
                        "Period": period,
                        "Stat": stat,
                    },
                    "ReturnData": True,
                }
            )
    return ActivityQueries(queries, owner)


def metric_data(
    metrics: Sequence[tuple[str, float, Mapping[str, str]]],
) -> list[MetricDatumTypeDef]:
    """PutMetricData entries for ``(name, value, dimensions)`` triples."""
    return [
        {
            "MetricName": name,
            "Value": float(value),
            "Dimensions": [{"Name": k, "Value": v} for k, v in dimensions.items()],
        }
        for name, value, dimensions in metrics
    ]
