"""Start-up: each command imports only what it uses (commands load lazily).

Each case runs the ``qdone`` command line in a fresh interpreter and reads the
modules it had loaded at exit; timings are in ``bench/bench_startup.py``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from qdone import __version__
from qdone.cli import COMMANDS, qdone

# Runs ``qdone ARGS...`` as the console script does, and at exit (``main`` ends in
# ``sys.exit``) writes the names of the modules loaded to the file $MODULES_OUT.
_WRAPPER = (
    "import atexit, json, os, sys\n"
    "def _dump():\n"
    "    with open(os.environ['MODULES_OUT'], 'w') as f:\n"
    "        json.dump(sorted(sys.modules), f)\n"
    "atexit.register(_dump)\n"
    "sys.argv[0] = 'qdone'\n"
    "from qdone.entry import main\n"
    "main()\n"
)
_AWS = ("boto3", "botocore")


def modules_after(tmp_path: Path, *args: str) -> set[str]:
    out = tmp_path / "modules.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("QDONE_")}
    env.update(MODULES_OUT=str(out), XDG_DATA_HOME=str(tmp_path / "xdg"))
    result = subprocess.run(
        [sys.executable, "-c", _WRAPPER, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(out.read_text()))


def at_start() -> set[str]:
    """The modules this interpreter has loaded before it runs anything: its own and
    those of its site-packages' ``.pth`` files, which qdone cannot leave out."""
    result = subprocess.run(
        [sys.executable, "-c", "import sys; print(*sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return set(result.stdout.split())


def loaded(modules: set[str], *packages: str) -> list[str]:
    """The modules of ``packages`` (each a package or module name) in ``modules``."""
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in packages))


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_alone_loads_not_even_the_command_line(tmp_path: Path, flag: str) -> None:
    modules = modules_after(tmp_path, flag)
    assert loaded(modules, *_AWS, "click", "qdone.cli", "qdone.broker", "qdone.worker") == []
    assert loaded(modules - at_start(), "typing") == []


def test_version_among_options_loads_no_command_broker_or_aws_sdk(tmp_path: Path) -> None:
    modules = modules_after(tmp_path, "--prefix", "p_", "--version")
    assert "click" in modules
    assert loaded(modules, *_AWS) == []
    assert loaded(modules, "qdone.worker", "qdone.broker", "qdone.enqueue") == []
    commands = {f"qdone.cli.{target.partition(':')[0]}" for target in COMMANDS.values()}
    assert sorted(commands & modules) == []


@pytest.mark.parametrize("args", [["--version"], ["-V"], ["--prefix", "p_", "--version"]])
def test_version_line_is_the_same_either_way(args: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "qdone", *args], capture_output=True, text=True, timeout=60
    )
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        f"qdone, version {__version__}\n",
        "",
    )


def test_sqlite_enqueue_loads_neither_the_aws_sdk_nor_the_worker(tmp_path: Path) -> None:
    modules = modules_after(tmp_path, "enqueue", "q", "true")
    assert "qdone.broker.sqlite" in modules  # it did run
    assert loaded(modules, *_AWS) == []
    assert loaded(modules, "qdone.worker", "qdone.cli.worker", "qdone.job", "qdone.cache") == []
    assert loaded(modules, "qdone.idle", "qdone.check", "qdone.monitor") == []
    assert loaded(modules, "qdone.api.results", "qdone.enqueue_send") == []  # enqueue-batch's
    # Only the cache and deduplication log: a plain enqueue has nothing to forward.
    assert loaded(modules, "logging", "qdone.log_forward", "qdone.dedup") == []
    # The store's path is a string: no pathlib (nor the urllib.parse it loads).
    assert loaded(modules - at_start(), "pathlib", "urllib") == []


def test_the_probe_sees_logging_when_an_enqueue_deduplicates(tmp_path: Path) -> None:
    """The guard above can fail: with --external-dedup, the same enqueue logs."""
    modules = modules_after(tmp_path, "enqueue", "--external-dedup", "q", "true")
    assert loaded(modules, "logging", "qdone.log_forward") == ["logging", "qdone.log_forward"]


def test_the_probe_sees_the_aws_sdk_when_sqs_is_used(tmp_path: Path) -> None:
    """The guards above can fail: the same probe sees botocore once the SQS broker loads."""
    assert loaded(modules_after(tmp_path, "--broker", "sqs", "check", "--help"), *_AWS) == []
    code = "import qdone.broker.sqs\n" + _WRAPPER
    out = tmp_path / "modules.json"
    env = {**os.environ, "MODULES_OUT": str(out)}
    subprocess.run([sys.executable, "-c", code, "--version"], env=env, check=True, timeout=60)
    assert "botocore" in json.loads(out.read_text())


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_registered_command_loads_under_its_name(name: str) -> None:
    ctx = click.Context(qdone)
    command = qdone.get_command(ctx, name)
    assert isinstance(command, click.Command)
    assert command.name == name
    assert command.get_short_help_str()


def test_help_lists_every_command_with_its_short_help(tmp_path: Path) -> None:
    out = tmp_path / "modules.json"
    env = {**os.environ, "MODULES_OUT": str(out)}
    result = subprocess.run(
        [sys.executable, "-c", _WRAPPER, "--help"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    listing = result.stdout.split("Commands:", 1)[1].splitlines()
    for name in COMMANDS:
        command = qdone.get_command(click.Context(qdone), name)
        assert command is not None
        short = command.get_short_help_str(limit=30)[:20]
        assert any(line.split()[:1] == [name] and short in line for line in listing), name
