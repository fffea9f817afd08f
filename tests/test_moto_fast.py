"""The benchmarks' moto patch (``bench/moto_fast.py``) changes no reply to the calls
qdone makes: the same scenario, each in a fresh interpreter, against stock moto and
against the patched one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

SCENARIO = Path(__file__).with_name("moto_scenario.py")


def replies(mode: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, str(SCENARIO), mode], capture_output=True, text=True, timeout=100
    )
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def test_patched_moto_answers_as_stock_moto_with_fewer_scans() -> None:
    stock, patched = replies("stock"), replies("patched")
    standard = stock["replies"]["standard"]
    assert standard["after send"]["counts"] == {  # the scenario reads real counts
        "ApproximateNumberOfMessages": "10",
        "ApproximateNumberOfMessagesNotVisible": "0",
    }
    assert standard["failed bodies"] == ["job 0", "job 1", "job 2"]
    assert patched["replies"] == stock["replies"]
    # Patched, moto counts only while answering GetQueueAttributes; stock, also on
    # every send, every message received and every FIFO check.
    assert patched["scans"] < stock["scans"]
