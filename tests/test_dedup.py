"""Deduplication: Node qdone 2.x's id rule, and windows and run claims in the SQLite
store (the same semantics as in Redis, tested in tests/cache/test_dedup_redis.py)."""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from qdone.broker.base import Message, SendEntry
from qdone.broker.sqlite import SqliteBroker
from qdone.broker.sqlite_dedup import SqliteDedup
from qdone.dedup import (
    ATTRIBUTE,
    TOKEN_ATTRIBUTE,
    Deduper,
    DedupSettings,
    RunClaims,
    dedup_id,
)

from .cli_helpers import run_qdone


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Iterator[SqliteDedup]:
    broker = SqliteBroker(tmp_path / "s.db", clock=clock)
    yield broker.dedup()
    broker.close()


# -- the id: Node qdone 2.x's getDeduplicationId --------------------------------------


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        # Node qdone 2.0.x's own test cases.
        (
            "a-zA-Z0-9!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
            "a-zA-Z0-9!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
        ),
        ("éø¢‡ asdf", "_____asdf"),
        (" ls -al    \t", "ls_-al"),
        ("asdf " * 1000, "asdf_" * 16 + "...sha1:ee08dd2964d1907d80f1ef743a595b5834c31170"),
        # JavaScript strings are UTF-16: a character beyond U+FFFF is two units.
        ("run 🚀", "run___"),
        ("\u3000ls\xa0-l\n", "ls_-l"),
    ],
)
def test_dedup_id_as_node_qdone_derives_it(command: str, expected: str) -> None:
    assert dedup_id(command) == expected


def test_long_ids_are_128_characters_and_hash_the_whole() -> None:
    a, b = dedup_id("x" * 200 + "a"), dedup_id("x" * 200 + "b")
    assert len(a) == len(b) == 128
    assert a != b
    assert a.endswith(hashlib.sha1(("x" * 200 + "a").encode()).hexdigest())
    assert len(dedup_id("y" * 128)) == 128 and dedup_id("y" * 128) == "y" * 128


# -- enqueue side -----------------------------------------------------------------


def entries(*bodies: str) -> list[SendEntry]:
    return [SendEntry(str(n), body) for n, body in enumerate(bodies)]


def test_first_copy_in_a_window_is_sent(store: SqliteDedup, clock: Clock) -> None:
    deduper = Deduper(store, DedupSettings(period=60))
    first = deduper.admit(entries("echo a", "echo b", "echo a"), fifo=False)
    assert (first.keep, first.skipped, first.ids) == ([0, 1], 1, ["echo_a", "echo_b", "echo_a"])
    assert [e.attributes[ATTRIBUTE] for e in first.entries] == ["echo_a", "echo_b"]
    tokens = {e.attributes[TOKEN_ATTRIBUTE] for e in first.entries}
    assert len(tokens) == 2
    assert all(e.dedup_id is None for e in first.entries)  # standard queue: no SQS id
    assert deduper.admit(entries("echo a"), fifo=False).skipped == 1
    assert store.copies("echo_a") == 3
    clock.now += 60  # the window has ended
    assert deduper.admit(entries("echo a"), fifo=False).keep == [0]


def test_fifo_gets_a_fresh_sqs_deduplication_id(store: SqliteDedup) -> None:
    admission = Deduper(store, DedupSettings()).admit(
        [SendEntry("0", "echo f", "g", "user-id")], fifo=True
    )
    (entry,) = admission.entries
    assert entry.dedup_id not in (None, "user-id", "echo_f")
    assert entry.attributes[ATTRIBUTE] == "echo_f"


def test_explicit_and_per_message_ids(store: SqliteDedup) -> None:
    explicit = Deduper(store, DedupSettings(explicit_id="nightly"))
    assert explicit.admit(entries("echo 1", "echo 2"), fifo=False).ids == ["nightly"] * 2
    ids = iter(["u1", "t1", "u2", "t2"])
    per_message = Deduper(store, DedupSettings(id_per_message=True), ids=lambda: next(ids))
    admission = per_message.admit(entries("echo 1", "echo 1"), fifo=False)
    assert (admission.ids, admission.skipped) == (["u1", "u2"], 0)


def test_release_reopens_a_window(store: SqliteDedup) -> None:
    deduper = Deduper(store, DedupSettings())
    admission = deduper.admit(entries("echo r"), fifo=False)
    deduper.release(admission.entries)
    assert deduper.admit(entries("echo r"), fifo=False).keep == [0]


# -- worker side ----------------------------------------------------------------------


def message(message_id: str, ident: str | None, token: str | None = "tok") -> Message:
    attributes = {}
    if ident is not None:
        attributes[ATTRIBUTE] = ident
        if token is not None:
            attributes[TOKEN_ATTRIBUTE] = token
    return Message("url", message_id, "r", "cmd", 1, 0.0, attributes=attributes)


def test_copies_of_one_send_run_once(store: SqliteDedup) -> None:
    claims = RunClaims(store, done_ttl=300)
    first, copy = message("m1", "id"), message("m2", "id")
    assert claims.claim(first, ttl=60)
    assert not claims.claim(copy, ttl=60)  # while the first runs
    assert claims.claim(first, ttl=60)  # the same message received again: still its own
    claims.finish(first, succeeded=True)
    assert not claims.claim(copy, ttl=60)  # after it succeeded
    assert claims.claim(message("m3", "id", token="next-send"), ttl=60)


