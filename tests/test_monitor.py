"""monitor: counts of queues and failed queues, totals, the refresh loop, JSON and
table output, --save to CloudWatch (moto), on both brokers."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

import boto3
import pytest
from click.testing import CliRunner

from qdone.broker.base import Broker, SendEntry
from qdone.broker.sqs import SqsBroker
from qdone.cli import main, qdone
from qdone.cli.monitor import CLEAR_SCREEN, _Screen, render_table
from qdone.config import Options, QueueOptions
from qdone.errors import ExitCode, UsageError
from qdone.log import Output
from qdone.matching import Counts
from qdone.monitor import (
    NAMESPACE,
    Row,
    Snapshot,
    metrics,
    pattern_label,
    save,
    take_snapshot,
    watch,
)
from qdone.queues import ensure_queue


@pytest.fixture
def options(prefix: str) -> Options:
    return Options(prefix=prefix)


def send(broker: Broker, full: str, n: int = 1, delay: int | None = None) -> None:
    url = broker.get_queue_url(full)
    for i in range(n):
        broker.send(url, SendEntry(str(i), "true", delay=delay))


def seed(broker: Broker, options: Options) -> None:
    """jobs: 3 visible, 1 in flight, 1 delayed; its failed queue 2 visible.
    mail: empty, with no failed queue."""
    ensure_queue(broker, options, QueueOptions(), "jobs")
    send(broker, options.prefix + "jobs", 4)
    broker.receive(broker.get_queue_url(options.prefix + "jobs"), 1, 300, 0)
    send(broker, options.prefix + "jobs", 1, delay=600)
    send(broker, options.prefix + "jobs_failed", 2)
    broker.create_queue(options.prefix + "mail", {})


def test_snapshot_counts_queues_and_failed_queues(broker: Broker, options: Options) -> None:
    seed(broker, options)
    snap = take_snapshot(broker, options, ["*"], clock=lambda: 42.0)
    assert snap.rows == [
        Row("jobs", "*", Counts(3, 1, 1), Counts(2, 0, 0), options.prefix + "jobs"),
        Row("mail", "*", Counts(), None, options.prefix + "mail"),
    ]
    assert snap.totals == Counts(3, 1, 1)
    assert snap.failed_totals == Counts(2, 0, 0)
    assert snap.taken_at == 42.0


def test_patterns_names_and_missing_queues(broker: Broker, options: Options) -> None:
    seed(broker, options)
    snap = take_snapshot(broker, options, ["mail", "j*", "jobs", "ghost"])
    assert [(r.name, r.pattern) for r in snap.rows] == [("mail", "mail"), ("jobs", "j*")]
    assert snap.missing == [options.prefix + "ghost"]


def test_a_queue_deleted_during_a_scan_is_skipped(
    broker: Broker, options: Options, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(broker, options)
    listing = broker.list_queues(options.prefix)
    broker.delete_queue(broker.get_queue_url(options.prefix + "jobs"))
    broker.delete_queue(broker.get_queue_url(options.prefix + "jobs_failed"))
    monkeypatch.setattr(broker, "list_queues", lambda prefix: listing)
    snap = take_snapshot(broker, options, ["*"])
    assert [r.name for r in snap.rows] == ["mail"]


def test_failed_queue_deleted_during_a_scan_shows_as_none(
    broker: Broker, options: Options, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(broker, options)
    listing = broker.list_queues(options.prefix)
    broker.delete_queue(broker.get_queue_url(options.prefix + "jobs_failed"))
    monkeypatch.setattr(broker, "list_queues", lambda prefix: listing)
    (jobs, _mail) = take_snapshot(broker, options, ["*"]).rows
    assert jobs.failed is None and jobs.counts.visible == 3


# -- metrics --------------------------------------------------------------------


def test_metrics_follow_node_qdones_layout(options: Options) -> None:
    rows = [
        Row("a", "a*", Counts(1, 2, 3), Counts(4, 0, 0)),
        Row("ab", "a*", Counts(), None),
        Row("b", "b", Counts(0, 1, 0), Counts()),
    ]
    data = metrics(Snapshot(rows, 0.0), options, ["a*", "b"])
    by_dimension: dict[str, dict[str, float]] = {}
    for name, value, dims in data:
        by_dimension.setdefault(dims["queueName"], {})[name] = value
    assert by_dimension[options.prefix + "a*"] == {
        "totalQueues": 3,
        "contributingQueueCount": 2,
        "ApproximateNumberOfMessages": 5,
        "ApproximateNumberOfMessagesNotVisible": 2,
        "ApproximateNumberOfMessagesDelayed": 3,
        "FailedApproximateNumberOfMessages": 4,
        "FailedApproximateNumberOfMessagesNotVisible": 0,
        "FailedApproximateNumberOfMessagesDelayed": 0,
    }
    assert by_dimension[options.prefix + "b"]["contributingQueueCount"] == 1
    assert pattern_label(options, options.prefix + "x*") == options.prefix + "x*"


def test_save_publishes_to_cloudwatch(sqs_broker: SqsBroker, options: Options) -> None:
    seed(sqs_broker, options)
    snap = take_snapshot(sqs_broker, options, ["j*"])
    assert save(sqs_broker, snap, options, ["j*"]) == 8
    assert sqs_broker.calls.by_action("CloudWatch") == {"PutMetricData": 1}
    cloudwatch = boto3.client(
        "cloudwatch", endpoint_url=sqs_broker.endpoint_url, region_name="us-east-1"
    )
    now = dt.datetime.now(dt.timezone.utc)
    stats = cloudwatch.get_metric_statistics(
        Namespace=NAMESPACE,
        MetricName="FailedApproximateNumberOfMessages",
        Dimensions=[{"Name": "queueName", "Value": options.prefix + "j*"}],
        StartTime=now - dt.timedelta(minutes=5),
        EndTime=now + dt.timedelta(minutes=5),
        Period=60,
        Statistics=["Maximum"],
    )
    assert [p["Maximum"] for p in stats["Datapoints"]] == [2.0]


def test_save_needs_sqs(sqlite_broker: Broker, options: Options) -> None:
    with pytest.raises(UsageError, match="needs --broker sqs"):
        save(sqlite_broker, Snapshot([], 0.0), options, ["*"])


# -- the loop and the screen ----------------------------------------------------


def test_watch_refreshes_every_interval_until_interrupted() -> None:
    slept: list[float] = []
    shown: list[Snapshot] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        watch(lambda: Snapshot([], 0.0), shown.append, interval=2.5, sleep=sleep)
    assert (len(shown), slept) == (3, [2.5, 2.5, 2.5])
    assert watch(lambda: Snapshot([], 0.0), shown.append, interval=1, once=True) == 1
    assert watch(lambda: Snapshot([], 0.0), shown.append, interval=0, limit=2) == 2


def test_table_shows_failed_columns_and_totals() -> None:
    snap = Snapshot(
        [Row("jobs", "*", Counts(12, 3, 0), Counts(1, 0, 0)), Row("m", "*", Counts(), None)], 0.0
    )
    lines = render_table(snap).splitlines()
    assert lines[0].startswith("2 queues at ")
    assert lines[1].startswith("QUEUE") and "FAILED" in lines[1]
    assert lines[2].split() == ["jobs", "12", "3", "0", "1", "0", "0"]
    assert lines[3].split() == ["m", "0", "0", "0", "-", "-", "-"]
    assert lines[4].split() == ["TOTAL", "12", "3", "0", "1", "0", "0"]


def test_screen_clears_between_table_refreshes() -> None:
    out, err = io.StringIO(), io.StringIO()
    screen = _Screen(Output(verbose=False, json_lines=False, out=out, err=err), False, True)
    screen.show(Snapshot([], 0.0, missing=["qdone_x"]))
    screen.show(Snapshot([], 0.0, missing=["qdone_x"]))
    assert out.getvalue().count(CLEAR_SCREEN) == 2
    assert err.getvalue().count("qdone_x does not exist") == 1


# -- command line ---------------------------------------------------------------


def broker_args(broker: Broker, tmp_path: Path, options: Options) -> list[str]:
    base = ["--prefix", options.prefix]
    if isinstance(broker, SqsBroker):
        assert broker.endpoint_url is not None
        return ["--broker", "sqs", "--endpoint-url", broker.endpoint_url, *base]
    return ["--broker", f"sqlite:///{tmp_path / 'store.db'}", *base]


def test_cli_once_prints_one_json_object_per_queue(
    broker: Broker, options: Options, tmp_path: Path
) -> None:
    seed(broker, options)
    args = [*broker_args(broker, tmp_path, options), "monitor", "*", "--once"]
    run = CliRunner().invoke(qdone, args, catch_exceptions=False)
    assert run.exit_code == 0
    records = [json.loads(line) for line in run.stdout.splitlines()]
    assert [r["event"] for r in records] == ["QUEUE_COUNTS", "QUEUE_COUNTS", "TOTAL_COUNTS"]
    jobs, mail, total = records
    counts = (jobs["queue"], jobs["visible"], jobs["in_flight"], jobs["delayed"])
    assert counts == (f"{options.prefix}jobs", 3, 1, 1)
    assert jobs["failed_visible"] == 2
    assert "failed_visible" not in mail
    assert (total["queues"], total["visible"], total["failed_visible"]) == (2, 3, 2)


def test_cli_refreshes_until_ctrl_c(
    broker: Broker, options: Options, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(broker, options)
    naps: list[float] = []

    def sleep(seconds: float) -> None:
        naps.append(seconds)
        if len(naps) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr("qdone.monitor.time.sleep", sleep)
    args = [*broker_args(broker, tmp_path, options), "monitor", "j*", "--interval", "7", "--json"]
    run = CliRunner().invoke(qdone, args, catch_exceptions=False)
    assert run.exit_code == 0
    assert naps == [7.0, 7.0]
    assert run.stdout.count("TOTAL_COUNTS") == 2


def test_cli_save_on_sqs(sqs_broker: SqsBroker, options: Options, tmp_path: Path) -> None:
    seed(sqs_broker, options)
    args = [*broker_args(sqs_broker, tmp_path, options), "monitor", "*", "--once", "--save", "-v"]
    run = CliRunner().invoke(qdone, args, catch_exceptions=False)
    assert run.exit_code == 0
    assert f"Saved 8 metrics to CloudWatch namespace {NAMESPACE}" in run.stderr


def test_cli_save_on_sqlite_is_a_usage_error(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--broker", sqlite_url, "monitor", "*", "--once", "--save"])
    assert exit_.value.code == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.startswith("qdone: error: --save publishes to CloudWatch and needs --broker sqs")
    assert err.count("\n") == 1
