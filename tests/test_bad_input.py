"""Bad input, across every command: one line on stderr (``qdone: error: ...``), the
documented exit code, no traceback, and no damage: no queue or message in the
store or on moto, input files and foreign stores left byte for byte as they were.

Each case runs ``qdone`` as a subprocess. ``{tmp}`` in a case's arguments is the
test's temp dir; a case whose ``broker`` is ``sqlite`` or ``sqs`` gets the test's
store (``{tmp}/store.db``) or the moto server, and a fresh queue prefix.
"""

from __future__ import annotations

import shutil
import socket
import sqlite3
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from qdone.broker.sqlite_schema import APPLICATION_ID
from qdone.broker.sqs import SqsBroker
from qdone.errors import ExitCode

from .cli_helpers import run_qdone

MIB = 1_048_576
USAGE, FAILURE, UNAVAILABLE = ExitCode.USAGE, ExitCode.FAILURE, ExitCode.UNAVAILABLE
NO_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}
LONG = "n" * 74  # qdone_ + 74 = 80 characters: the failed queue's name is 87


def _random_bytes(path: Path) -> None:
    path.write_bytes(bytes((n * 7919 + 13) % 256 for n in range(16_384)))


def _foreign_db(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("create table invoices (id integer primary key, total real)")
        db.execute("insert into invoices (total) values (12.5)")
    db.close()


def _newer_store(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute(f"pragma application_id = {APPLICATION_ID}")
    db.execute("pragma user_version = 99")
    db.commit()
    db.close()


def _wal_is_a_directory(path: Path) -> None:
    """A store whose WAL file cannot be made: its path is taken by a directory.
    (Permissions would not stop root; this does.)"""
    run_qdone("enqueue", "--broker", f"sqlite://{path}", "q", "echo before")
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    Path(f"{path}-wal").mkdir()


def _immutable_store(path: Path) -> None:
    """A store root cannot write either: the file has the immutable attribute."""
    run_qdone("enqueue", "--broker", f"sqlite://{path}", "q", "echo before")
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(path)], check=False).returncode:
        pytest.skip("chattr +i is not available here")


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    code: ExitCode
    message: str  # part of the one error line
    broker: str = "sqlite"  # "sqlite", "sqs", or "given" (the args name it)
    files: Mapping[str, bytes] = field(default_factory=dict)  # created in {tmp}
    stores: Mapping[str, Callable[[Path], None]] = field(default_factory=dict)  # made in {tmp}
    stdin: bytes | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    own_prefix: bool = True  # False: the default prefix, qdone_ (names are measured)
    not_in: str | None = None  # must not be in the error line
    xfail: str | None = None


def case(id: str, *args: str, code: ExitCode, message: str, **kw: object) -> Case:
    return Case(id, args, code, message, **kw)  # type: ignore[arg-type]


JOBS = "{tmp}/jobs.txt"
GOOD = b"q echo 1\nq echo 2\n"
CLOSED = "http://127.0.0.1:{closed}"

