"""The catalogue's error: one line saying which catalogue or reference, and what is wrong."""

from slimkit.core.errors import SlimkitError


class CatalogueError(SlimkitError):
    """The catalogue cannot be opened, is not a catalogue, or a reference does not resolve."""