def test_failure_releases_the_claim_and_keeps_the_window(store: SqliteDedup) -> None:
    deduper = Deduper(store, DedupSettings())
    deduper.admit(entries("cmd"), fifo=False)
    claims = RunClaims(store)
    first, copy = message("m1", "cmd"), message("m2", "cmd")
    assert claims.claim(first, ttl=60)
    claims.finish(first, succeeded=False)
    assert claims.claim(copy, ttl=60)  # the retry may run
    assert store.copies("cmd") == 1


def test_success_closes_the_window(store: SqliteDedup) -> None:
    deduper = Deduper(store, DedupSettings())
    deduper.admit(entries("cmd"), fifo=False)
    claims = RunClaims(store)
    m = message("m1", "cmd")
    claims.claim(m, ttl=60)
    claims.finish(m, succeeded=True)
    assert store.copies("cmd") == 0
    assert deduper.admit(entries("cmd"), fifo=False).keep == [0]


def test_claims_expire(store: SqliteDedup, clock: Clock) -> None:
    claims = RunClaims(store, done_ttl=30)
    assert claims.claim(message("m1", "x"), ttl=60)
    clock.now += 61  # the worker that held it died
    assert claims.claim(message("m2", "x"), ttl=60)
    claims.finish(message("m2", "x"), succeeded=True)
    clock.now += 31
    assert claims.claim(message("m3", "x"), ttl=60)


def test_messages_without_an_id_always_run(store: SqliteDedup) -> None:
    claims = RunClaims(store)
    assert claims.claim(message("m1", None), ttl=60)
    assert claims.claim(message("m2", None), ttl=60)


def test_node_messages_without_token_claim_while_running(store: SqliteDedup) -> None:
    claims = RunClaims(store)
    first = message("m1", "node", token=None)
    assert claims.claim(first, ttl=60)
    assert not claims.claim(message("m2", "node", token=None), ttl=60)
    claims.finish(first, succeeded=True)
    # Without a token a later enqueue cannot be told from a copy: it runs.
    assert claims.claim(message("m3", "node", token=None), ttl=60)


# -- end to end on the SQLite store ---------------------------------------------------


def test_three_enqueues_one_job_then_again(tmp_path: Path) -> None:
    store = f"sqlite://{tmp_path / 's.db'}"
    runs = tmp_path / "runs"
    command = f"echo ran >> {runs}"
    for _ in range(3):
        result = run_qdone("--broker", store, "enqueue", "--external-dedup", "q", command)
        assert result.returncode == 0, result.stderr
    assert '"DUPLICATE_SKIPPED"' in result.stdout
    result = run_qdone("--broker", store, "-v", "enqueue", "--external-dedup", "q", command)
    assert "Skipped 1 duplicate" in result.stderr
    result = run_qdone("--broker", store, "worker", "q", "--drain")
    assert result.returncode == 0, result.stderr
    assert runs.read_text() == "ran\n"
    result = run_qdone("--broker", store, "enqueue", "--external-dedup", "q", command)
    assert '"ENQUEUED"' in result.stdout
    run_qdone("--broker", store, "worker", "q", "--drain")
    assert runs.read_text() == "ran\nran\n"


def test_batch_reports_skipped_lines(tmp_path: Path) -> None:
    store = f"sqlite://{tmp_path / 's.db'}"
    lines = b"a echo 1\na echo 1\nb echo 1\na echo 2\nb echo 1\n"
    result = run_qdone(
        "--broker", store, "-v", "enqueue-batch", "--external-dedup", "-", input=lines
    )
    assert result.returncode == 0, result.stderr
    # The window is the command's, whatever the queue (Node qdone's key has no queue).
    assert "Skipped 3 duplicates" in result.stderr
    assert "Enqueued 2 jobs" in result.stderr


def test_a_store_whose_windows_fail_warns_and_sends(tmp_path: Path) -> None:
    """Deduplication's warning is the command's output (a JSON line when quiet), and
    the job is sent anyway (``--dedup-on-error send``)."""
    path = tmp_path / "s.db"
    store = f"sqlite://{path}"
    assert run_qdone("--broker", store, "enqueue", "q", "true").returncode == 0
    with sqlite3.connect(path) as conn:  # a view cannot be indexed: the windows fail
        conn.execute("create view dedup_windows as select 1 as id, 1 as copies, 1 as expires")
    result = run_qdone("--broker", store, "-q", "enqueue", "--external-dedup", "q", "true")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["event"] for e in events] == ["WARNING", "WARNING", "ENQUEUED"]
    assert "deduplication in the qdone store" in events[0]["message"]
    assert "sending anyway" in events[1]["message"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--dedup-id-per-message", "--deduplication-id", "x"), "not both"),
        (("--dedup-period", "0"), "--dedup-period"),
    ],
)
def test_bad_dedup_options(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    store = f"sqlite://{tmp_path / 's.db'}"
    result = run_qdone("--broker", store, "enqueue", "--external-dedup", *args, "q", "true")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert message in line


def test_sqs_needs_a_cache(moto_endpoint: str) -> None:
    result = run_qdone(
        "--broker", "sqs", "--endpoint-url", moto_endpoint,
        "enqueue", "--external-dedup", "q", "true",
    )  # fmt: skip
    assert result.returncode == 2
    assert "--external-dedup needs --cache-uri" in result.stderr


def test_stats_pruned_now_and_then(store: SqliteDedup) -> None:
    pruned: list[int] = []

    class Rng(random.Random):
        def random(self) -> float:
            return next(draws)

    draws = iter([0.5, 0.005])
    claims = RunClaims(store, prune_stats=lambda: pruned.append(1), rng=Rng())
    for n in range(2):
        m = message(f"m{n}", f"id{n}")
        claims.claim(m, ttl=60)
        claims.finish(m, succeeded=True)
    assert pruned == [1]
