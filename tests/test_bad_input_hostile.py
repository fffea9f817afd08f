"""Bad input found by an adversarial run (issue 16), and its neighbours: suffixes
and names that build broken layouts, values that overflow, invalid bytes,
closed or full standard streams, AWS configuration that cannot work, and
validation that must come before any side effect. Run by ``tests/bad_input.py``;
a case on ``sqlite`` also checks that no store was made."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from qdone.broker.sqlite import SqliteBroker

from .bad_input import GOOD, JOBS, MIB, UNAVAILABLE, USAGE, Case, case, check_case, params
from .cli_helpers import run_qdone
from .faults.servers import scripted_server

HUGE = "9" * 400
BOTH = ("sqlite", "sqs")


def _both(id: str, *args: str, **kw: object) -> list[Case]:
    """The case on each broker."""
    return [case(f"{id}-{b}", *args, broker=b, **kw) for b in BOTH]  # type: ignore[arg-type]


CASES = [
    # -- suffixes that make no layout (item 7) ------------------------------------------
    *_both("fail-suffix-empty", "enqueue", "q", "true", "--fail-suffix", "", code=USAGE,
           message="--fail-suffix '' cannot be used"),
    *_both("fail-suffix-fifo", "enqueue", "q", "true", "--fail-suffix", ".fifo", code=USAGE,
           message="--fail-suffix '.fifo' cannot be used"),
    *_both("dlq-suffix-is-fail-suffix", "enqueue", "q", "true", "--dlq", "--dlq-suffix",
           "_failed", code=USAGE, message="--dlq-suffix '_failed' is also the suffix"),
    *_both("dlq-suffix-empty", "enqueue", "q", "true", "--dlq", "--dlq-suffix", "",
           code=USAGE, message="--dlq-suffix '' cannot be used"),
    case("dlq-suffix-fifo", "check", "q", "--create", "--dlq", "--dlq-suffix", ".fifo",
         code=USAGE, message="--dlq-suffix '.fifo' cannot be used"),
    case("batch-fail-suffix-empty", "enqueue-batch", JOBS, "--fail-suffix", "", code=USAGE,
         message="--fail-suffix ''", files={"jobs.txt": GOOD}),
    case("worker-fail-suffix-empty", "worker", "q", "--drain", "--fail-suffix", "",
         code=USAGE, message="--fail-suffix ''"),
    case("fail-suffix-empty-from-env", "enqueue", "q", "true", code=USAGE,
         message="--fail-suffix ''", env={"QDONE_FAIL_SUFFIX": ""}),
    # -- names that are empty (item 8) --------------------------------------------------
    *_both("name-empty", "enqueue", "", "true", code=USAGE, message="queue name '' is empty"),
    *_both("name-only-fifo", "enqueue", ".fifo", "true", code=USAGE,
           message="queue name '.fifo' is empty"),
    case("name-only-prefix", "enqueue", "qdone_", "true", own_prefix=False, code=USAGE,
         message="queue name 'qdone_' is empty"),
    case("batch-name-only-fifo", "enqueue-batch", JOBS, code=USAGE,
         message="jobs.txt:3: queue name '.fifo' is empty",
         files={"jobs.txt": GOOD + b".fifo echo 3\n"}),
    case("worker-name-empty", "worker", "", "--drain", code=USAGE, message="is empty"),
    case("check-name-empty", "check", "", "--create", code=USAGE, message="is empty"),
    # -- wildcards no queue name can match (item 12) --------------------------------------
    case("worker-wildcard-bad", "worker", "bad name!*", "--drain", code=USAGE,
         message="wildcard 'bad name!*'"),
    case("worker-wildcard-after-a-good-name", "worker", "q", "bad!*", "--drain", code=USAGE,
         message="wildcard 'bad!*'"),
    case("worker-two-stars", "worker", "a*b*", "--drain", code=USAGE, message="'a*b*'"),
    case("idle-wildcard-bad", "idle-queues", "a.b*", code=USAGE, message="wildcard 'a.b*'"),
    case("monitor-wildcard-bad", "monitor", "x y*", "--once", code=USAGE, message="'x y*'"),
    case("check-wildcard-bad", "check", "x/y*", code=USAGE, message="'x/y*'"),
    # -- numbers that overflow (item 10) --------------------------------------------------
    case("interval-nan", "monitor", "q", "--interval", "nan", "--once", code=USAGE,
         message="--interval must be 0.5 to 86400 seconds, not nan"),
    case("interval-inf", "monitor", "q", "--interval", "inf", code=USAGE,
         message="'--interval': inf"),
    case("idle-for-400-digits", "idle-queues", "q", "--idle-for", HUGE, code=USAGE,
         message="--idle-for must be at most"),
    case("idle-for-2e9-on-sqs", "idle-queues", "q", "--idle-for", "2000000000", broker="sqs",
         code=USAGE, message="--idle-for must be at most 655,200 minutes"),
    case("idle-for-456-days-on-sqs", "idle-queues", "q", "--idle-for", str(456 * 24 * 60),
         broker="sqs", code=USAGE, message="CloudWatch keeps metrics 455 days"),
    case("delay-400-digits", "enqueue", "q", "true", "--delay", HUGE, code=USAGE,
         message="--delay must be 0 to 900 seconds"),
    # -- bytes and endpoints (item 10) ----------------------------------------------------
    *_both("command-not-utf8", "enqueue", "q", "echo \udcff", code=USAGE,
           message="enqueue: the command is not valid UTF-8 (character 6)"),
    case("endpoint-port-out-of-range", "enqueue", "q", "true", "--broker", "sqs",
         "--endpoint-url", "http://127.0.0.1:99999", broker="given", code=USAGE,
         message="cannot use endpoint 'http://127.0.0.1:99999': Port out of range"),
    case("endpoint-no-host", "enqueue", "q", "true", "--broker", "sqs", "--endpoint-url",
         "http://", broker="given", code=USAGE, message="cannot use endpoint 'http://'"),
    case("endpoint-from-env-ftp", "enqueue", "q", "true", "--broker", "sqs", broker="given",
         code=USAGE, message="not an http:// or https:// URL",
         env={"AWS_ENDPOINT_URL_SQS": "ftp://127.0.0.1:21"}),
    # -- FIFO ids checked before the pair is made (item 11) -------------------------------
    *_both("group-id-space", "enqueue", "q", "true", "--fifo", "--group-id", "a b",
           code=USAGE, message="--group-id 'a b' cannot be used"),
    case("group-id-129", "enqueue", "q.fifo", "true", "--group-id", "g" * 129, code=USAGE,
         message="SQS takes 1 to 128 characters"),
    case("dedup-id-unicode", "enqueue", "q", "true", "--fifo", "--deduplication-id", "dé",
         broker="sqs", code=USAGE, message="--deduplication-id 'dé'"),
    case("batch-line-without-end", "enqueue-batch", JOBS, code=USAGE,
         message="jobs.txt:3: the line is longer than 1,049,600 bytes",
         files={"jobs.txt": GOOD + b"q " + b"y" * (MIB + 2_000)}),
    case("batch-long-line-in-second-file", "enqueue-batch", JOBS, "{tmp}/more.txt",
         code=USAGE, message="more.txt:3: the line is longer than",
         files={"jobs.txt": GOOD, "more.txt": GOOD + b"\0" * (2 * MIB) + b"\n"}),
    case("batch-group-id-space", "enqueue-batch", JOBS, "--fifo", "--group-id", "a b",
         code=USAGE, message="--group-id 'a b'", files={"jobs.txt": GOOD}),
    # -- validation before the store is made (item 11) ------------------------------------
    case("store-not-made-for-bad-delay", "enqueue", "q", "true", "--delay", "901",
         code=USAGE, message="--delay must be 0 to 900"),
    case("store-not-made-for-bad-idle-for", "idle-queues", "q", "--idle-for", "-1",
         code=USAGE, message="--idle-for must be 0 minutes or more"),
    case("store-not-made-for-save", "monitor", "q", "--once", "--save", code=USAGE,
         message="--save publishes to CloudWatch"),
    case("store-not-made-for-dead-name", "enqueue", "n" * 60, "true", "--dlq",
         "--dlq-suffix", "_" + "d" * 20, own_prefix=False, code=USAGE,
         message="87 characters"),
    # -- AWS configuration (item 12) ------------------------------------------------------
    case("aws-profile-missing", "enqueue", "q", "true", broker="sqs", code=UNAVAILABLE,
         message="cannot use the AWS configuration: The config profile (nonexistent)",
         env={"AWS_PROFILE": "nonexistent"}),
    case("aws-config-unparsable", "worker", "q", "--drain", broker="sqs", code=UNAVAILABLE,
         message="cannot use the AWS configuration: Unable to parse config file",
         not_in="SQS call failed", files={"aws-config": b"[default\nregion"},
         env={"AWS_CONFIG_FILE": "{tmp}/aws-config"}),
]  # fmt: skip


@pytest.mark.parametrize("c", params(CASES))
def test_hostile_input_gets_one_line_a_documented_code_and_does_no_damage(
    c: Case, tmp_path: Path, prefix: str, request: pytest.FixtureRequest
) -> None:
    check_case(c, tmp_path, prefix, request)


def test_batch_from_a_closed_stdin_is_one_line(tmp_path: Path) -> None:
    store = tmp_path / "fresh" / "s.db"
    result = subprocess.run(
        [sys.executable, "-m", "qdone", "enqueue-batch", "-", "--broker", f"sqlite://{store}"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        preexec_fn=lambda: os.close(0),
    )
    assert result.stderr == "qdone: error: cannot read <stdin>: standard input is closed\n"
    assert result.returncode == USAGE
    assert not store.parent.exists()


def test_enqueue_to_a_full_stdout_says_the_job_was_enqueued(tmp_path: Path) -> None:
    """The job is on the queue before its report is written: the error says so."""
    url = f"sqlite://{tmp_path / 's.db'}"
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [sys.executable, "-m", "qdone", "enqueue", "q", "true", "--broker", url],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "was enqueued to q, but reporting it failed: No space left on device" in lines[0]
    assert result.returncode == 1
    broker = SqliteBroker(tmp_path / "s.db")
    messages = broker.receive(broker.get_queue_url("qdone_q"), 10, 30, 0)
    broker.close()
    assert [m.body for m in messages] == ["true"]


def test_empty_qdone_prefix_means_no_prefix_as_the_option_does(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 's.db'}"
    assert (
        run_qdone("enqueue", "a", "true", "--broker", url, env={"QDONE_PREFIX": ""}).returncode == 0
    )
    assert run_qdone("--prefix", "", "enqueue", "b", "true", "--broker", url).returncode == 0
    broker = SqliteBroker(tmp_path / "s.db")
    names = sorted(broker.queue_name(u) for u in broker.list_queues(""))
    broker.close()
    assert names == ["a", "a_failed", "b", "b_failed"]


def test_an_error_quoting_a_page_is_one_line(tmp_path: Path) -> None:
    """A server answering errors with an HTML page: the error stays one line."""
    page = b"<html>\n<head><title>403 Forbidden</title></head>\n<body>\nNo\n</body>\n</html>\n"
    with scripted_server(lambda _action, _body: (403, page)) as endpoint:
        result = run_qdone(
            "enqueue", "q", "true", "--broker", "sqs", "--endpoint-url", endpoint, timeout=60
        )
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("qdone: error: "), result.stderr
    assert "Traceback" not in result.stderr
    assert result.returncode == 1


def test_batch_line_without_end_is_refused_at_its_first_mib(tmp_path: Path) -> None:
    """stdin sends 2 MiB with no line end and stays open: qdone must stop reading
    at the line limit and say so, not wait to read the line whole."""
    store = tmp_path / "fresh" / "s.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "qdone", "enqueue-batch", "-", "--broker", f"sqlite://{store}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None
    try:
        proc.stdin.write(b"q " + b"x" * (2 * MIB))
        proc.stdin.flush()
    except BrokenPipeError:
        pass  # it stopped reading: what is wanted
    try:
        _out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert err.decode().splitlines() == [
        "qdone: error: <stdin>:1: the line is longer than 1,049,600 bytes (a command holds "
        "at most 1,048,576); reading stopped there"
    ]
    assert proc.returncode == USAGE
    assert not store.parent.exists()


def test_batch_from_dev_zero_stays_small(tmp_path: Path) -> None:
    """/dev/zero has no line end, ever: refused within a bounded address space."""

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    result = subprocess.run(
        [sys.executable, "-m", "qdone", "enqueue-batch", "/dev/zero", "--broker",
         f"sqlite://{tmp_path / 's.db'}"],
        capture_output=True, text=True, timeout=60, check=False, preexec_fn=limit_memory,
    )  # fmt: skip
    assert result.stderr.splitlines() == [
        "qdone: error: /dev/zero:1: the line is longer than 1,049,600 bytes (a command "
        "holds at most 1,048,576); reading stopped there"
    ]
    assert result.returncode == USAGE


@pytest.mark.parametrize(
    "args",
    [("monitor", "q", "--once"), ("idle-queues", "q"), ("check", "q")],
    ids=lambda a: a[0],
)
def test_a_damaged_store_is_exit_3_with_one_line(tmp_path: Path, args: tuple[str, ...]) -> None:
    """A store whose pages were overwritten: 'damaged', exit 3, as a file that is
    not a store is (the README's table), never 'failed', exit 1."""
    path = tmp_path / "s.db"
    url = f"sqlite://{path}"
    lines = "".join(f"q echo {n} {'x' * 100}\n" for n in range(2000)).encode()
    assert run_qdone("enqueue-batch", "-", "--broker", url, input=lines).returncode == 0
    with path.open("r+b") as store:
        store.seek(path.stat().st_size // 2)
        store.write(bytes(range(256)) * 32)  # 8 KiB of garbage over its middle pages
    result = run_qdone(*args, "--broker", url)
    lines_out = result.stderr.splitlines()
    assert len(lines_out) == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"the qdone store {path} is damaged" in lines_out[0]
    assert result.returncode == UNAVAILABLE


def test_a_worker_on_a_damaged_store_stops_with_exit_3(tmp_path: Path) -> None:
    """Retrying cannot mend a damaged store: the worker ends with the same line and
    exit 3 as the other commands, instead of warning and retrying forever."""
    path = tmp_path / "s.db"
    url = f"sqlite://{path}"
    lines = "".join(f"q echo {n} {'x' * 100}\n" for n in range(2000)).encode()
    assert run_qdone("enqueue-batch", "-", "--broker", url, input=lines).returncode == 0
    with path.open("r+b") as store:
        store.seek(path.stat().st_size // 2)
        store.write(bytes(range(256)) * 32)  # 8 KiB of garbage over its middle pages
    result = run_qdone("worker", "q", "--drain", "--broker", url, timeout=60)
    last = result.stderr.splitlines()[-1]
    assert last.startswith(f"qdone: error: the qdone store {path} is damaged"), result.stderr
    assert "Traceback" not in result.stderr
    assert result.returncode == UNAVAILABLE