CASES = [
    # -- queue names --------------------------------------------------------------
    case("name-slash", "enqueue", "a/b", "true", code=USAGE, message="queue name 'a/b'"),
    case("name-unicode", "enqueue", "wäre", "true", code=USAGE, message="queue name 'wäre'"),
    case(
        "name-81",
        "enqueue",
        "n" * 75,
        "true",
        own_prefix=False,
        code=USAGE,
        message="81 characters",
    ),
    case(
        "failed-name-87",
        "enqueue",
        LONG,
        "true",
        own_prefix=False,
        code=USAGE,
        message="_failed', 87 characters",
    ),
    case(
        "dead-name-87",
        "enqueue",
        "n" * 60,
        "true",
        "--dlq",
        "--dlq-suffix",
        "_" + "d" * 20,
        own_prefix=False,
        code=USAGE,
        message="_dddddddddddddddddddd', 87 characters",
    ),
    case("fifo-twice", "enqueue", "q.fifo.fifo", "true", code=USAGE, message="'q.fifo.fifo'"),
    case(
        "fifo-name-delay",
        "enqueue",
        "q.fifo",
        "true",
        "--delay",
        "5",
        code=USAGE,
        message="--delay cannot be used with FIFO queues",
    ),
    case(
        "prefix-space",
        "--prefix",
        "my jobs",
        "enqueue",
        "q",
        "true",
        "--broker",
        "sqlite://{tmp}/store.db",
        broker="given",
        code=USAGE,
        message="gives 'my jobsq'",
    ),
    case(
        "fail-suffix-dot",
        "enqueue",
        "q",
        "true",
        "--fail-suffix",
        ".failed",
        own_prefix=False,
        code=USAGE,
        message="'qdone_q.failed'",
    ),
    case("worker-name", "worker", "bad name!", "--drain", code=USAGE, message="'bad name!'"),
    case("check-name", "check", "bad name!", code=USAGE, message="'bad name!'"),
    case("monitor-name", "monitor", "bad name!", "--once", code=USAGE, message="'bad name!'"),
    case("idle-name", "idle-queues", "bad name!", code=USAGE, message="'bad name!'"),
    # -- batch files: names, sizes, encodings ----------------------------------------
    case(
        "batch-bad-name-last",
        "enqueue-batch",
        JOBS,
        code=USAGE,
        message="jobs.txt:3: queue name 'bad!'",
        files={"jobs.txt": GOOD + b"bad! echo 3\n"},
    ),
    case(
        "batch-no-command",
        "enqueue-batch",
        JOBS,
        code=USAGE,
        message="jobs.txt:3: no command after queue name 'lonely'",
        files={"jobs.txt": GOOD + b"lonely   \n"},
    ),
    case(
        "batch-over-1mib",
        "enqueue-batch",
        JOBS,
        code=USAGE,
        message="jobs.txt:3: the command is 1,048,577 bytes",
        files={"jobs.txt": GOOD + b"q " + b"x" * (MIB + 1) + b"\n"},
    ),
    case(
        "batch-over-1mib-in-bytes-not-chars",
        "enqueue-batch",
        JOBS,
        code=USAGE,
        message="jobs.txt:3: the command is 1,048,578 bytes",
        files={"jobs.txt": GOOD + b"q " + "é".encode() * (MIB // 2 + 1) + b"\n"},
    ),
    case(
        "batch-stdin-over-1mib",
        "enqueue-batch",
        "-",
        code=USAGE,
        message="<stdin>:2: the command is 1,048,577 bytes",
        stdin=b"q echo 1\nq " + b"y" * (MIB + 1) + b"\n",
    ),
    case(
        "batch-utf8-queue-name",
        "enqueue-batch",
        JOBS,
        code=USAGE,
        message="jobs.txt:3: not valid UTF-8 (byte 1 of the queue name)",
        files={"jobs.txt": GOOD + b"\xffq echo 3\n"},
    ),
    case(
        "batch-utf8-surrogate",
        "enqueue-batch",
        JOBS,
        code=USAGE,
        message="jobs.txt:3: not valid UTF-8 (byte 6 of the command)",
        files={"jobs.txt": GOOD + b"q echo \xed\xa0\x80\n"},
    ),
    case(
        "batch-utf16-file",
        "enqueue-batch",
        JOBS,
        code=USAGE,
        message="jobs.txt:1: not valid UTF-8",
        files={"jobs.txt": "q echo 1\n".encode("utf-16")},
    ),
    case(
        "batch-latin1-in-second-file",
        "enqueue-batch",
        JOBS,
        "{tmp}/more.txt",
        code=USAGE,
        message="more.txt:2: not valid UTF-8 (byte 4 of the command)",
        files={"jobs.txt": GOOD, "more.txt": b"q echo 3\nq caf\xe9\n"},
    ),
    case(
        "batch-nul-character",
        "enqueue-batch",
        JOBS,
        code=USAGE,
        message="jobs.txt:3:",
        files={"jobs.txt": GOOD + b"q echo a\x00b\n"},
    ),
    # -- option values ----------------------------------------------------------------
    case(
        "batch-delay-901",
        "enqueue-batch",
        JOBS,
        "--delay",
        "901",
        code=USAGE,
        message="--delay must be 0 to 900 seconds, not 901",
        files={"jobs.txt": GOOD},
    ),
    case(
        "batch-delay-negative",
        "enqueue-batch",
        JOBS,
        "--delay",
        "-1",
        code=USAGE,
        message="not -1",
        files={"jobs.txt": GOOD},
    ),
    case(
        "batch-fifo-delay",
        "enqueue-batch",
        JOBS,
        "--fifo",
        "--delay",
        "5",
        code=USAGE,
        message="FIFO",
        files={"jobs.txt": GOOD},
    ),
    case(
        "retention-59",
        "enqueue",
        "q",
        "true",
        "--message-retention-period",
        "59",
        code=USAGE,
        message="'--message-retention-period': 59 is not in the range",
    ),
    case(
        "retries-1000",
        "enqueue",
        "q",
        "true",
        "--retries",
        "1000",
        code=USAGE,
        message="'--retries': 1000",
    ),
    case(
        "fail-delay-901",
        "enqueue-batch",
        JOBS,
        "--fail-delay",
        "901",
        code=USAGE,
        message="'--fail-delay': 901",
        files={"jobs.txt": GOOD},
    ),
    case(
        "dlq-after-0",
        "check",
        "q",
        "--dlq",
        "--dlq-after",
        "0",
        code=USAGE,
        message="'--dlq-after': 0",
    ),
    case(
        "tag-no-key",
        "check",
        "q",
        "--create",
        "--tag",
        "=v",
        code=USAGE,
        message="--tag '=v' is not KEY=VALUE",
    ),
    case(
        "idle-for-4-on-sqs",
        "idle-queues",
        "q",
        "--idle-for",
        "4",
        broker="sqs",
        code=USAGE,
        message="--idle-for must be at least 5 minutes on SQS, not 4",
    ),
    case(
        "idle-for-negative",
        "idle-queues",
        "q",
        "--idle-for",
        "-1",
        code=USAGE,
        message="--idle-for must be 0 minutes or more",
    ),
    case(
        "interval-0",
        "monitor",
        "q",
        "--interval",
        "0",
        code=USAGE,
        message="'--interval': 0.0 is not in the range",
    ),
    case(
        "worker-concurrency-0",
        "worker",
        "q",
        "--concurrency",
        "0",
        code=USAGE,
        message="'--concurrency': 0",
    ),
    case(
        "worker-kill-after-0",
        "worker",
        "q",
        "--kill-after",
        "0",
        code=USAGE,
        message="'--kill-after': 0",
    ),
    case(
        "worker-wait-time-21",
        "worker",
        "q",
        "--wait-time",
        "21",
        code=USAGE,
        message="'--wait-time': 21",
    ),
    case("unknown-command", "frobnicate", code=USAGE, message="No such command 'frobnicate'"),
    case(
        "unknown-option",
        "enqueue",
        "q",
        "true",
        "--colour",
        code=USAGE,
        message="No such option '--colour'",
    ),
    # -- conflicting flags ------------------------------------------------------------
    case(
        "group-per-message-without-fifo",
        "enqueue-batch",
        JOBS,
        "--group-id-per-message",
        code=USAGE,
        message="need --fifo",
        files={"jobs.txt": GOOD},
    ),
    case(
        "group-id-without-fifo",
        "enqueue",
        "q",
        "true",
        "--group-id",
        "g",
        code=USAGE,
        message="need --fifo",
    ),
    case(
        "endpoint-with-sqlite",
        "enqueue-batch",
        JOBS,
        "--endpoint-url",
        "http://x",
        code=USAGE,
        message="--endpoint-url applies only to --broker sqs",
        files={"jobs.txt": GOOD},
    ),
    case(
        "include-failed-without-unpair",
        "idle-queues",
        "q",
        "--include-failed",
        code=USAGE,
        message="--include-failed only works with --unpair",
    ),
    case(
        "save-on-sqlite",
        "monitor",
        "q",
        "--once",
        "--save",
        code=USAGE,
        message="--save publishes to CloudWatch and needs --broker sqs",
    ),
    case(
        "worker-quiet-and-verbose",
        "worker",
        "q",
        "--drain",
        "-q",
        "-v",
        code=USAGE,
        message="--quiet and --verbose cannot be used together",
    ),
    # -- files --------------------------------------------------------------------------
    case(
        "batch-directory",
        "enqueue-batch",
        "{tmp}",
        code=USAGE,
        message="cannot read {tmp}: Is a directory",
    ),
    case(
        "batch-path-under-a-file",
        "enqueue-batch",
        "{tmp}/jobs.txt/more",
        code=USAGE,
        message="cannot read {tmp}/jobs.txt/more: Not a directory",
        files={"jobs.txt": GOOD},
    ),
    case(
        "batch-second-file-missing",
        "enqueue-batch",
        JOBS,
        "{tmp}/missing.txt",
        code=USAGE,
        message="cannot read {tmp}/missing.txt: No such file or directory",
        files={"jobs.txt": GOOD},
    ),
    # -- SQS: credentials, endpoints, region -------------------------------------------
    case(
        "batch-no-credentials",
        "enqueue-batch",
        JOBS,
        broker="sqs",
        code=UNAVAILABLE,
        message="no usable AWS credentials",
        files={"jobs.txt": GOOD},
        env=NO_CREDENTIALS,
    ),
    case(
        "idle-no-credentials",
        "idle-queues",
        "q",
        broker="sqs",
        code=UNAVAILABLE,
        message="no usable AWS credentials",
        env=NO_CREDENTIALS,
    ),
    case(
        "monitor-no-credentials",
        "monitor",
        "q",
        "--once",
        broker="sqs",
        code=UNAVAILABLE,
        message="no usable AWS credentials",
        env=NO_CREDENTIALS,
    ),
    case(
        "worker-no-credentials",
        "worker",
        "q",
        "--drain",
        broker="sqs",
        code=UNAVAILABLE,
        message="no usable AWS credentials",
        env=NO_CREDENTIALS,
    ),
    case(
        "batch-unreachable",
        "enqueue-batch",
        JOBS,
        "--broker",
        "sqs",
        "--endpoint-url",
        CLOSED,
        broker="given",
        code=UNAVAILABLE,
        message=f"cannot reach SQS at {CLOSED}",
        files={"jobs.txt": GOOD},
    ),
    case(
        "check-unreachable",
        "check",
        "q",
        "--broker",
        "sqs",
        "--endpoint-url",
        CLOSED,
        broker="given",
        code=UNAVAILABLE,
        message="cannot reach SQS",
    ),
    case(
        "worker-unreachable",
        "worker",
        "q",
        "--drain",
        "--broker",
        "sqs",
        "--endpoint-url",
        CLOSED,
        broker="given",
        code=UNAVAILABLE,
        message="cannot reach SQS",
    ),
    case(
        "endpoint-not-a-url",
        "enqueue",
        "q",
        "true",
        "--broker",
        "sqs",
        "--endpoint-url",
        "not a url",
        broker="given",
        code=USAGE,
        message="cannot use endpoint 'not a url'",
    ),
    case(
        "bad-region",
        "enqueue",
        "q",
        "true",
        "--broker",
        "sqs",
        "--region",
        "bad region!",
        broker="given",
        code=USAGE,
        message="'bad region!'",
        not_in="endpoint None",
    ),
    # -- stores -------------------------------------------------------------------------
    case(
        "store-random-bytes",
        "enqueue",
        "q",
        "true",
        "--broker",
        "sqlite://{tmp}/rand.db",
        broker="given",
        code=UNAVAILABLE,
        message="{tmp}/rand.db is not a qdone store",
        stores={"rand.db": _random_bytes},
    ),
    case(
        "worker-random-bytes",
        "worker",
        "q",
        "--drain",
        "--broker",
        "sqlite://{tmp}/rand.db",
        broker="given",
        code=UNAVAILABLE,
        message="is not a qdone store",
        stores={"rand.db": _random_bytes},
    ),
    case(
        "monitor-random-bytes",
        "monitor",
        "q",
        "--once",
        "--broker",
        "sqlite://{tmp}/rand.db",
        broker="given",
        code=UNAVAILABLE,
        message="is not a qdone store",
        stores={"rand.db": _random_bytes},
    ),
    case(
        "batch-foreign-db",
        "enqueue-batch",
        JOBS,
        "--broker",
        "sqlite://{tmp}/app.db",
        broker="given",
        code=UNAVAILABLE,
        message="another application's database",
        files={"jobs.txt": GOOD},
        stores={"app.db": _foreign_db},
    ),
    case(
        "check-foreign-db",
        "check",
        "q",
        "--create",
        "--broker",
        "sqlite://{tmp}/app.db",
        broker="given",
        code=UNAVAILABLE,
        message="another application's database",
        stores={"app.db": _foreign_db},
    ),
    case(
        "idle-newer-store",
        "idle-queues",
        "q",
        "--broker",
        "sqlite://{tmp}/new.db",
        broker="given",
        code=UNAVAILABLE,
        message="newer than this qdone",
        stores={"new.db": _newer_store},
    ),
    case(
        "store-wal-is-a-directory",
        "enqueue",
        "q",
        "true",
        "--broker",
        "sqlite://{tmp}/ro.db",
        broker="given",
        code=UNAVAILABLE,
        message="cannot write the qdone store {tmp}/ro.db",
        stores={"ro.db": _wal_is_a_directory},
    ),
    case(
        "store-immutable",
        "enqueue-batch",
        JOBS,
        "--broker",
        "sqlite://{tmp}/ro.db",
        broker="given",
        code=UNAVAILABLE,
        message="cannot write the qdone store {tmp}/ro.db",
        files={"jobs.txt": GOOD},
        stores={"ro.db": _immutable_store},
    ),
    case(
        "store-under-a-file",
        "enqueue",
        "q",
        "true",
        "--broker",
        "sqlite://{tmp}/jobs.txt/store.db",
        broker="given",
        code=UNAVAILABLE,
        message="the qdone store {tmp}/jobs.txt/store.db",
        files={"jobs.txt": GOOD},
    ),
    # -- broker URLs ------------------------------------------------------------------------
    case(
        "broker-sqlite-colon",
        "--broker",
        "sqlite:store.db",
        "enqueue",
        "q",
        "true",
        broker="given",
        code=USAGE,
        message="unknown broker 'sqlite:store.db'",
    ),
    case(
        "broker-relative-path",
        "--broker",
        "sqlite://store.db",
        "enqueue",
        "q",
        "true",
        broker="given",
        code=USAGE,
        message="has no path",
    ),
    case(
        "broker-from-env",
        "monitor",
        "q",
        "--once",
        broker="given",
        code=USAGE,
        message="unknown broker 'redis://localhost'",
        env={"QDONE_BROKER": "redis://localhost"},
    ),
]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _snapshot(tmp: Path) -> dict[str, bytes]:
    """Every regular file under ``tmp``, by path, with its bytes."""
    return {str(p): p.read_bytes() for p in sorted(tmp.rglob("*")) if p.is_file()}


def _sqlite_queues(path: Path) -> list[tuple[str, int]]:
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute(
            "select name, (select count(*) from messages m where m.qid = q.qid) from queues q"
        ).fetchall()
    finally:
        db.close()


@pytest.mark.parametrize(
    "c",
    [
        pytest.param(c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=c.xfail)])
        if c.xfail
        else pytest.param(c, id=c.id)
        for c in CASES
    ],
)
def test_bad_input_gets_one_line_a_documented_code_and_does_no_damage(
    c: Case, tmp_path: Path, prefix: str, request: pytest.FixtureRequest
) -> None:
    tmp = tmp_path / "work"
    tmp.mkdir()
    for name, content in c.files.items():
        (tmp / name).write_bytes(content)
    try:
        _run_case(c, tmp, prefix, request)
    finally:
        chattr = shutil.which("chattr")
        if chattr is not None and "ro.db" in c.stores:
            subprocess.run([chattr, "-i", str(tmp / "ro.db")], check=False)


