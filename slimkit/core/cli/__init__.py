"""The ``slimkit`` command line: a thin layer over the Python API.

The root group is built by :func:`make_cli`, which also lets plugins add commands through the
``register_commands`` hook. Every :class:`~slimkit.core.errors.SlimkitError` becomes a one-line
``Error: ...`` on stderr and exit status 1; nothing is half-written.
"""

from __future__ import annotations

import sys

import click

from slimkit.core.cli.state import CliState, get_catalogue_from, get_host_from
from slimkit.core.errors import SlimkitError

__all__ = ["CliState", "get_catalogue_from", "get_host_from", "main", "make_cli"]


class _Group(click.Group):
    """Turns slimkit errors into one-line messages instead of tracebacks."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except SlimkitError as error:
            raise click.ClickException(str(error)) from None
        except KeyboardInterrupt:
            click.echo("Interrupted: nothing was written.", err=True)
            sys.exit(130)


def _set_threads(ctx: click.Context, param: click.Parameter, value: int | None) -> None:
    if value is not None:
        import torch

        torch.set_num_threads(value)


def make_cli(host=None) -> click.Group:
    """Build the root command group; ``host`` defaults to the process-wide one."""

    @click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(package_name="slimkit", message="slimkit %(version)s")
    @click.option(
        "--threads", type=click.IntRange(min=1), callback=_set_threads, expose_value=False,
        help="Torch CPU threads (default: torch's choice).", is_eager=True,
    )
    @click.option(
        "--catalogue", "catalogue_url", envvar="SLIMKIT_CATALOGUE", metavar="URL",
        help="Lineage catalogue: a SQLAlchemy URL or a SQLite file path "
             "(default: $SLIMKIT_CATALOGUE, else catalogue.db in the user data folder).",
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

    from slimkit.core.cli import catalogue, db, info, install, maintenance, run

    for module in (info, install, run, maintenance, catalogue, db):
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
    except SlimkitError as error:
        click.echo(f"Error: {error}", err=True)
        sys.exit(1)
    cli(prog_name="slimkit")
