"""check: queues compared with exactly what queues.py creates; --create and
--overwrite; the exit code; on both brokers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from qdone.broker.base import Broker
from qdone.broker.sqs import SqsBroker
from qdone.check import CheckResult, Fix, check_queues, differences
from qdone.cli import qdone
from qdone.config import Options, QueueOptions
from qdone.errors import ExitCode
from qdone.queues import ensure_queue, failed_attributes, main_attributes


@pytest.fixture
def options(prefix: str) -> Options:
    return Options(prefix=prefix)


def found(result: CheckResult) -> dict[str, list[str]]:
    """Differences by queue name (without prefix); "missing" for a missing queue."""
    out: dict[str, list[str]] = {}
    for check in result.queues:
        items = ["missing"] if check.missing else [d.attribute for d in check.differences]
        if items:
            out[check.name.split("_", 1)[1]] = items
    return out


def check(
    broker: Broker, options: Options, q: QueueOptions, *queues: str, **fix: bool
) -> CheckResult:
    return check_queues(broker, options, q, list(queues), Fix(**fix))


# -- comparing ------------------------------------------------------------------


@pytest.mark.parametrize(
    "q",
    [
        QueueOptions(),
        QueueOptions(retries=3, fail_delay=30, message_retention_period=3600),
        QueueOptions(dlq=True, dlq_after=5, tags={"team": "render"}),
        QueueOptions(fifo=True, dlq=True),
    ],
    ids=["defaults", "retries-delay-retention", "dlq-tags", "fifo-dlq"],
)
def test_queues_qdone_created_have_no_differences(
    broker: Broker, options: Options, q: QueueOptions
) -> None:
    ensure_queue(broker, options, q, "jobs")
    result = check(broker, options, q, "jobs")
    assert found(result) == {}
    assert result.ok
    assert len(result.queues) == (3 if q.dlq else 2)


def test_every_attribute_is_compared(broker: Broker, options: Options) -> None:
    ensure_queue(broker, options, QueueOptions(), "jobs")
    q = QueueOptions(retries=2, fail_delay=60, message_retention_period=7200, tags={"a": "b"})
    result = check(broker, options, q, "jobs")
    assert found(result) == {
        "jobs_failed": ["MessageRetentionPeriod", "DelaySeconds", "tag a"],
        "jobs": ["MessageRetentionPeriod", "RedrivePolicy", "tag a"],
    }
    assert not result.ok
    redrive = result.queues[1].differences[1]
    assert redrive.actual is not None and redrive.actual.startswith("maxReceiveCount 1 to ")
    assert redrive.expected is not None and redrive.expected.startswith("maxReceiveCount 3 to ")
    assert redrive.expected.endswith(options.prefix + "jobs_failed")


def test_overwrite_sets_what_differs(broker: Broker, options: Options) -> None:
    ensure_queue(broker, options, QueueOptions(), "jobs")
    q = QueueOptions(retries=2, fail_delay=60, tags={"a": "b"})
    result = check(broker, options, q, "jobs", overwrite=True)
    assert result.ok
    assert all(c.fixed == c.differences for c in result.queues)
    assert found(check(broker, options, q, "jobs")) == {}
    url = broker.get_queue_url(options.prefix + "jobs")
    policy = json.loads(broker.get_queue_attributes(url)["RedrivePolicy"])
    assert int(policy["maxReceiveCount"]) == 3
    assert broker.list_queue_tags(url)["a"] == "b"


def test_missing_queues_are_differences_and_create_makes_them(
    broker: Broker, options: Options
) -> None:
    q = QueueOptions(dlq=True, retries=1)
    assert found(check(broker, options, q, "new")) == {
        "new_dead": ["missing"],
        "new_failed": ["missing"],
        "new": ["missing"],
    }
    result = check(broker, options, q, "new", create=True)
    assert result.ok and [c.created for c in result.queues] == [True, True, True]
    assert found(check(broker, options, q, "new")) == {}


def test_create_adds_a_dead_queue_and_overwrite_points_the_failed_queue_at_it(
    broker: Broker, options: Options
) -> None:
    ensure_queue(broker, options, QueueOptions(), "jobs")
    q = QueueOptions(dlq=True)
    assert found(check(broker, options, q, "jobs")) == {
        "jobs_dead": ["missing"],
        "jobs_failed": ["RedrivePolicy"],
    }
    assert check(broker, options, q, "jobs", create=True, overwrite=True).ok
    assert found(check(broker, options, q, "jobs")) == {}


def test_a_failed_queue_with_a_redrive_policy_qdone_would_not_set(
    broker: Broker, options: Options
) -> None:
    ensure_queue(broker, options, QueueOptions(dlq=True), "jobs")
    result = check(broker, options, QueueOptions(), "jobs")
    assert found(result) == {"jobs_failed": ["RedrivePolicy"]}
    assert result.queues[0].differences[0].expected is None
    assert check(broker, options, QueueOptions(), "jobs", overwrite=True).ok
    assert found(check(broker, options, QueueOptions(), "jobs")) == {}


def test_fifo_queues(broker: Broker, options: Options) -> None:
    ensure_queue(broker, options, QueueOptions(fifo=True), "f")
    assert found(check(broker, options, QueueOptions(fifo=True), "f")) == {}
    assert found(check(broker, options, QueueOptions(), "f.fifo")) == {}
    assert found(check(broker, options, QueueOptions(), "f")) == {
        "f_failed": ["missing"],
        "f": ["missing"],
    }


def test_wildcards_check_existing_main_queues_as_they_are(broker: Broker, options: Options) -> None:
    ensure_queue(broker, options, QueueOptions(), "a")
    ensure_queue(broker, options, QueueOptions(fifo=True), "b")
    result = check(broker, options, QueueOptions(), "*", "zz*")
    assert [c.name for c in result.queues] == [
        options.prefix + n for n in ("a_failed", "a", "b_failed.fifo", "b.fifo")
    ]
    assert result.ok and result.unmatched == ["zz*"]


def test_redrive_policies_compare_as_json() -> None:
    arn = "arn:aws:sqs:us-east-1:1:q_failed"
    expected = {"RedrivePolicy": json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": 2})}
    as_string = json.dumps({"maxReceiveCount": "2", "deadLetterTargetArn": arn})
    assert differences(expected, {"RedrivePolicy": as_string, "DelaySeconds": "0"}) == []
    other = json.dumps({"deadLetterTargetArn": arn + "x", "maxReceiveCount": 2})
    (diff,) = differences(expected, {"RedrivePolicy": other})
    assert diff.attribute == "RedrivePolicy" and diff.value == expected["RedrivePolicy"]
    (diff,) = differences(expected, {"RedrivePolicy": "not json"})
    assert diff.actual is not None and "unreadable" in diff.actual


def test_expected_attributes_are_queues_py(options: Options) -> None:
    q = QueueOptions(retries=4, fail_delay=9)
    main = main_attributes(q, "arn:x:q_failed")
    assert differences(main, {**main, "DelaySeconds": "0"}) == []
    failed = failed_attributes(q, None)
    assert differences(failed, failed) == []
    (diff,) = differences(failed, {**failed, "DelaySeconds": "0"})
    assert (diff.attribute, diff.expected, diff.actual) == ("DelaySeconds", "9", "0")
    assert [d.attribute for d in differences({}, {"FifoQueue": "true"})] == ["FifoQueue"]
    assert not differences({}, {}, {"a": "1"}, {"a": "1", "b": "2"})


# -- command line ---------------------------------------------------------------


def endpoint(broker: Broker) -> str:
    assert isinstance(broker, SqsBroker)
    assert broker.endpoint_url is not None
    return broker.endpoint_url


def broker_args(broker: Broker, tmp_path: Path, options: Options) -> list[str]:
    base = ["--prefix", options.prefix]
    if broker.service == "SQS":
        return ["--broker", "sqs", "--endpoint-url", endpoint(broker), *base]
    return ["--broker", f"sqlite:///{tmp_path / 'store.db'}", *base]


def test_cli_prints_differences_and_exits_1(
    broker: Broker, options: Options, tmp_path: Path
) -> None:
    ensure_queue(broker, options, QueueOptions(), "jobs")
    args = [*broker_args(broker, tmp_path, options), "check", "jobs"]
    run = CliRunner().invoke(qdone, [*args, "--retries", "2"], catch_exceptions=False)
    assert run.exit_code == ExitCode.FAILURE
    (line,) = run.stdout.splitlines()
    assert line.startswith(f"{options.prefix}jobs (queue): RedrivePolicy is maxReceiveCount 1 to")
    assert "1 queue(s) differ" in run.stderr
    run = CliRunner().invoke(qdone, [*args, "--retries", "2", "--overwrite"])
    assert run.exit_code == 0 and run.stdout.endswith(", set\n")
    run = CliRunner().invoke(qdone, [*args, "--retries", "2", "-v"])
    assert (run.exit_code, run.stdout) == (0, "")
    assert f"{options.prefix}jobs (queue): as qdone would create it" in run.stderr


def test_cli_create_with_dlq_and_tags(broker: Broker, options: Options, tmp_path: Path) -> None:
    args = [*broker_args(broker, tmp_path, options), "check", "new.fifo", "--dlq", "--tag", "k=v"]
    run = CliRunner().invoke(qdone, args)
    assert run.exit_code == ExitCode.FAILURE and run.stdout.count("missing") == 3
    run = CliRunner().invoke(qdone, [*args, "--create"])
    assert run.exit_code == 0 and run.stdout.count("missing, created") == 3
    url = broker.get_queue_url(options.prefix + "new_dead.fifo")
    assert broker.list_queue_tags(url) == {"k": "v"}
    assert CliRunner().invoke(qdone, args).exit_code == 0


def test_cli_refuses_bad_attribute_options(sqlite_url: str) -> None:
    run = CliRunner().invoke(qdone, ["--broker", sqlite_url, "check", "a", "--retries", "-1"])
    assert run.exit_code == ExitCode.USAGE
