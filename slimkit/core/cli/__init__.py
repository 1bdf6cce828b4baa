"""The ``slimkit`` command line: a thin layer over the Python API.

The root group is built by :func:`make_cli`, which also lets plugins add commands through the
``register_commands`` hook. Every failure reaches the user as one line on stderr and exit status
1: a :class:`~slimkit.core.errors.SlimkitError` as ``Error: <its message>``, anything else (a full
disk, a database error, a plugin's bug) as ``Error: <command>: <cause>`` from
:func:`slimkit.core.failures.describe`, with no password in it. ``--debug`` or ``SLIMKIT_DEBUG=1``
prints the traceback too. Nothing is half-written: the work below writes atomically.
"""

from __future__ import annotations

import os
import sys
import traceback

import click

from slimkit.core.cli.state import CliState, get_catalogue_from, get_host_from
from slimkit.core.errors import PluginError, SlimkitError

__all__ = ["CliState", "get_catalogue_from", "get_host_from", "main", "make_cli"]

DEBUG_HINT = "--debug shows the traceback"


class _Group(click.Group):
    """Turns every exception into one line instead of a traceback (unless --debug)."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        operation = _operation(self, ctx)
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise  # click's own: usage errors, --help, --version, ^C at a prompt
        except KeyboardInterrupt:
            click.echo("Interrupted: nothing was written.", err=True)
            sys.exit(130)
        except Exception as error:
            _print_traceback(ctx, error)
            raise click.ClickException(user_line(error, operation, _host_of(ctx), _catalogue_url(ctx))) from None


def user_line(error: BaseException, operation: str | None = None, host: object = None,
              catalogue: str | None = None) -> str:
    """What ``Error:`` is followed by: a slimkit error's own message; for anything else the
    command, the plugin that raised or the catalogue that failed (when known) and the cause."""
    from slimkit.core.failures import culprit, describe, is_os_failure, mask_secrets

    if isinstance(error, SlimkitError):
        # A plugin's bug (a PluginError chained to what its code raised): its traceback helps.
        chained = isinstance(error, PluginError) and error.__cause__ is not None
        return describe(error) + (f" ({DEBUG_HINT})" if chained else "")
    where = f"{operation}: " if operation else ""
    if catalogue is not None and type(error).__module__.startswith("sqlalchemy"):
        where += f"catalogue {mask_secrets(catalogue)}: "
    if is_os_failure(error):  # the cause is the system's, plainly said; a traceback adds little
        return f"{where}{describe(error)}"
    plugin = culprit(error, host)
    if plugin is not None:
        return f"{where}plugin {plugin!r} raised {describe(error)} ({DEBUG_HINT})"
    return f"{where}{describe(error)} ({DEBUG_HINT})"


def _operation(group: click.Group, ctx: click.Context) -> str | None:
    """The command being run, e.g. ``eval`` or ``db upgrade`` (read before click consumes it)."""
    # click >= 8.2 keeps the command's name in _protected_args (protected_args is deprecated there)
    protected = ctx.__dict__.get("_protected_args")
    args = [*(protected if protected is not None else getattr(ctx, "protected_args", [])), *ctx.args]
    names: list[str] = []
    command: click.Command = group
    for arg in args:
        if not isinstance(command, click.Group) or arg.startswith("-"):
            break
        sub = command.get_command(ctx, arg)
        if sub is None:
            break
        names.append(sub.name or arg)
        command = sub
    return " ".join(names) or None


def _catalogue_url(ctx: click.Context) -> str | None:
    """The URL of the catalogue this command opened, if it opened one."""
    state = ctx.find_object(CliState)
    opened = state._catalogue if state is not None else None
    return opened.url if opened is not None else None


def _host_of(ctx: click.Context) -> object:
    state = ctx.find_object(CliState)
    if state is not None and state.host is not None:
        return state.host
    from slimkit.core.host import get_host

    try:
        return get_host()
    except Exception:  # naming the plugin is a courtesy; the error itself is what matters
        return None


def _print_traceback(ctx: click.Context | None, error: BaseException, asked: bool = False) -> None:
    from slimkit.core.failures import debug_requested

    if asked or (ctx is not None and ctx.meta.get("slimkit.debug")) or debug_requested():
        click.echo("".join(traceback.format_exception(error)).rstrip(), err=True)


def _set_debug(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    ctx.meta["slimkit.debug"] = value


def _set_threads(ctx: click.Context, param: click.Parameter, value: int | None) -> None:
    if value is not None:
        import torch

        torch.set_num_threads(value)


def _set_artifacts(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    # The store is process-wide configuration, read where a run publishes and a model is opened.
    if value:
        from slimkit.core.catalogue.artifacts import ENV_ARTIFACTS

        os.environ[ENV_ARTIFACTS] = value


def make_cli(host=None) -> click.Group:
    """Build the root command group; ``host`` defaults to the process-wide one."""

    @click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(package_name="slimkit", message="slimkit %(version)s")
    @click.option(
        "--threads", type=click.IntRange(min=1), callback=_set_threads, expose_value=False,
        help="Torch CPU threads (default: torch's choice).", is_eager=True,
    )
    @click.option(
        "--debug", is_flag=True, callback=_set_debug, expose_value=False, is_eager=True,
        help="On failure, print the traceback too (also: SLIMKIT_DEBUG=1).",
    )
    @click.option(
        "--catalogue", "catalogue_url", envvar="SLIMKIT_CATALOGUE", metavar="URL",
        help="Lineage catalogue: a SQLAlchemy URL or a SQLite file path "
             "(default: $SLIMKIT_CATALOGUE, else catalogue.db in the user data folder).",
    )
    @click.option(
        "--artifacts", metavar="URL", callback=_set_artifacts, expose_value=False,
        help="Artifact store for derived models, shared by a team: a folder (a shared mount) or any "
             "fsspec URL such as s3://bucket/prefix (default: $SLIMKIT_ARTIFACTS, else artifacts/ "
             "beside a SQLite catalogue, else the user data folder).",
    )
    @click.pass_context
    def cli(ctx: click.Context, catalogue_url: str | None) -> None:
        """slimkit: make language models smaller and faster, and remember how."""
        ctx.obj = CliState(host, catalogue_url)
        if ctx.invoked_subcommand != "plugins":  # which lists every plugin problem itself
            from slimkit.core.cli.info import load_warnings

            for line in load_warnings(get_host_from(ctx)):
                click.echo(line, err=True)
        # slimkit draws its own progress; transformers' per-file bars would interleave with it.
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

    from slimkit.core.cli import catalogue, db, export, info, install, maintenance, run, search, store

    for module in (info, install, run, search, export, maintenance, store, catalogue, db):
        for command in module.COMMANDS:
            cli.add_command(command)

    # Plugins may add commands; building the host here loads them (not at import time).
    from slimkit.core.host import get_host

    plugin_host = host or get_host()
    plugin_host.pm.hook.register_commands(cli=cli)
    return cli


def main() -> None:
    """Console-script entry point."""
    import warnings

    # Plugin problems are listed by `slimkit plugins`; other commands say in a line or two what
    # did not load (see cli.info.load_warnings) instead of one Python warning per problem.
    from slimkit.core.errors import PluginWarning

    warnings.filterwarnings("ignore", category=PluginWarning)

    try:
        cli = make_cli()
    except KeyboardInterrupt:
        click.echo("Interrupted: nothing was written.", err=True)
        sys.exit(130)
    except Exception as error:  # a plugin's register_commands, or a broken installation
        _print_traceback(None, error, "--debug" in sys.argv[1:])
        click.echo(f"Error: {user_line(error, 'starting slimkit')}", err=True)
        sys.exit(1)
    cli(prog_name="slimkit")
