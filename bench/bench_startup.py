"""Start-up benchmark: ``qdone --version`` and a SQLite ``qdone enqueue q true``, whole
process (start to exit), side by side with the interpreter's own ``python -c pass``.

Run:  python bench/bench_startup.py [--runs 10] [--json] [--importtime]

Each run starts the three commands back to back (in turn, the order flipped every
other run); a figure is the median of --runs runs and a ratio the median of the
per-run ratios. ``python -c pass`` includes what the interpreter's site-packages
``.pth`` files import at start (see ``python -X importtime -c pass``): every qdone
run pays it too, so the time over it is qdone's own. Targets (issue 14):
``--version`` at most 3x and the enqueue at most 4x ``python -c pass``. Node
qdone's figures are quoted from the issue, not measured here. With --importtime,
prints the slowest imports of each command instead (``python -X importtime``), the
profile to optimise from. Asserts nothing.

qdone's modules are byte-compiled first, as ``pip install`` leaves them: with
``PYTHONDONTWRITEBYTECODE`` set (as on this project's machine) an editable
install would otherwise compile every module from source on every run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _util import Row, emit, in_turn, medians, progress, qdone_exe, timed

RUNS = 10
TARGETS = {"version": 3.0, "enqueue": 4.0}
# Measured by the author on the machine of the issue, not here.
NODE = {
    "version": "Node qdone 1.7.1: 114 ms (from the issue, not measured here)",
    "enqueue": "Node qdone 2.x: 349 ms (from the issue, not measured here)",
}


def commands() -> dict[str, list[str]]:
    qdone = qdone_exe()
    return {
        "python": [sys.executable, "-c", "pass"],
        "version": [qdone, "--version"],
        "enqueue": [qdone, "enqueue", "q", "true"],
    }


def environment(tmp: str) -> dict[str, str]:
    """A store of its own in ``tmp``; nothing else of the caller's qdone settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QDONE_")}
    return {**env, "XDG_DATA_HOME": tmp, "QDONE_BROKER": "sqlite"}


def byte_compile() -> None:
    """Write the ``__pycache__`` of qdone's package, as an installation has."""
    import compileall

    import qdone

    compileall.compile_dir(str(Path(qdone.__file__).parent), quiet=1)


def measure(runs: int) -> list[Row]:
    byte_compile()
    cmds = commands()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        env = environment(tmp)
        for cmd in cmds.values():  # untimed: creates the store and queue, warms the cache
            subprocess.run(cmd, env=env, capture_output=True, check=True)
        for r in range(runs):
            times = {
                key: timed(
                    partial(subprocess.run, cmds[key], env=env, capture_output=True, check=True)
                )[1]
                for key in in_turn(r, list(cmds))
            }
            for key in TARGETS:
                times[key + "_ratio"] = times[key] / times["python"]
                times[key + "_over"] = times[key] - times["python"]
            results.append(times)
    m = medians(results)
    python = f"`python -c pass`: {m['python'] * 1000:.0f} ms"
    rows = []
    for key, what in (
        ("version", "start-up: `qdone --version`, process start to exit"),
        ("enqueue", "start-up: `qdone enqueue q true` (SQLite), process start to exit"),
    ):
        ratio, target = m[key + "_ratio"], TARGETS[key]
        verdict = "met" if ratio <= target else "MISSED"
        rows.append(
            Row(
                f"{what} (median of {runs} runs)",
                f"{m[key] * 1000:.0f} ms ({m[key + '_over'] * 1000:+.0f} ms over `python -c pass`)",
                f"{python}; {NODE[key]}",
                f"{ratio:.1f}x",
                f"≤ {target:g}x `python -c pass` ({verdict})",
                results,
            )
        )
        progress(rows[-1])
    return rows


def importtime(top: int = 15) -> None:
    """The ``top`` slowest imports (cumulative) of each qdone command."""
    byte_compile()
    with tempfile.TemporaryDirectory() as tmp:
        env = environment(tmp)
        for key, cmd in commands().items():
            if key == "python":
                continue
            subprocess.run(cmd, env=env, capture_output=True, check=True)  # the store
            args = [sys.executable, "-X", "importtime", "-c", _RUN_CLI, *cmd[1:]]
            err = subprocess.run(args, env=env, capture_output=True, text=True).stderr
            rows = [line.split("|") for line in err.splitlines() if line.startswith("import time:")]
            parsed = sorted(
                ((int(cum), name.rstrip()) for _, cum, name in rows[1:] if cum.strip().isdigit()),
                reverse=True,
            )
            print(f"{' '.join(['qdone', *cmd[1:]])}: slowest imports (cumulative µs)")
            for cum, name in parsed[:top]:
                print(f"  {cum:>8}  {name}")


# What the ``qdone`` console script runs.
_RUN_CLI = "import sys; sys.argv[0] = 'qdone'; from qdone.cli import main; main()"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=RUNS, help=f"runs per figure ({RUNS})")
    parser.add_argument("--json", action="store_true", help="print rows as JSON lines")
    parser.add_argument("--importtime", action="store_true", help="show the import profile")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be 1 or more")
    if args.importtime:
        importtime()
        return
    args.rounds = args.runs  # the table's "median of N"
    emit(measure(args.runs), args, "bench_startup.py")


if __name__ == "__main__":
    main()
