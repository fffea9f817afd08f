"""What every command shares: the global options, the broker, and the closing
"Used N … API calls" line."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ..config import DEFAULTS, Options, QueueOptions
from ..errors import UsageError

if TYPE_CHECKING:
    from ..api import Client
    from ..broker.base import Broker
    from ..cache import Cache
    from ..log import Output

__all__ = [
    "GLOBAL_KEY",
    "cache_for",
    "client_for",
    "global_options",
    "make_output",
    "open_for",
    "options_from",
    "parse_tags",
    "queue_kwargs",
    "queue_options",
    "quiet_stdout_output",
    "report_calls",
]

F = TypeVar("F", bound=Callable[..., Any])
GLOBAL_KEY = "qdone.globals"

_GLOBALS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (
        ("--broker",),
        {
            "metavar": "URL",
            "help": "Where queues live: 'sqlite' (default: the store in the user data "
            "dir), 'sqlite:///path/to/file.db', or 'sqs'.",
        },
    ),
    (("--prefix",), {"help": f"Prefix of every queue name. [default: {DEFAULTS.prefix}]"}),
    (
        ("--fail-suffix",),
        {"help": f"Suffix of failed queues. [default: {DEFAULTS.fail_suffix}]"},
    ),
    (
        ("--region",),
        {
            "help": "AWS region (SQS only). [default: AWS_REGION, AWS_DEFAULT_REGION, "
            f"else {DEFAULTS.region}]"
        },
    ),
    (
        ("--endpoint-url",),
        {
            "metavar": "URL",
            "help": "An SQS-compatible endpoint (SQS only). [default: AWS_ENDPOINT_URL_SQS]",
        },
    ),
    (
        ("--cache-uri",),
        {
            "metavar": "URI",
            "help": "The fleet's Redis, an optional accelerator: redis://HOST[:PORT][/DB], "
            "rediss://… or unix:///path. Enqueues wake idle workers; workers share queue "
            "checks (Node qdone's keys). With Redis down, everything works as without it.",
        },
    ),
    (
        ("--cache-prefix",),
        {"help": f"Prefix of qdone's keys in Redis. [default: {DEFAULTS.cache_prefix}]"},
    ),
    (
        ("--cache-ttl-seconds",),
        {
            "type": click.IntRange(1, 86_400),
            "metavar": "SECONDS",
            "help": "How long a shared queue check stays in Redis. "
            f"[default: {DEFAULTS.cache_ttl_seconds}]",
        },
    ),
    (
        ("-q", "--quiet"),
        {"is_flag": True, "default": None, "help": "Less output (default when not a TTY)."},
    ),
    (
        ("-v", "--verbose"),
        {"is_flag": True, "default": None, "help": "More output (default on a TTY)."},
    ),
]


# SQS settings that, read from the environment, are left out for the SQLite store
# (a shell set up for SQS may use a store too); given as options, they are an error.
_SQS_ONLY = ("region", "endpoint_url")


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    # ctx.meta is shared by the group's context and the command's, so a value
    # given after the command name overrides one given before it.
    if value is not None and param.name is not None:
        ctx.meta.setdefault(GLOBAL_KEY, {})[param.name] = value
    return value


def global_options(envvars: bool = False) -> Callable[[F], F]:
    """Add the global options; with ``envvars``, each also reads ``QDONE_<NAME>``."""

    def decorate(f: F) -> F:
        for decls, attrs in reversed(_GLOBALS):
            extra: dict[str, Any] = {"expose_value": False, "callback": _remember}
            if envvars:
                name = decls[-1].lstrip("-").replace("-", "_").upper()
                extra.update(envvar=f"QDONE_{name}", show_envvar=True)
            f = click.option(*decls, **attrs, **extra)(f)
        return f

    return decorate


def options_from(ctx: click.Context) -> Options:
    given: dict[str, Any] = ctx.meta.get(GLOBAL_KEY, {})
    if given.get("quiet") and given.get("verbose"):
        raise UsageError("--quiet and --verbose cannot be used together")
    if given.get("verbose"):
        verbose = True
    elif given.get("quiet"):
        verbose = False
    else:
        verbose = sys.stderr.isatty()
    if (given.get("broker") or "sqlite") != "sqs":
        given = {k: v for k, v in given.items() if k not in _SQS_ONLY or not _from_env(ctx, k)}
    return Options(
        broker=given.get("broker") or "sqlite",
        prefix=given.get("prefix", _empty_env("QDONE_PREFIX", DEFAULTS.prefix)),
        fail_suffix=given.get("fail_suffix", _empty_env("QDONE_FAIL_SUFFIX", DEFAULTS.fail_suffix)),
        region=given.get("region"),
        endpoint_url=given.get("endpoint_url"),
        verbose=verbose,
        cache_uri=given.get("cache_uri") or None,
        cache_prefix=given.get("cache_prefix", DEFAULTS.cache_prefix),
        cache_ttl_seconds=given.get("cache_ttl_seconds", DEFAULTS.cache_ttl_seconds),
    )


def _from_env(ctx: click.Context, name: str) -> bool:
    """Whether global option ``name`` has its value from its ``QDONE_*`` variable
    (the group reads those), not from an option before or after the command name."""
    env = click.core.ParameterSource.ENVIRONMENT
    return ctx.find_root().get_parameter_source(name) == env and ctx.get_parameter_source(name) in (
        None,
        env,
        click.core.ParameterSource.DEFAULT,
    )


def quiet_stdout_output(verbose: bool) -> Output:
    """Output whose stdout holds only results; notes and warnings go to stderr."""
    from ..log import Output

    return Output(verbose=verbose, json_lines=False)


def _empty_env(name: str, default: str) -> str:
    """``""`` when the variable is set and empty (click takes an empty variable for
    an unset one; ``QDONE_PREFIX=''`` means no prefix, as ``--prefix ''`` does, and
    ``QDONE_FAIL_SUFFIX=''`` is refused as ``--fail-suffix ''`` is)."""
    return "" if os.environ.get(name) == "" else default


def make_output(options: Options) -> Output:
    from ..log import Output

    return Output(verbose=options.verbose, json_lines=not sys.stderr.isatty())


@contextmanager
def open_for(options: Options, output: Output, *, reads_only: bool = False) -> Iterator[Broker]:
    """The broker for a command: named when verbose, calls reported, always closed.
    ``reads_only``: a SQLite store that cannot be written is opened read-only."""
    from ..broker import open_broker

    broker = open_broker(options, reads_only=reads_only)
    output.info(f"Using {broker.describe()}")
    try:
        yield broker
    finally:
        report_calls(broker, output)
        broker.close()


def queue_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The queue options (``with_queue_options``), taken out of a command's keyword
    arguments, as ``Client.send`` and ``Client.enqueue_batch`` take them."""
    names = (
        "fifo",
        "message_retention_period",
        "fail_delay",
        "dlq",
        "dlq_suffix",
        "dlq_after",
        "retries",
    )
    taken = {name: kwargs.pop(name) for name in names}
    taken["tags"] = parse_tags(kwargs.pop("tags"))
    return taken


