"""What the bad-input tests share: a ``Case`` (a command line and the one error
line it must give), and ``check_case``, which runs it and checks that it did no
damage: one line on stderr (``qdone: error: ...``), the documented exit code, no
traceback; no queue or message in the store or on moto, no store made where there
was none, input files and foreign stores left byte for byte as they were.

Each case runs ``qdone`` as a subprocess. ``{tmp}`` in a case's arguments is the
test's temp dir; a case whose ``broker`` is ``sqlite`` or ``sqs`` gets a store in a
directory that does not exist yet (``{tmp}/fresh/store.db``, which must still not
exist after) or the moto server, and a fresh queue prefix.
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


def random_bytes(path: Path) -> None:
    path.write_bytes(bytes((n * 7919 + 13) % 256 for n in range(16_384)))


def foreign_db(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("create table invoices (id integer primary key, total real)")
        db.execute("insert into invoices (total) values (12.5)")
    db.close()


def newer_store(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute(f"pragma application_id = {APPLICATION_ID}")
    db.execute("pragma user_version = 99")
    db.commit()
    db.close()


def wal_is_a_directory(path: Path) -> None:
    """A store whose WAL file cannot be made: its path is taken by a directory.
    (Permissions would not stop root; this does.)"""
    run_qdone("enqueue", "--broker", f"sqlite://{path}", "q", "echo before")
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    Path(f"{path}-wal").mkdir()


def immutable_store(path: Path) -> None:
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


def params(cases: list[Case]) -> list[object]:
    """``cases`` as pytest parameters, with their ids (and xfail marks)."""
    return [
        pytest.param(c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=c.xfail)])
        if c.xfail
        else pytest.param(c, id=c.id)
        for c in cases
    ]


def check_case(c: Case, tmp_path: Path, prefix: str, request: pytest.FixtureRequest) -> None:
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
        args += ["--broker", f"sqlite://{tmp / 'fresh' / 'store.db'}"]
        args += ["--prefix", prefix] if c.own_prefix else []
    elif c.broker == "sqs":
        moto = request.getfixturevalue("moto_endpoint")
        args += ["--broker", "sqs", "--endpoint-url", moto, "--prefix", prefix]
    before = _snapshot(tmp)
    env = {name: value.format(**values) for name, value in c.env.items()}
    result = run_qdone(*args, input=c.stdin, env=env, timeout=60)
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
    assert not (tmp / "fresh").exists(), "a store was made for a command that failed its checks"
    assert _sqlite_queues(tmp.parent / "xdg" / "qdone" / "qdone.db") == []
    if c.broker == "sqs":
        direct = SqsBroker(
            region="us-east-1", endpoint_url=request.getfixturevalue("moto_endpoint")
        )
        assert direct.list_queues(prefix) == []
