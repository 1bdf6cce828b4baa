"""Bundled evaluators: perplexity, size, STS-B similarity and latency."""
