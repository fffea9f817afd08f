"""idle-queues: pairing, the cheap check before CloudWatch, deleting, and the CLI,
on both brokers (SQS on moto, whose CloudWatch is seeded with AWS/SQS metrics)."""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from pathlib import Path

import boto3
import pytest
from click.testing import CliRunner

from qdone.broker.base import Broker, Receipt, SendEntry
from qdone.broker.sqlite import SqliteBroker
from qdone.broker.sqs import SqsBroker
from qdone.cli import main, qdone
from qdone.config import Options, QueueOptions
from qdone.errors import ExitCode, UsageError
from qdone.idle import IdleSettings, State, delete_idle, find_idle
from qdone.matching import failed_name
from qdone.queues import ensure_queue

# -- helpers --------------------------------------------------------------------


def pair(broker: Broker, options: Options, name: str, fifo: bool = False) -> str:
    """Create queue ``name`` and its failed queue, long unused; returns the main
    queue's url. (SQLite counts a queue as active when created: backdate that.)"""
    ensured = ensure_queue(broker, options, QueueOptions(fifo=fifo), name)
    backdate(broker, ensured.names.main, ensured.names.failed)
    return ensured.url


def backdate(broker: Broker, *names: str) -> None:
    """Make SQLite queues look unused since long ago."""
    if isinstance(broker, SqliteBroker):
        with sqlite3.connect(broker.path) as db:
            db.executemany("update queues set active = 0 where name = ?", [(n,) for n in names])


def url_of(broker: Broker, full: str) -> str:
    return broker.get_queue_url(full)


def put_message(broker: Broker, full: str) -> None:
    entry = SendEntry("1", "true", group_id="g", dedup_id=str(time.time_ns()))
    fifo = full.endswith(".fifo")
    broker.send(url_of(broker, full), entry if fifo else SendEntry("1", "true"))


def make_active(broker: Broker, full: str) -> None:
    """Activity a minute ago, leaving the queue empty: a message sent, received and
    deleted on SQLite; on SQS a NumberOfMessagesSent datapoint in CloudWatch."""
    if broker.service == "SQS":
        cloudwatch = boto3.client(
            "cloudwatch", endpoint_url=endpoint(broker), region_name="us-east-1"
        )
        cloudwatch.put_metric_data(
            Namespace="AWS/SQS",
            MetricData=[
                {
                    "MetricName": "NumberOfMessagesSent",
                    "Dimensions": [{"Name": "QueueName", "Value": full}],
                    "Value": 1.0,
                    "Timestamp": dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1),
                }
            ],
        )
        return
    url = url_of(broker, full)
    put_message(broker, full)
    (message,) = broker.receive(url, 1, 30, 0)
    broker.delete_batch(url, [Receipt("1", message.receipt)])


def idle_names(broker: Broker, options: Options, *patterns: str, **settings: object) -> list[str]:
    s = IdleSettings(**settings)  # type: ignore[arg-type]
    return [p.name for p in find_idle(broker, options, patterns, s).idle]


@pytest.fixture
def options(prefix: str) -> Options:
    return Options(prefix=prefix)


# -- pairing --------------------------------------------------------------------


def test_idle_pairs_are_listed_without_prefix(broker: Broker, options: Options) -> None:
    pair(broker, options, "a")
    pair(broker, options, "b")
    assert idle_names(broker, options, "*") == ["a", "b"]
    assert idle_names(broker, options, "b") == ["b"]


def test_a_queue_with_a_message_is_active_without_asking_cloudwatch(
    broker: Broker, options: Options
) -> None:
    pair(broker, options, "busy")
    put_message(broker, options.prefix + "busy")
    before = broker.calls.total("CloudWatch")
    result = find_idle(broker, options, ["busy"], IdleSettings())
    (verdict,) = result.pairs
    assert not verdict.idle
    assert verdict.main.state is State.ACTIVE
    assert "1 visible" in verdict.main.reason
    assert verdict.failed is not None and verdict.failed.state is State.UNCHECKED
    assert broker.calls.total("CloudWatch") == before == 0


def test_recent_activity_makes_a_queue_active(broker: Broker, options: Options) -> None:
    pair(broker, options, "used")
    pair(broker, options, "unused")
    make_active(broker, options.prefix + "used")
    assert idle_names(broker, options, "*") == ["unused"]


def test_main_idle_but_failed_holding_a_message_is_not_idle(
    broker: Broker, options: Options
) -> None:
    pair(broker, options, "x")
    put_message(broker, options.prefix + "x_failed")
    (verdict,) = find_idle(broker, options, ["x"], IdleSettings()).pairs
    assert not verdict.idle
    assert verdict.main.state is State.UNCHECKED
    assert verdict.failed is not None and verdict.failed.state is State.ACTIVE


