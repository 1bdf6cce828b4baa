"""slimkit's core: the plugin host, method contracts, model I/O, data, recipes and the CLI."""
