"""SQS endpoints that answer with garbage or not at all (issue 16, items 5 and 6):
a malformed answer is a broker error (one line, retried like any other), never
a traceback or a dead thread; a worker stops within seconds of a second signal
whatever the network does."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from qdone.broker.base import Receipt, SendEntry
from qdone.broker.sqs import SqsBroker
from qdone.errors import BrokerError

from ..cli_helpers import run_qdone
from .conftest import ProxyFactory
from .proxy import Fault, FaultPlan
from .servers import Script, scripted_server, silent_server

URL = "http://127.0.0.1:1/123456789012/qdone_q"
PAGE = b"<html>\n<body>\n<h1>Welcome</h1>\n</body>\n</html>\n"


def _answers(receive: Callable[[int], bytes]) -> Script:
    """A server that knows one queue, ``qdone_q``; ``receive(n)`` answers the n-th
    ReceiveMessage (from 0)."""
    receives = itertools.count()

    def script(action: str, _body: bytes) -> tuple[int, bytes]:
        if action == "GetQueueUrl":
            return 200, json.dumps({"QueueUrl": URL}).encode()
        if action == "GetQueueAttributes":
            return 200, json.dumps({"Attributes": {"MessageRetentionPeriod": "345600"}}).encode()
        if action == "ReceiveMessage":
            return 200, receive(next(receives))
        return 200, b"{}"

    return script


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda b: b.get_queue_url("qdone_q"), id="GetQueueUrl"),
        pytest.param(lambda b: b.create_queue("qdone_q", {}), id="CreateQueue"),
        pytest.param(lambda b: b.send(URL, SendEntry("0", "true")), id="SendMessage"),
        pytest.param(lambda b: b.receive(URL, 1, 30, 0), id="ReceiveMessage"),
    ],
)
@pytest.mark.parametrize(
    "answer", [pytest.param(PAGE, id="html-page"), pytest.param(b"{}", id="empty-json")]
)
def test_a_malformed_answer_is_a_broker_error(
    call: Callable[[SqsBroker], object], answer: bytes
) -> None:
    def script(action: str, _body: bytes) -> tuple[int, bytes]:
        if action == "ReceiveMessage":  # a message without its id and receipt
            return 200, b'{"Messages": [{"Body": "true"}]}'
        return 200, answer

    with scripted_server(script) as endpoint:
        broker = SqsBroker(region="us-east-1", endpoint_url=endpoint)
        with pytest.raises(BrokerError) as err:
            call(broker)
        broker.close()
    assert "\n" not in str(err.value)


def test_batch_answers_with_fields_of_the_wrong_shape_are_broker_errors() -> None:
    def script(action: str, _body: bytes) -> tuple[int, bytes]:
        return 200, b'{"Successful": [{"Id": "0"}], "Failed": [{"Id": "1"}]}'

    with scripted_server(script) as endpoint:
        broker = SqsBroker(region="us-east-1", endpoint_url=endpoint)
        with pytest.raises(BrokerError, match="cannot read"):
            broker.send_batch(URL, [SendEntry("0", "a"), SendEntry("1", "b")])
        with pytest.raises(BrokerError, match="cannot read"):
            broker.delete_batch(URL, [Receipt("0", "r0"), Receipt("1", "r1")])
        broker.close()


def test_worker_drains_past_a_receive_answer_without_message_id(tmp_path: Path) -> None:
    """The poller meets a malformed answer, warns, retries, and the drain ends."""

    def receive(n: int) -> bytes:
        if n == 0:
            return b'{"Messages": [{"ReceiptHandle": "r", "Body": "true"}]}'
        return b"{}"

    with scripted_server(_answers(receive)) as endpoint:
        result = run_qdone(
            "worker", "q", "--drain", "--broker", "sqs", "--endpoint-url", endpoint, timeout=60
        )
    assert "Traceback" not in result.stderr, result.stderr
    warnings = [json.loads(line) for line in result.stdout.splitlines() if "WARNING" in line]
    assert any("cannot read (KeyError: 'MessageId')" in w["message"] for w in warnings)
    assert result.returncode == 0, result.stderr


def _start_worker(endpoint: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "qdone", "worker", "q", *extra],
        env={**os.environ, "QDONE_BROKER": "sqs", "QDONE_ENDPOINT_URL": endpoint},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _two_signals(proc: subprocess.Popen[str], settle: float) -> tuple[int, float, str]:
    """SIGTERM twice, ``settle`` s after start; the exit code, the seconds from the
    second signal to the exit, and stderr."""
    time.sleep(settle)  # the worker is stuck in a call by then (a bound, not a pace)
    code, took, _out, err = _signal_twice(proc)
    return code, took, err


def _signal_twice(proc: subprocess.Popen[str]) -> tuple[int, float, str, str]:
    """SIGTERM now and half a second later; the exit code, the seconds from the
    second signal to the exit, stdout and stderr."""
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    second = time.monotonic()
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    return proc.returncode, time.monotonic() - second, out, err


def test_two_signals_stop_a_worker_whose_endpoint_never_answers() -> None:
    """Its first call hangs (no answer, ever): the second signal ends it, 130."""
    with silent_server() as endpoint:
        proc = _start_worker(endpoint)
        code, took, err = _two_signals(proc, settle=3)
    assert code == 130, err
    assert took < 10, f"exited {took:.1f} s after the second signal"
    assert "Traceback" not in err


def test_two_signals_stop_a_worker_whose_endpoint_freezes_mid_run(
    tmp_path: Path,
) -> None:
    """The endpoint answers, then stops answering while the worker has a delete to
    send: the second signal still ends it within seconds."""
    frozen = tmp_path / "frozen"

    def receive(n: int) -> bytes:
        if n == 0:
            message = {"MessageId": "m1", "ReceiptHandle": "r1", "Body": "sleep 2"}
            return json.dumps({"Messages": [message]}).encode()
        frozen.touch()
        time.sleep(3600)  # frozen: no answer, ever
        return b"{}"

    answers = _answers(receive)

    def script(action: str, body: bytes) -> tuple[int, bytes]:
        if frozen.exists():
            time.sleep(3600)
        return answers(action, body)

    with scripted_server(script) as endpoint:
        proc = _start_worker(endpoint, "--wait-time", "1")
        deadline = time.monotonic() + 30
        while not frozen.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert frozen.exists()
        code, took, err = _two_signals(proc, settle=2.5)  # the job ended; its delete hangs
    assert code == 130, err
    assert took < 10, f"exited {took:.1f} s after the second signal"
    assert "Traceback" not in err


def test_two_signals_stop_a_worker_whose_deletes_hang_at_the_proxy(
    fault_proxy: ProxyFactory, moto_endpoint: str, prefix: str
) -> None:
    """moto behind the fault proxy, which holds every DeleteMessageBatch for a
    minute: the job ran, its delete hangs, and the second signal ends the worker."""
    proxy = fault_proxy(
        FaultPlan(rates={Fault.LATENCY: 1.0}, actions=frozenset({"DeleteMessageBatch"}), latency=60)
    )
    given = ("--broker", "sqs", "--endpoint-url", proxy.url, "--prefix", prefix)
    assert run_qdone("enqueue", "q", "true", *given).returncode == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "qdone", "worker", "q", "--wait-time", "1", *given],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while proxy.stats.requests.get("DeleteMessageBatch", 0) == 0:
        assert time.monotonic() < deadline, "the job's delete never went out"
        time.sleep(0.1)
    code, took, err = _two_signals(proc, settle=0.5)
    assert code == 130, err
    assert took < 10, f"exited {took:.1f} s after the second signal"
    assert "Traceback" not in err


def test_two_signals_stop_a_worker_whose_send_back_hangs_at_the_proxy(
    fault_proxy: ProxyFactory, moto_endpoint: str, prefix: str, tmp_path: Path
) -> None:
    """The second signal kills a running job, and the proxy holds the SendMessage
    of its message's copy for a minute: the worker gives up on the copy within its
    bound and ends by itself (exit 130, its summary written), leaving the message
    in flight, neither failed nor copied."""
    proxy = fault_proxy(
        FaultPlan(rates={Fault.LATENCY: 1.0}, actions=frozenset({"SendMessage"}), latency=60)
    )
    direct = ("--broker", "sqs", "--endpoint-url", moto_endpoint, "--prefix", prefix)
    started = tmp_path / "started"
    assert run_qdone("enqueue", "q", f"touch {started}; sleep 30", *direct).returncode == 0
    given = ("--broker", "sqs", "--endpoint-url", proxy.url, "--prefix", prefix)
    proc = subprocess.Popen(
        [sys.executable, "-m", "qdone", "worker", "q", "--wait-time", "1", "-k", "120", *given],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not started.exists():
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.1)
    code, took, out, err = _signal_twice(proc)
    assert code == 130, err
    assert took < 10, "the worker did not end soon after the signal"
    assert "Traceback" not in err and "did not return in time" not in err, err
    lines = [json.loads(line) for line in out.splitlines()]
    [back] = [e for e in lines if e["event"] == "JOB_INTERRUPTED"]
    assert back["killed"] is True and "sentBackAs" not in back, back
    assert lines[-1]["event"] == "WORKER_SUMMARY", lines
    assert proxy.stats.requests.get("SendMessage", 0) == 1
    moto = SqsBroker(region="us-east-1", endpoint_url=moto_endpoint)
    try:
        for name, expected in ((f"{prefix}q", (0, 1)), (f"{prefix}q_failed", (0, 0))):
            a = moto.get_queue_attributes(
                moto.get_queue_url(name),
                ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
            )
            got = (
                int(a["ApproximateNumberOfMessages"]),
                int(a["ApproximateNumberOfMessagesNotVisible"]),
            )
            assert got == expected, name
    finally:
        moto.close()