def test_main_idle_but_failed_recently_used_is_not_idle(broker: Broker, options: Options) -> None:
    pair(broker, options, "x")
    make_active(broker, options.prefix + "x_failed")
    (verdict,) = find_idle(broker, options, ["x"], IdleSettings()).pairs
    assert verdict.main.state is State.IDLE
    assert verdict.failed is not None and verdict.failed.state is State.ACTIVE
    assert not verdict.idle


def test_fifo_pairs(broker: Broker, options: Options) -> None:
    pair(broker, options, "f", fifo=True)
    pair(broker, options, "g", fifo=True)
    assert failed_name(options.prefix + "f.fifo", options) == options.prefix + "f_failed.fifo"
    make_active(broker, options.prefix + "g_failed.fifo")
    assert idle_names(broker, options, "*") == ["f.fifo"]
    assert idle_names(broker, options, "f.fifo") == ["f.fifo"]


def test_a_missing_failed_queue_still_counts_and_delete_removes_the_main_queue(
    broker: Broker, options: Options
) -> None:
    broker.create_queue(options.prefix + "lone", {})
    backdate(broker, options.prefix + "lone")
    result = find_idle(broker, options, ["lone"], IdleSettings())
    (verdict,) = result.pairs
    assert verdict.idle
    assert verdict.failed is not None and verdict.failed.state is State.MISSING
    (outcome,) = delete_idle(broker, result.idle)
    assert outcome.deleted == [options.prefix + "lone"]
    assert broker.list_queues(options.prefix) == []


def test_wildcards_leave_failed_queues_out_unless_unpaired_and_included(
    broker: Broker, options: Options
) -> None:
    pair(broker, options, "a")
    make_active(broker, options.prefix + "a_failed")
    assert idle_names(broker, options, "*") == []
    assert idle_names(broker, options, "*", unpair=True) == ["a"]
    assert idle_names(broker, options, "*", unpair=True, include_failed=True) == ["a"]
    pair(broker, options, "b")
    both = idle_names(broker, options, "*", unpair=True, include_failed=True)
    assert both == ["a", "b", "b_failed"]


def test_include_failed_needs_unpair(broker: Broker, options: Options) -> None:
    with pytest.raises(UsageError, match="--unpair"):
        find_idle(broker, options, ["*"], IdleSettings(include_failed=True))


def test_a_failed_queue_named_explicitly_is_excluded(broker: Broker, options: Options) -> None:
    pair(broker, options, "a")
    result = find_idle(broker, options, ["a_failed", "nope"], IdleSettings())
    assert result.pairs == []
    assert result.matched.excluded == [options.prefix + "a_failed"]
    assert result.matched.missing == [options.prefix + "nope"]


# -- deleting -------------------------------------------------------------------


def test_delete_removes_both_queues_of_each_idle_pair(broker: Broker, options: Options) -> None:
    pair(broker, options, "a")
    pair(broker, options, "busy")
    put_message(broker, options.prefix + "busy")
    result = find_idle(broker, options, ["*"], IdleSettings())
    (outcome,) = delete_idle(broker, result.idle)
    assert outcome.deleted == [options.prefix + "a", options.prefix + "a_failed"]
    names = sorted(broker.queue_name(u) for u in broker.list_queues(options.prefix))
    assert names == [options.prefix + "busy", options.prefix + "busy_failed"]


def test_delete_checks_again_for_messages(broker: Broker, options: Options) -> None:
    pair(broker, options, "a")
    result = find_idle(broker, options, ["a"], IdleSettings())
    put_message(broker, options.prefix + "a_failed")  # arrives after the check
    (outcome,) = delete_idle(broker, result.idle)
    assert outcome.deleted == []
    assert "a_failed now holds messages" in outcome.skipped
    assert len(broker.list_queues(options.prefix)) == 2


def test_delete_of_a_queue_already_gone_is_a_note(broker: Broker, options: Options) -> None:
    pair(broker, options, "a")
    result = find_idle(broker, options, ["a"], IdleSettings())
    broker.delete_queue(url_of(broker, options.prefix + "a_failed"))
    (outcome,) = delete_idle(broker, result.idle)
    assert outcome.deleted == [options.prefix + "a"]
    assert "already deleted" in outcome.notes[0]


# -- time windows ---------------------------------------------------------------


