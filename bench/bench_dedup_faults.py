"""The issue's full "each job once" run: 2,000 lines enqueued with --external-dedup
through the fault proxy (10% of SendMessageBatch requests faulted), drained by two
workers sharing one Redis; every command that reached the queue must run exactly
once. It is the test ``tests/faults/test_dedup_faults.py`` at full size (the test
suite runs 400 lines), so it needs the test extras and redis-server.

    python bench/bench_dedup_faults.py [--lines 2000]

Prints the run's report (lines sent, runs, copies deleted unrun) and its duration.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=2000)
    args = parser.parse_args()
    env = {**os.environ, "QDONE_DEDUP_FAULT_LINES": str(args.lines), "QDONE_REQUIRE_REDIS": "1"}
    start = time.monotonic()
    pytest = [sys.executable, "-m", "pytest", "-q", "-s", "-n", "0", "-p", "no:logging"]
    pytest += ["-o", "timeout=1800"]
    result = subprocess.run(
        [*pytest, "tests/faults/test_dedup_faults.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.monotonic() - start
    report = [line for line in result.stdout.splitlines() if " lines, " in line]
    print("\n".join(report) or result.stdout[-2000:])
    print(f"{'passed' if result.returncode == 0 else 'FAILED'} in {elapsed:.0f} s")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
