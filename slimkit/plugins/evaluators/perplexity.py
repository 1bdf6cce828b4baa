"""Perplexity with the GPTQ/SparseGPT protocol.

The whole evaluation text (for WikiText-2: the raw test split joined with ``"\\n\\n"``) is
tokenized once, cut into non-overlapping windows of ``seq_len`` tokens (the tail that does not
fill a window is dropped), and each window is scored on its own. Perplexity is
``exp(total NLL / predicted tokens)``, each window predicting its ``seq_len - 1`` next tokens;
per-token NLLs are computed in float32 and summed in float64.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from pydantic import Field

from slimkit import (
    BaseEvaluator, ConfigError, DataError, MethodConfig, TextSource, example_text, hookimpl, is_causal_lm, tokenize,
)


class PerplexityConfig(MethodConfig):
    text: Path | None = Field(
        None, description="Text or JSONL file to evaluate on (default: the bundled TinyStories sample)."
    )
    seq_len: int = Field(512, ge=2, le=131072, description="Window length in tokens.")
    max_windows: int | None = Field(None, ge=1, description="Evaluate only the first N windows.")
    batch_size: int = Field(1, ge=1, le=256, description="Windows per forward pass.")
    add_bos: bool = Field(False, description="Put the tokenizer's BOS token before the text.")
    collapse_blank_lines: bool = Field(False, description="Replace runs of blank lines by one newline.")
    field: str = Field("text", description="JSONL field holding the text.")
    join: str = Field("\n\n", description="Separator between JSONL records.")


def causal_lm_nll(model: torch.nn.Module, windows: torch.Tensor) -> tuple[float, int]:
    """Summed next-token NLL (float64) and the number of predicted tokens for ``[b, L]`` windows."""
    logits = model(input_ids=windows, use_cache=False).logits
    shift = logits[:, :-1, :].float()
    targets = windows[:, 1:]
    # Per-token NLL in float32 is exact to ~1e-7 relative; it is the sum over hundreds of
    # thousands of tokens that needs float64. (Casting the logits to float64 costs ~1.7x time.)
    per_token = torch.nn.functional.cross_entropy(
        shift.reshape(-1, shift.shape[-1]), targets.reshape(-1), reduction="none"
    )
    return float(per_token.double().sum()), int(targets.numel())


class PerplexityEvaluator(BaseEvaluator):
    """Causal-LM perplexity over non-overlapping windows (GPTQ/SparseGPT protocol)."""

    name = "perplexity"
    version = 1
    Config = PerplexityConfig

    def source(self, config: PerplexityConfig) -> TextSource:
        path = Path(config.text) if config.text else example_text("tinystories")
        return TextSource(path, config.field, config.join, config.collapse_blank_lines)

    def check(self, model, config, ctx):
        if not is_causal_lm(model.model):
            raise ConfigError(f"perplexity needs a causal language model; {model.architecture} is not one")
        if model.tokenizer is None:
            raise ConfigError(f"perplexity needs a tokenizer and {model.source} has none")
        limit = getattr(model.config, "max_position_embeddings", None)
        if limit is not None and config.seq_len > limit:
            raise ConfigError(f"seq_len {config.seq_len} exceeds the model's context of {limit} tokens")
        source = self.source(config)
        if not source.path.is_file():  # fail at validation, not after the compression ran
            raise DataError(f"no such text file: {source.path}")

    def evaluate(self, model, config, ctx):
        source = self.source(config)
        ctx.used_data(source.fingerprint)
        ids = tokenize(model.tokenizer, source.text(), add_bos=config.add_bos)
        count = ids.numel() // config.seq_len
        if config.max_windows is not None:
            count = min(count, config.max_windows)
        if count == 0:
            raise DataError(f"{source.path} has {ids.numel()} tokens, fewer than one window of {config.seq_len}")
        windows = ids[: count * config.seq_len].view(count, config.seq_len)
        total_nll, total_tokens = 0.0, 0
        was_training = model.model.training
        model.model.eval()
        try:
            with torch.inference_mode():
                for start in range(0, count, config.batch_size):
                    nll, tokens = causal_lm_nll(model.model, windows[start : start + config.batch_size])
                    total_nll += nll
                    total_tokens += tokens
                    ctx.report("windows", min(start + config.batch_size, count), count)
        finally:
            model.model.train(was_training)
        mean = total_nll / total_tokens
        return {
            "perplexity": math.exp(mean),
            "nll": mean,
            "tokens": float(total_tokens),
            "windows": float(count),
        }


@hookimpl
def register_evaluators(register):
    register(PerplexityEvaluator)
