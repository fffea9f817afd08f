"""Run every benchmark and write their tables to BENCHMARKS.md.

Run:  python bench/report.py   (about 10 minutes on 2 cores; each script starts
its own moto server on loopback)

Each script prints its own Markdown table; this collects them under one header
that names the machine, so the figures in the README can be traced to a run.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).parent
SCRIPTS = (
    ("Enqueue", ["bench_enqueue.py"]),
    ("Worker", ["bench_worker.py"]),
    ("idle-queues", ["bench_idle.py", "--pairs", "100", "--active", "10"]),
)


def main() -> None:
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "# qdone benchmarks",
        "",
        f"Made by `python bench/report.py` on {started}: {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {platform.system()} {platform.machine()}. "
        "Every figure comes from the run below; rerun a script alone with the "
        "command in its section.",
    ]
    for title, args in SCRIPTS:
        print(f"running {' '.join(args)} …", file=sys.stderr, flush=True)
        result = subprocess.run(
            [sys.executable, str(HERE / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            check=True,
        )
        parts += ["", f"## {title}", "", f"`python bench/{' '.join(args)}`", "", "```"]
        parts += [result.stdout.rstrip(), "```"]
    out = HERE.parent / "BENCHMARKS.md"
    out.write_text("\n".join(parts) + "\n")
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
