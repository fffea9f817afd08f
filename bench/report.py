"""Run every benchmark and write their figures to BENCHMARKS.md as one table.

Run:  python bench/report.py [--rounds 3] [--quick] [--out PATH]
(about 10 minutes on 2 cores with 3 rounds; each script starts its own moto
server on loopback; --quick prints the table instead of writing BENCHMARKS.md,
unless --out says where)

Each script prints its rows as JSON lines (``--json``); this renders them as one
Markdown table under a header naming the command, the date and the machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _util import ROUNDS, Row, machine, table

HERE = Path(__file__).parent
# script, its own arguments, whether it takes --rounds and --quick (is timed)
SCRIPTS: tuple[tuple[str, list[str], bool], ...] = (
    ("bench_startup.py", [], False),  # its own --runs (10): start-up is quick and noisy
    ("bench_enqueue.py", [], True),
    ("bench_worker.py", [], True),
    ("bench_idle.py", ["--pairs", "100", "--active", "10"], False),
)


def collect(script: str, args: list[str]) -> list[Row]:
    """Run one script with ``--json``; its rows. Its progress goes to our stderr."""
    print(f"$ python bench/{' '.join([script, *args])}", file=sys.stderr, flush=True)
    result = subprocess.run(
        [sys.executable, str(HERE / script), *args, "--json"],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    return [Row(**json.loads(line)) for line in result.stdout.splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, help=f"runs per figure ({ROUNDS}; 1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="fewer jobs and rounds")
    parser.add_argument("--out", help="where to write ('-': stdout); BENCHMARKS.md unless --quick")
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.quick else ROUNDS)
    timed_args = ["--rounds", str(rounds), *(["--quick"] if args.quick else [])]
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    start = time.monotonic()
    rows: list[Row] = []
    reruns = []
    for script, own, timed in SCRIPTS:
        script_args = own + timed_args if timed else own
        rows += collect(script, script_args)
        reruns.append(f"`python bench/{' '.join([script, *script_args])}`")
    minutes = (time.monotonic() - start) / 60
    given = " ".join(sys.argv[1:])
    parts = [
        "# qdone benchmarks",
        "",
        f"Made by `python bench/report.py{' ' + given if given else ''}` on {started}, "
        f"in {minutes:.1f} min: {machine()}; {rounds} round(s).",
        "",
        f"Every timed figure is the median of {rounds} run(s). In each round qdone's run and "
        "its baseline run back to back (in turn, the order flipped every other round), and "
        "a ratio is the median of the per-round ratios, so it need not equal the quotient "
        "of the two medians. Call counts are exact; call limits are counted, not measured. "
        "Every moto server is local, on loopback.",
        "",
        "Moto's CPU time, where given, is its process's user + system time "
        "(`/proc/<pid>/stat`) while qdone's jobs ran (the span from the worker's first "
        "event to its last job's end) or while its enqueue-batch call ran. Moto's Python "
        "code runs on one core at a time, so no client gets the same calls served in less "
        "time: jobs (or lines) / CPU seconds is a ceiling on any concurrency, and the "
        "percentage says how busy moto was; near 100%, moto and not qdone set the pace.",
        "",
        *table(rows, rounds),
        "",
        "Rerun one part alone: " + ", ".join(reruns) + ".",
    ]
    out = args.out or ("-" if args.quick else str(HERE.parent / "BENCHMARKS.md"))
    text = "\n".join(parts) + "\n"
    if out == "-":
        print(text, end="")
    else:
        Path(out).write_text(text + kept_sections(Path(out)))
        print(f"wrote {out}", file=sys.stderr)


def kept_sections(path: Path) -> str:
    """The sections (``## `` headings on) of an existing file: figures other scripts
    made (bench_queues.py's), which this run does not replace."""
    if not path.exists():
        return ""
    text = path.read_text()
    at = text.find("\n## ")
    return "" if at < 0 else text[at:]


if __name__ == "__main__":
    main()
