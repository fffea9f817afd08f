"""The smaller points of issue 10, each with its test."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from .sites import QDONE, Site


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([QDONE, *args], env=env, capture_output=True, text=True, timeout=60)


# -- QDONE_REGION / QDONE_ENDPOINT_URL in the environment, with the SQLite store ----


def test_sqs_settings_in_the_environment_do_not_stop_sqlite(sqlite_url: str) -> None:
    env = {
        **os.environ,
        "QDONE_BROKER": sqlite_url,
        "QDONE_REGION": "eu-west-1",
        "QDONE_ENDPOINT_URL": "http://127.0.0.1:9",
    }
    result = run(env, "enqueue", "q", "true")
    assert result.returncode == 0, result.stderr
    assert run(env, "worker", "--drain", "-w", "0", "q").returncode == 0


def test_an_explicit_region_with_sqlite_is_still_an_error(sqlite_url: str) -> None:
    env = {**os.environ, "QDONE_BROKER": sqlite_url}
    for args in (["--region", "eu-west-1", "enqueue"], ["enqueue", "--region", "eu-west-1"]):
        result = run(env, *args, "q", "true")
        assert result.returncode == 2
        assert "--region applies only to --broker sqs" in result.stderr


def test_the_region_from_the_environment_reaches_sqs(moto_endpoint: str, prefix: str) -> None:
    env = {
        **os.environ,
        "QDONE_BROKER": "sqs",
        "QDONE_REGION": "eu-west-1",
        "QDONE_ENDPOINT_URL": moto_endpoint,
        "QDONE_PREFIX": prefix,
    }
    result = run(env, "-v", "enqueue", "q", "true")
    assert result.returncode == 0, result.stderr
    assert "eu-west-1" in result.stderr.splitlines()[0]


# -- the JSON `queue` field: the queue's full name in every event --------------------


def test_every_json_event_names_the_queue_by_its_full_name(sqlite_url: str) -> None:
    env = {**os.environ, "QDONE_BROKER": sqlite_url}
    enqueued = run(env, "enqueue", "myQueue", "true")
    worked = run(env, "worker", "--drain", "-w", "0", "myQueue")
    counted = run(env, "monitor", "myQueue", "--once", "--json")
    names = {}
    for result in (enqueued, worked, counted):
        assert result.returncode == 0, result.stderr
        for line in result.stdout.splitlines():
            event = json.loads(line)
            if "queue" in event:
                names[event["event"]] = event["queue"]
    assert names == {
        "ENQUEUED": "qdone_myQueue",
        "JOB_SUCCEEDED": "qdone_myQueue",
        "QUEUE_COUNTS": "qdone_myQueue",
    }


# -- output cut to its last 64 KiB says so ------------------------------------------


def test_output_cut_to_its_tail_says_how_much_was_dropped(sqlite_url: str) -> None:
    env = {**os.environ, "QDONE_BROKER": sqlite_url}
    # 100,000 bytes on stdout, 10 on stderr; then the same job failing
    big = "head -c 100000 /dev/zero | tr '\\\\0' x; echo 123456789 >&2"
    assert run(env, "enqueue", "cut", big).returncode == 0
    assert run(env, "enqueue", "cut", f"{big}; exit 1").returncode == 0
    result = run(env, "worker", "--drain", "-w", "0", "cut")
    by = {e["event"]: e for e in map(json.loads, result.stdout.splitlines())}
    for name in ("JOB_SUCCEEDED", "JOB_FAILED"):
        event = by[name]
        assert len(event["stdout"]) == 65_536
        assert event["stdoutDropped"] == 100_000 - 65_536
        assert "stderrDropped" not in event and event["stderr"] == "123456789\n"
    human = run(env, "-v", "enqueue", "cut", big)
    assert human.returncode == 0
    verbose = run(env, "-v", "worker", "--drain", "-w", "0", "cut")
    assert "stdout (the last 65,536 of 100,000 bytes):" in verbose.stderr


# -- enqueue-batch to a store on a full disk -----------------------------------------


def on_a_small_disk(directory: Path, command: str) -> list[str]:
    """``command`` run in a mount namespace of its own, where ``directory`` is a
    1 MiB tmpfs (a full disk, soon)."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1)")
    probe = subprocess.run(["unshare", "-r", "-m", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip("user and mount namespaces are not available here")
    mount = f"mount -t tmpfs -o size=1m none {directory}"
    return ["unshare", "-r", "-m", "sh", "-c", f"{mount} && {command}"]


def test_a_full_disk_during_enqueue_batch_is_one_clear_report(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    batch = tmp_path / "jobs.txt"
    batch.write_text("".join(f"q echo {n} {'padding ' * 8}\n" for n in range(1, 20_001)))
    env = {**os.environ, "QDONE_BROKER": f"sqlite://{disk}/store.db"}
    then_count = f"{QDONE} monitor q --once --json"
    args = on_a_small_disk(disk, f"{QDONE} enqueue-batch {batch}; echo exit=$? >&2; {then_count}")
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    err = result.stderr.splitlines()
    assert "Traceback" not in result.stderr
    assert len(err) <= 4, err[:5]
    assert "may or may not" not in result.stderr
    assert any("exit=" in line and "exit=0" not in line for line in err)
    counts = next(json.loads(x) for x in result.stdout.splitlines() if "QUEUE_COUNTS" in x)
    enqueued = counts["visible"]
    assert 0 < enqueued < 20_000
    assert f"{20_000 - enqueued} of 20000 lines were not enqueued" in result.stderr
    assert f"{batch}:{enqueued + 1}-20000" in result.stderr


# -- monitor (and other readers) on a read-only store --------------------------------


def in_namespace(script: str) -> list[str]:
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1)")
    probe = subprocess.run(["unshare", "-r", "-m", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip("user and mount namespaces are not available here")
    return ["unshare", "-r", "-m", "sh", "-c", script]


def test_monitor_reads_a_store_on_a_read_only_file_system(tmp_path: Path) -> None:
    store = tmp_path / "ro"
    store.mkdir()
    env = {**os.environ, "QDONE_BROKER": f"sqlite://{store}/store.db"}
    assert run(env, "enqueue", "q", "true").returncode == 0
    read_only = f"mount --bind {store} {store} && mount -o remount,ro,bind {store}"
    script = (
        f"{read_only} && {QDONE} monitor q --once --json && "
        f"{QDONE} enqueue q true; echo enqueue-exit=$? >&2"
    )
    result = subprocess.run(in_namespace(script), env=env, capture_output=True, text=True)
    counts = next(json.loads(x) for x in result.stdout.splitlines() if "QUEUE_COUNTS" in x)
    assert counts["visible"] == 1, result.stderr
    # A command that writes still says clearly that it cannot.
    assert "enqueue-exit=3" in result.stderr
    assert "qdone: error: cannot write the qdone store" in result.stderr
    assert "Traceback" not in result.stderr


# -- --retries on an existing queue with another maxReceiveCount ----------------------


def warnings_of(stdout: str) -> list[str]:
    return [
        str(e["message"]) for e in map(json.loads, stdout.splitlines()) if e["event"] == "WARNING"
    ]


def test_retries_that_an_existing_queue_does_not_have_are_reported(site: Site) -> None:
    site.enqueue("rt", "true")  # maxReceiveCount 1
    once = site.qdone("enqueue", "--retries", "3", "rt", "true")
    batch = site.qdone("enqueue-batch", "--retries", "3", "-", input="rt true\n")
    for result in (once, batch):
        assert result.returncode == 0, result.stderr
        [warning] = warnings_of(result.stdout)
        assert "maxReceiveCount 1" in warning and "--retries 3" in warning
        assert "qdone check rt --retries 3 --overwrite" in warning
    assert site.counts("rt") == (3, 0)  # the jobs are enqueued all the same
    same = site.qdone("enqueue", "--retries", "0", "rt", "true")
    assert warnings_of(same.stdout) == []


# -- a named queue created after the worker started ----------------------------------


def test_a_named_queue_created_after_the_worker_started_is_seen_within_seconds(
    site: Site, tmp_path: Path
) -> None:
    """Named queues that do not exist are looked for again every 5 s (wildcards
    are listed again every minute)."""
    mark = tmp_path / "ran"
    proc = subprocess.Popen(
        [QDONE, "worker", "-w", site.wait, "late"],
        env=site.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert "does not exist" in proc.stdout.readline() + proc.stdout.readline()
        site.enqueue("late", f"touch {mark}")
        end = time.monotonic() + 30  # well under the minute of a wildcard listing
        while not mark.exists():
            assert time.monotonic() < end, "the new queue was not seen"
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