@contextmanager
def client_for(
    options: Options, output: Output, *, reads_only: bool = False, deduplicates: bool = True
) -> Iterator[Client]:
    """The API client for a command: as ``open_for`` (the broker named when verbose,
    calls reported, always closed), with the queues it creates shown and the
    warnings of the cache and of deduplication forwarded (``deduplicates``: whether
    the command may deduplicate; without it or a cache, there are none to forward)."""
    from ..api import Client

    undo = _forward_cache_warnings(output) if options.cache_uri or deduplicates else _nothing
    try:
        client = Client(
            options.broker,
            prefix=options.prefix,
            fail_suffix=options.fail_suffix,
            region=options.region,
            endpoint_url=options.endpoint_url,
            cache_uri=options.cache_uri,
            cache_prefix=options.cache_prefix,
            cache_ttl_seconds=options.cache_ttl_seconds,
            on_create=lambda name: output.info(f"Created queue {name}"),
            reads_only=reads_only,
        )
    except BaseException:
        undo()
        raise
    broker = client.broker
    output.info(f"Using {broker.describe()}")
    try:
        yield client
    finally:
        report_calls(broker, output)
        client.close()
        undo()


@contextmanager
def cache_for(options: Options, output: Output) -> Iterator[Cache | None]:
    """The fleet's Redis cache when ``--cache-uri`` is given (its warnings shown on
    ``output``), else None; always closed."""
    if not options.cache_uri:
        yield None
        return
    from ..cache import open_cache

    undo = _forward_cache_warnings(output)
    try:
        cache = open_cache(options.cache_uri, options.cache_prefix, options.cache_ttl_seconds)
    except BaseException:
        undo()
        raise
    try:
        yield cache
    finally:
        cache.close()
        undo()