def test_sqs_refuses_windows_under_five_minutes(sqs_broker: Broker, options: Options) -> None:
    with pytest.raises(UsageError, match="at least 5 minutes"):
        find_idle(sqs_broker, options, ["*"], IdleSettings(idle_for=4))


def test_sqlite_is_exact_with_no_minimum(tmp_path: Path, options: Options) -> None:
    now = [1_900_000_000.0]
    broker = SqliteBroker(tmp_path / "clock.db", clock=lambda: now[0])
    pair(broker, options, "a")
    make_active(broker, options.prefix + "a")

    def idle_after(minutes: float, idle_for: float) -> bool:
        clock = lambda: now[0] + minutes * 60  # noqa: E731
        s = IdleSettings(idle_for=idle_for)
        return bool(find_idle(broker, options, ["a"], s, clock=clock).idle)

    assert not idle_after(59, 60)
    assert idle_after(61, 60)
    assert idle_after(0.5, 0.25)
    assert not idle_after(0, 0)
    broker.close()


def test_many_idle_queues_cost_one_cloudwatch_call(sqs_broker: Broker, options: Options) -> None:
    for i in range(20):
        pair(sqs_broker, options, f"q{i}")
    sqs_broker.calls = type(sqs_broker.calls)()
    assert len(idle_names(sqs_broker, options, "*")) == 20
    assert sqs_broker.calls.by_action("CloudWatch") == {"GetMetricData": 1}
    assert sqs_broker.calls.by_action("SQS") == {"GetQueueAttributes": 40, "ListQueues": 1}


# -- command line ---------------------------------------------------------------


def endpoint(broker: Broker) -> str:
    assert isinstance(broker, SqsBroker)
    assert broker.endpoint_url is not None
    return broker.endpoint_url


def broker_args(broker: Broker, tmp_path: Path) -> list[str]:
    if broker.service == "SQS":
        return ["--broker", "sqs", "--endpoint-url", endpoint(broker)]
    return ["--broker", f"sqlite:///{tmp_path / 'store.db'}"]


def test_cli_prints_idle_names_and_deletes(
    broker: Broker, options: Options, tmp_path: Path
) -> None:
    pair(broker, options, "a")
    pair(broker, options, "busy")
    put_message(broker, options.prefix + "busy")
    args = [*broker_args(broker, tmp_path), "--prefix", options.prefix, "idle-queues", "*"]
    run = CliRunner().invoke(qdone, [*args, "-q"], catch_exceptions=False)
    assert (run.exit_code, run.stdout) == (0, "a\n")
    run = CliRunner().invoke(qdone, [*args, "--delete", "-v", "-o", "10"], catch_exceptions=False)
    assert run.exit_code == 0
    assert run.stdout == "a\n"
    assert f"Deleted {options.prefix}a_failed" in run.stderr
    assert f"{options.prefix}busy: active (1 visible" in run.stderr
    if broker.service == "SQS":
        # 10: each deleted queue's counts are read twice, the second right before
        # its own delete (the window in which a message sent is lost: one round trip)
        assert "Used 10 SQS and 1 CloudWatch API calls: " in run.stderr
        assert "re-create a deleted queue for 60 seconds" in run.stderr
    else:
        assert "SQLite store operations: " in run.stderr
    assert len(broker.list_queues(options.prefix)) == 2


def test_cli_unpair_and_include_failed(broker: Broker, options: Options, tmp_path: Path) -> None:
    pair(broker, options, "a")
    make_active(broker, options.prefix + "a")
    args = [*broker_args(broker, tmp_path), "--prefix", options.prefix, "idle-queues", "*"]
    run = CliRunner().invoke(qdone, [*args, "--unpair", "--include-failed"])
    assert (run.exit_code, run.stdout) == (0, "a_failed\n")


def test_cli_usage_errors_are_one_line(
    options: Options, sqlite_url: str, moto_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--broker", sqlite_url, "idle-queues", "*", "--include-failed"])
    assert exit_.value.code == ExitCode.USAGE
    assert capsys.readouterr().err == "qdone: error: --include-failed only works with --unpair\n"
    sqs = ["--broker", "sqs", "--endpoint-url", moto_endpoint]
    with pytest.raises(SystemExit) as exit_:
        main([*sqs, "idle-queues", "x", "--idle-for", "2"])
    assert exit_.value.code == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "at least 5 minutes on SQS" in err


def test_cli_missing_queue_is_a_warning(sqlite_url: str) -> None:
    run = CliRunner().invoke(qdone, ["--broker", sqlite_url, "idle-queues", "ghost", "-o", "0"])
    assert run.exit_code == 0
    assert run.stdout == ""
    assert "queue qdone_ghost does not exist" in run.stderr
