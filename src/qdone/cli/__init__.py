"""The ``qdone`` command line. Commands are thin: they build options, call the
core, and turn results and ``QdoneError``s into output and exit codes.

Global options are accepted before the command name and after it, as in Node
qdone (``qdone worker q --region us-west-2``); each also reads a ``QDONE_*``
environment variable."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from .. import __version__
from ..errors import ExitCode, QdoneError
from . import enqueue as enqueue_commands
from . import queues as queue_commands
from . import worker as worker_commands
from .common import GLOBAL_KEY, global_options

__all__ = ["main", "qdone"]

F = TypeVar("F", bound=Callable[..., Any])

EPILOG = f"""\b
Exit codes:
  {ExitCode.OK.value}    success
  {ExitCode.FAILURE.value}    worker --drain: a job failed for good; a batch entry or
       check failed; the broker refused
  {ExitCode.USAGE.value}    bad options, queue names or input
  {ExitCode.UNAVAILABLE.value}    broker unreachable, no AWS credentials, not a qdone store
  {ExitCode.INTERRUPTED.value}  stopped by a second SIGINT/SIGTERM
"""


@click.group(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
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


for _module in (enqueue_commands, worker_commands, queue_commands):
    for _command in _module.COMMANDS:
        qdone.add_command(_command)


def _fail(err: QdoneError) -> int:
    line = str(err)
    if err.hint:
        line += f" ({err.hint})"
    click.echo(f"qdone: error: {line}", err=True)
    return int(err.exit_code)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``qdone`` console script."""
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