def _run_case(c: Case, tmp: Path, prefix: str, request: pytest.FixtureRequest) -> None:
    for name, make in c.stores.items():
        make(tmp / name)
    values = {"tmp": str(tmp), "closed": str(_closed_port())}
    args = [arg.format(**values) for arg in c.args]
    if c.broker == "sqlite":
        args += ["--broker", f"sqlite://{tmp / 'store.db'}"]
        args += ["--prefix", prefix] if c.own_prefix else []
    elif c.broker == "sqs":
        moto = request.getfixturevalue("moto_endpoint")
        args += ["--broker", "sqs", "--endpoint-url", moto, "--prefix", prefix]
    before = _snapshot(tmp)
    result = run_qdone(*args, input=c.stdin, env=c.env, timeout=60)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("qdone: error: "), result.stderr
    assert c.message.format(**values) in lines[0]
    assert c.not_in is None or c.not_in not in lines[0]
    assert result.returncode == c.code, result.stderr
    # No damage: no file changed (stores included), no queue made anywhere.
    after = _snapshot(tmp)
    assert {p: after.get(p) for p in before} == before
    assert _sqlite_queues(tmp / "store.db") == []
    assert _sqlite_queues(tmp.parent / "xdg" / "qdone" / "qdone.db") == []
    if c.broker == "sqs":
        direct = SqsBroker(
            region="us-east-1", endpoint_url=request.getfixturevalue("moto_endpoint")
        )
        assert direct.list_queues(prefix) == []
