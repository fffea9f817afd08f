"""The ``qdone`` command end to end: options, output, errors and exit codes."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from qdone import __version__
from qdone.errors import ExitCode

from .cli_helpers import run_qdone


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_version() -> None:
    result = run_qdone("--version")
    assert result.returncode == 0
    assert __version__ in result.stdout


def test_local_enqueue_does_not_import_the_aws_sdk(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from qdone.cli import main\n"
        "try:\n"
        f"    main(['enqueue', '--broker', 'sqlite:///{tmp_path}/s.db', 'q', 'true'])\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_enqueue_on_the_default_store_with_no_configuration(tmp_path: Path) -> None:
    result = run_qdone("enqueue", "myQueue", "echo hi", "-v")
    assert result.returncode == 0, result.stderr
    store = tmp_path / "xdg" / "qdone" / "qdone.db"
    assert f"SQLite store {store}" in result.stderr
    assert "Created queue qdone_myQueue_failed" in result.stderr
    assert "Created queue qdone_myQueue\n" in result.stderr
    assert "Enqueued job " in result.stderr
    assert store.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("where", ["before", "after", "env"])
def test_global_options_before_after_and_from_env(tmp_path: Path, where: str) -> None:
    url = f"sqlite:///{tmp_path}/g.db"
    args = ["enqueue", "q", "true", "-v"]
    env = {}
    if where == "before":
        args = ["--broker", url, "--prefix", "p_", *args]
    elif where == "after":
        args = [*args, "--broker", url, "--prefix", "p_"]
    else:
        env = {"QDONE_BROKER": url, "QDONE_PREFIX": "p_"}
    result = run_qdone(*args, env=env)
    assert result.returncode == 0, result.stderr
    assert "Created queue p_q_failed" in result.stderr
    assert (tmp_path / "g.db").exists()


def test_quiet_enqueue_prints_a_json_event(sqlite_url: str) -> None:
    result = run_qdone("enqueue", "--broker", sqlite_url, "q", "true")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    event = json.loads(result.stdout)
    assert event["event"] == "ENQUEUED"
    assert event["queue"] == "qdone_q"  # the full name, as in every event


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["enqueue", "bad name", "true"], ExitCode.USAGE, "queue name 'bad name'"),
        (["enqueue", "q", ""], ExitCode.USAGE, "the command is empty"),
        (["enqueue", "q", "true", "--delay", "901"], ExitCode.USAGE, "0 to 900"),
        (["enqueue", "--fifo", "q", "true", "--delay", "1"], ExitCode.USAGE, "FIFO"),
        (["enqueue", "q", "true", "--region", "eu-west-1"], ExitCode.USAGE, "--region applies"),
        (["--broker", "redis://x", "enqueue", "q", "true"], ExitCode.USAGE, "unknown broker"),
        (["enqueue", "q", "true", "-q", "-v"], ExitCode.USAGE, "--quiet and --verbose"),
        (["enqueue", "q", "true", "--tag", "novalue"], ExitCode.USAGE, "KEY=VALUE"),
        (["enqueue", "q", "true", "--retries", "-1"], ExitCode.USAGE, "--retries"),
        (["enqueue-batch", "/nonexistent/jobs.txt"], ExitCode.USAGE, "cannot read"),
    ],
)
def test_bad_input_gets_one_clear_line(args: list[str], code: int, message: str) -> None:
    result = run_qdone(*args)
    assert result.returncode == code, result.stderr
    assert message in one_error_line(result)


def test_batch_rejects_bad_lines_by_file_and_line(tmp_path: Path, sqlite_url: str) -> None:
    jobs = tmp_path / "jobs.txt"
    jobs.write_bytes(b"q echo 1\n# comment\nq echo \xff\n")
    result = run_qdone("enqueue-batch", "--broker", sqlite_url, str(jobs))
    assert result.returncode == ExitCode.USAGE
    assert f"{jobs}:3: not valid UTF-8" in one_error_line(result)
    assert not Path(sqlite_url[len("sqlite://") :]).exists()  # nothing was enqueued


def test_batch_from_stdin_and_files(tmp_path: Path, sqlite_url: str) -> None:
    jobs = tmp_path / "jobs.txt"
    jobs.write_text("a echo 1\nb echo 2\n\na echo 3\n")
    result = run_qdone(
        "enqueue-batch", str(jobs), "-", "--broker", sqlite_url, "-v", input=b"b echo 4\n"
    )
    assert result.returncode == 0, result.stderr
    assert "Enqueued 4 jobs" in result.stderr
    assert "Used " in result.stderr


def test_not_a_qdone_store(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("create table t (x)")
    result = run_qdone("enqueue", "--broker", f"sqlite:///{other}", "q", "true")
    assert result.returncode == ExitCode.UNAVAILABLE
    assert str(other) in one_error_line(result)


def test_sqs_without_credentials_gets_a_hint(moto_endpoint: str) -> None:
    env = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}
    result = run_qdone(
        "enqueue", "--broker", "sqs", "--endpoint-url", moto_endpoint, "q", "true", env=env
    )
    assert result.returncode == ExitCode.UNAVAILABLE, result.stderr
    assert "credentials" in one_error_line(result).lower()


def test_sqs_unreachable_endpoint(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run_qdone(
        "enqueue", "--broker", "sqs", "--endpoint-url", f"http://127.0.0.1:{port}", "q", "true"
    )
    assert result.returncode == ExitCode.UNAVAILABLE, result.stderr
    assert f"127.0.0.1:{port}" in one_error_line(result)


def test_enqueue_to_moto_with_verbose_call_counts(moto_endpoint: str, prefix: str) -> None:
    args = ["--broker", "sqs", "--endpoint-url", moto_endpoint, "--prefix", prefix, "-v"]
    first = run_qdone("enqueue", "q", "echo hi", *args)
    assert first.returncode == 0, first.stderr
    assert f"Using SQS at {moto_endpoint}" in first.stderr
    assert "Used 4 SQS API calls: CreateQueue 2, GetQueueUrl 1, SendMessage 1" in first.stderr
    second = run_qdone("enqueue", "q", "echo hi", *args)
    assert "Used 2 SQS API calls: GetQueueUrl 1, SendMessage 1" in second.stderr
