"""Bundled architecture adapters: Llama family, GPT-2, OPT and BERT-style encoders."""