def _forward_cache_warnings(output: Output) -> Callable[[], None]:
    """Show the warnings of the cache and of deduplication on ``output`` (which loads
    ``logging``); returns what undoes it."""
    from ..log_forward import forward_warnings

    return forward_warnings("qdone.cache", output)


def _nothing() -> None:
    pass


def report_calls(broker: Broker, output: Output) -> None:
    """One line, e.g. ``Used 7 SQS and 1 CloudWatch API calls: GetQueueAttributes 7; …``."""
    services = sorted(broker.calls.services(), key=lambda s: (s != broker.service, s))
    if not services:
        return
    counts = " and ".join(f"{broker.calls.total(s)} {s}" for s in services)
    noun = "store operations" if services == ["SQLite"] else "API calls"
    detail = "; ".join(
        ", ".join(f"{action} {n}" for action, n in broker.calls.by_action(s).items())
        for s in services
    )
    output.info(f"Used {counts} {noun}: {detail}")


def parse_tags(values: tuple[str, ...]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for value in values:
        key, sep, tag = value.partition("=")
        if not sep or not key:
            raise UsageError(f"--tag {value!r} is not KEY=VALUE")
        tags[key] = tag
    return tags


def queue_option_decorators() -> list[Callable[[F], F]]:
    """The options that say how queues are created (enqueue, enqueue-batch, check)."""
    return [
        click.option("-f", "--fifo", is_flag=True, help="Use FIFO queues (names end in .fifo)."),
        click.option(
            "--message-retention-period",
            type=click.IntRange(60, 1_209_600),
            default=DEFAULTS.message_retention_period,
            show_default=True,
            help="Seconds a message is kept, on queues qdone creates.",
        ),
        click.option(
            "--fail-delay",
            type=click.IntRange(0, 900),
            default=0,
            show_default=True,
            help="Seconds a message waits in the failed queue before it can be received.",
        ),
        click.option(
            "--dlq", is_flag=True, help="Also create a dead queue behind the failed queue."
        ),
        click.option(
            "--dlq-suffix",
            default=DEFAULTS.dlq_suffix,
            show_default=True,
            help="Suffix of dead queues.",
        ),
        click.option(
            "--dlq-after",
            type=click.IntRange(1, 1000),
            default=DEFAULTS.dlq_after,
            show_default=True,
            help="Receives in the failed queue before a message moves to the dead queue.",
        ),
        click.option(
            "--retries",
            type=click.IntRange(0, 999),
            default=0,
            show_default=True,
            help="Extra attempts before a job lands in the failed queue "
            "(maxReceiveCount = retries + 1).",
        ),
        click.option(
            "--tag",
            "tags",
            multiple=True,
            metavar="KEY=VALUE",
            help="Tag queues qdone creates (repeatable).",
        ),
    ]


def with_queue_options(f: F) -> F:
    for decorate in reversed(queue_option_decorators()):
        f = decorate(f)
    return f


def queue_options(kwargs: dict[str, Any]) -> tuple[QueueOptions, str]:
    """QueueOptions and the dlq suffix, taken out of a command's keyword arguments."""
    q = QueueOptions(
        fifo=kwargs.pop("fifo"),
        message_retention_period=kwargs.pop("message_retention_period"),
        fail_delay=kwargs.pop("fail_delay"),
        dlq=kwargs.pop("dlq"),
        dlq_after=kwargs.pop("dlq_after"),
        retries=kwargs.pop("retries"),
        tags=parse_tags(kwargs.pop("tags")),
    )
    return q, kwargs.pop("dlq_suffix")
