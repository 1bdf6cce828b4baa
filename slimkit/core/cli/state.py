"""What the root command hands its subcommands: the plugin host and the catalogue, opened lazily.

A module of its own so the subcommand modules need not import the package that imports them.
"""

from __future__ import annotations

import click


class CliState:
    """What the root group hands its commands: the host and the catalogue URL (opened lazily)."""

    def __init__(self, host, catalogue_url: str | None) -> None:
        self.host = host
        self.catalogue_url = catalogue_url
        self._catalogue = None

    def catalogue(self):
        if self._catalogue is None:
            from slimkit.core.catalogue import Catalogue

            self._catalogue = Catalogue(self.catalogue_url)
        return self._catalogue


def get_host_from(ctx: click.Context):
    from slimkit.core.host import get_host

    state = ctx.find_object(CliState)
    return (state.host if state else None) or get_host()


def get_catalogue_from(ctx: click.Context):
    """The catalogue chosen by --catalogue / SLIMKIT_CATALOGUE (opened, and migrated, on first use)."""
    state = ctx.find_object(CliState)
    if state is None:  # a command invoked outside the root group
        from slimkit.core.catalogue import Catalogue

        return Catalogue(None)
    return state.catalogue()
