"""Bundled exporters: write slimkit models in the formats serving runtimes load (one package each)."""
