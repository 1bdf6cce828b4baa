"""Bundled exporters: formats serving runtimes load."""
