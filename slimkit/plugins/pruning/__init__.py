"""Bundled pruning methods."""
