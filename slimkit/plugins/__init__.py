"""Bundled plugins. Each module is an ordinary slimkit plugin, registered through the same hooks
as third-party ones (see ``slimkit.DEFAULT_PLUGINS``)."""
