"""Perplexity with the GPTQ/SparseGPT protocol.

The whole evaluation text (for WikiText-2: the raw test split joined with ``"\\n\\n"``) is
tokenized once, cut into non-overlapping windows of ``seq_len`` tokens (the tail that does not
fill a window is dropped), and each window is scored on its own. Perplexity is
``exp(total NLL / predicted tokens)``, each window predicting its ``seq_len - 1`` next tokens;
per-token NLLs are computed in float32 and summed in float64.

A model opened block by block (``model.stream``, ``slimkit eval --stream``) is evaluated without
ever being whole in memory: all windows go through one block at a time
(:func:`~slimkit.streamed_hidden_states`), then the final norm and the output head (filled for
this only when it is not tied to the embedding) score them batch by batch, exactly as above.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from pydantic import Field

from slimkit import (
    BaseEvaluator, ConfigError, DataError, MethodConfig, TextSource, example_text, hookimpl, is_causal_lm,
    streamed_hidden_states, tokenize,
)

#: Config fields of families whose logits are changed after the head (soft-capped, scaled): the
#: streamed evaluation applies the final norm and the head only, so it refuses them.
POST_HEAD_FIELDS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_logits_scaling")


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


def logits_nll(logits: torch.Tensor, windows: torch.Tensor) -> tuple[float, int]:
    """Summed next-token NLL (float64) and the number of predicted tokens of ``[b, L, vocab]``
    logits for ``[b, L]`` windows."""
    shift = logits[:, :-1, :].float()
    targets = windows[:, 1:].to(shift.device)
    # Per-token NLL in float32 is exact to ~1e-7 relative; it is the sum over hundreds of
    # thousands of tokens that needs float64. (Casting the logits to float64 costs ~1.7x time.)
    per_token = torch.nn.functional.cross_entropy(
        shift.reshape(-1, shift.shape[-1]), targets.reshape(-1), reduction="none"
    )
    return float(per_token.double().sum()), int(targets.numel())


def causal_lm_nll(model: torch.nn.Module, windows: torch.Tensor) -> tuple[float, int]:
    """Summed next-token NLL (float64) and the number of predicted tokens for ``[b, L]`` windows."""
    return logits_nll(model(input_ids=windows, use_cache=False).logits, windows)


def streaming_refusal(model, ctx) -> str | None:
    """Why the streamed evaluation (blocks, then final norm and head) would not compute what the
    model's own forward does, or ``None``."""
    config = model.config
    for name in POST_HEAD_FIELDS:
        value = getattr(config, name, None)
        if value is not None and value != 1:
            return f"its logits go through {name}={value} after the head, which a streamed evaluation does not apply"
    layout = ctx.host.adapter_for(model).layout(model.model)
    if layout.lm_head is None:
        return f"adapter {layout.adapter!r} names no output head"
    known = [layout.blocks_name, *layout.embeddings, layout.lm_head] + ([layout.final_norm] if layout.final_norm else [])
    for name, module in model.model.named_modules():
        inside = any(name == path or name.startswith(f"{path}.") for path in known)
        if not inside and next(module.parameters(recurse=False), None) is not None:
            return (f"it has weights in {name}, outside its blocks, embeddings, final norm and head, which a "
                    "streamed evaluation does not run")
    return None


class PerplexityEvaluator(BaseEvaluator):
    """Causal-LM perplexity over non-overlapping windows (GPTQ/SparseGPT protocol)."""

    name = "perplexity"
    metrics = ("perplexity", "nll", "tokens", "windows")
    version = 1
    Config = PerplexityConfig
    streams = True

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
        if model.stream is not None:
            refusal = streaming_refusal(model, ctx)
            if refusal:
                raise ConfigError(f"perplexity cannot run streamed on {model.source}: {refusal}; evaluate it in memory")
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
        batches = [windows[start : start + config.batch_size] for start in range(0, count, config.batch_size)]
        if model.stream is not None:
            total_nll, total_tokens = self._streamed(model, batches, windows, config, ctx)
        else:
            total_nll, total_tokens = self._in_memory(model, batches, count, ctx)
        mean = total_nll / total_tokens
        return {
            "perplexity": math.exp(mean),
            "nll": mean,
            "tokens": float(total_tokens),
            "windows": float(count),
        }

    @staticmethod
    def _in_memory(model, batches, count, ctx) -> tuple[float, int]:
        total_nll, total_tokens, done = 0.0, 0, 0
        was_training = model.model.training
        model.model.eval()
        try:
            with torch.inference_mode():
                for batch in batches:
                    nll, tokens = causal_lm_nll(model.model, batch)
                    total_nll += nll
                    total_tokens += tokens
                    done += batch.shape[0]
                    ctx.report("windows", done, count)
        finally:
            model.model.train(was_training)
        return total_nll, total_tokens

    @staticmethod
    def _streamed(model, batches, windows, config, ctx) -> tuple[float, int]:
        """All windows through one block at a time, then the final norm and the head per batch."""
        adapter = ctx.host.adapter_for(model)
        layout = adapter.layout(model.model)
        hidden = streamed_hidden_states(model, adapter, windows, batch_size=config.batch_size,
                                        report=lambda done, total: ctx.report("blocks", done, total))
        norm = model.model.get_submodule(layout.final_norm) if layout.final_norm else None
        total_nll, total_tokens, done = 0.0, 0, 0
        with model.stream.head_loaded(), torch.inference_mode():
            head = model.model.get_submodule(layout.lm_head)
            for batch in batches:
                states = hidden[done : done + batch.shape[0]]
                logits = head(norm(states) if norm is not None else states)
                nll, tokens = logits_nll(logits, batch)
                del logits
                total_nll += nll
                total_tokens += tokens
                done += batch.shape[0]
                ctx.report("windows", done, len(windows))
        return total_nll, total_tokens


@hookimpl
def register_evaluators(register):
    register(PerplexityEvaluator)
