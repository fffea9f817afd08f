"""The ``qdone`` command line. Commands are thin: they build options, call the
core, and turn results and ``QdoneError``s into output and exit codes.

Global options are accepted before the command name and after it, as in Node
qdone (``qdone worker q --region us-west-2``); each also reads a ``QDONE_*``
environment variable.

Commands are loaded lazily: ``COMMANDS`` names the module and function of each,
and only the command that runs is imported (``--help`` imports them all), so
``qdone enqueue`` never loads the worker or, on SQLite, the AWS SDK."""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from .. import __version__
from ..errors import ExitCode, QdoneError
from .common import GLOBAL_KEY, global_options

__all__ = ["COMMANDS", "main", "qdone"]

F = TypeVar("F", bound=Callable[..., Any])

#: Every command: its name and its click command as "module:function" within this
#: package. Adding a command is one line here.
COMMANDS: dict[str, str] = {
    "check": "check:check_command",
    "enqueue": "enqueue:enqueue_command",
    "enqueue-batch": "enqueue:enqueue_batch_command",
    "failed": "failed:failed_command",
    "idle-queues": "idle:idle_queues_command",
    "monitor": "monitor:monitor_command",
    "requeue": "failed:requeue_command",
    "worker": "worker:worker_command",
}

EPILOG = f"""\b
Exit codes:
  {ExitCode.OK.value}    success
  {ExitCode.FAILURE.value}    worker --drain: a job failed for good; a batch entry or
       check failed; the broker refused
  {ExitCode.USAGE.value}    bad options, queue names or input
  {ExitCode.UNAVAILABLE.value}    broker unreachable, no AWS credentials or unusable AWS
       configuration, not a qdone store or a damaged one
  {ExitCode.INTERRUPTED.value}  stopped by a second SIGINT/SIGTERM
"""


class _LazyGroup(click.Group):
    """A group whose commands are imported from ``COMMANDS`` when first asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module_name, _, attribute = COMMANDS[cmd_name].partition(":")
            module = importlib.import_module(f"{__name__}.{module_name}")
            command = getattr(module, attribute)
            assert isinstance(command, click.Command), COMMANDS[cmd_name]
            self.add_command(command, cmd_name)
        return self.commands.get(cmd_name)


@click.group(
    cls=_LazyGroup,
    epilog=EPILOG,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, "-V", "--version", prog_name="qdone")
@global_options(envvars=True)
@click.pass_context
def qdone(ctx: click.Context) -> None:
    """qdone: a command-line job queue.

    Put shell commands on queues with 'qdone enqueue'; run them on any number
    of machines with 'qdone worker'. The default broker is an embedded SQLite
    store (nothing to set up); '--broker sqs' uses Amazon SQS or any
    SQS-compatible endpoint. Global options may come before or after the
    command name.
    """
    ctx.meta.setdefault(GLOBAL_KEY, {})


def _fail(err: QdoneError) -> int:
    line = str(err)
    if err.hint:
        line += f" ({err.hint})"
    from ..log import one_line

    click.echo(f"qdone: error: {one_line(line)}", err=True)
    return int(err.exit_code)


#: The standard descriptors (0, 1, 2) that were closed when qdone started: commands
#: whose input or output must be real (enqueue-batch -, worker --archive) refuse them.
CLOSED_AT_START: set[int] = set()


def _fill_closed_standard_streams() -> None:
    """A descriptor 0, 1 or 2 closed by whoever started qdone becomes ``/dev/null``,
    so that nothing qdone opens later (the SQLite store) takes its number and gets
    what is meant for stdout or stderr. ``sys.stdin`` and ``sys.stdout`` stay None,
    as Python left them: commands see that they are closed (``--archive`` and
    ``enqueue-batch -`` refuse them; the worker's reports say so once). Messages
    for a closed stderr go nowhere, quietly."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            CLOSED_AT_START.add(fd)
            if os.open(os.devnull, os.O_RDWR) != fd:  # takes the lowest free number
                return
            if fd == 2 and sys.stderr is None:
                sys.stderr = open(fd, "w", encoding="utf-8", closefd=False)  # noqa: SIM115


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``qdone`` console script."""
    _fill_closed_standard_streams()
    try:
        code = qdone.main(args=argv, prog_name="qdone", standalone_mode=False)
    except QdoneError as err:
        sys.exit(_fail(err))
    except click.exceptions.Abort:
        click.echo("qdone: aborted", err=True)
        sys.exit(int(ExitCode.INTERRUPTED))
    except click.UsageError as err:
        where = err.ctx.command_path if err.ctx is not None else "qdone"
        click.echo(f"qdone: error: {err.format_message()} (see '{where} --help')", err=True)
        sys.exit(err.exit_code)
    except click.ClickException as err:
        click.echo(f"qdone: error: {err.format_message()}", err=True)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        sys.exit(int(ExitCode.INTERRUPTED))
    except BrokenPipeError:
        sys.exit(int(ExitCode.FAILURE))
    except OSError as err:  # e.g. the output on a full disk
        with contextlib.suppress(OSError):
            click.echo(f"qdone: error: {err.strerror or err}", err=True)
        sys.exit(int(ExitCode.FAILURE))
    sys.exit(code if isinstance(code, int) else 0)
