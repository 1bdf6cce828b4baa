"""Latency: prefill and decode speed at a fixed number of CPU threads, beside the load average.

The prompt is ``prompt_tokens`` random token ids (a seeded generator, uniform over the input
embedding's rows), batch size 1. Each repeat times, with ``time.perf_counter``:

* prefill: one forward over the whole prompt with ``use_cache=True`` (only the last position's
  logits are computed when the model accepts ``logits_to_keep``, as ``generate`` does);
* decode (causal LMs only): a greedy loop of ``new_tokens`` forwards, each feeding the previous
  arg-max token with the cache from the step before.

Encoders (models that do not generate) get one forward over the input as their prefill and no
decode metrics. ``warmup`` untimed repeats run first; the metrics are medians over ``repeats``.
``torch.set_num_threads(threads)`` holds for the measurement and the previous value is restored
afterwards. Timings are only comparable at equal load, so the 1-minute load average before and
after the measurement is part of the metrics.
"""

from __future__ import annotations

import inspect
import os
import statistics
import time

import torch
from pydantic import Field

from slimkit import BaseEvaluator, ConfigError, MethodConfig, hookimpl, is_causal_lm


class LatencyConfig(MethodConfig):
    threads: int = Field(1, ge=1, le=1024, description="torch CPU threads during the measurement.")
    prompt_tokens: int = Field(128, ge=1, description="Prompt length in tokens (batch size 1).")
    new_tokens: int = Field(32, ge=1, description="Tokens generated greedily after the prompt (causal LMs).")
    repeats: int = Field(3, ge=1, le=1000, description="Timed repeats; the metrics are their medians.")
    warmup: int = Field(1, ge=0, le=1000, description="Untimed repeats before the timed ones.")
    seed: int = Field(0, description="Seed of the random prompt token ids.")


def load_average() -> float | None:
    """The 1-minute load average, or ``None`` where the platform has none."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return None


def _vocab_size(module: torch.nn.Module) -> int | None:
    embeddings = module.get_input_embeddings() if hasattr(module, "get_input_embeddings") else None
    rows = getattr(embeddings, "num_embeddings", None)
    if rows:
        return int(rows)
    size = getattr(getattr(module, "config", None), "vocab_size", None)
    return int(size) if size else None


def _accepts(module: torch.nn.Module, argument: str) -> bool:
    try:
        return argument in inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False


class LatencyEvaluator(BaseEvaluator):
    """Prefill and decode latency at a fixed thread count, with the load average beside it."""

    name = "latency"
    metrics = ("threads", "prefill_ms", "prefill_tokens_per_s", "decode_ms_per_token", "decode_tokens_per_s",
               "load_avg_1m_before", "load_avg_1m_after")
    version = 1
    Config = LatencyConfig

    def check(self, model, config, ctx):
        if _vocab_size(model.model) is None:
            raise ConfigError(f"latency needs a model with token embeddings; {model.architecture} has none")
        limit = getattr(model.config, "max_position_embeddings", None)
        causal = is_causal_lm(model.model)
        needed = config.prompt_tokens + config.new_tokens if causal else config.prompt_tokens
        if limit is not None and needed > limit:
            what = (
                f"prompt_tokens {config.prompt_tokens} + new_tokens {config.new_tokens} = {needed}"
                if causal
                else f"prompt_tokens {config.prompt_tokens}"
            )
            raise ConfigError(f"{what} exceeds the model's context of {limit} tokens")

    def evaluate(self, model, config, ctx):
        module = model.model
        causal = is_causal_lm(module)
        device = next(module.parameters()).device
        generator = torch.Generator().manual_seed(config.seed)
        prompt = torch.randint(0, _vocab_size(module), (1, config.prompt_tokens), generator=generator).to(device)
        keep_last = {"logits_to_keep": 1} if causal and _accepts(module, "logits_to_keep") else {}

        def sync() -> None:
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        def once() -> tuple[float, float | None]:
            sync()
            start = time.perf_counter()
            if not causal:
                module(input_ids=prompt)
                sync()
                return time.perf_counter() - start, None
            output = module(input_ids=prompt, use_cache=True, **keep_last)
            sync()
            prefill = time.perf_counter() - start
            past = output.past_key_values
            token = output.logits[:, -1:].argmax(-1)
            start = time.perf_counter()
            for _ in range(config.new_tokens):
                output = module(input_ids=token, past_key_values=past, use_cache=True)
                past = output.past_key_values
                token = output.logits[:, -1:].argmax(-1)
            sync()
            return prefill, time.perf_counter() - start

        previous_threads = torch.get_num_threads()
        was_training = module.training
        total = config.warmup + config.repeats
        prefills: list[float] = []
        decodes: list[float] = []
        try:
            torch.set_num_threads(config.threads)
            module.eval()
            load_before = load_average()
            with torch.inference_mode():
                for index in range(total):
                    prefill, decode = once()
                    if index >= config.warmup:
                        prefills.append(prefill)
                        if decode is not None:
                            decodes.append(decode)
                    load = load_average()
                    ctx.report(
                        "repeats", index + 1, total,
                        "warmup" if index < config.warmup else f"load average {load}",
                    )
            load_after = load_average()
        finally:
            module.train(was_training)
            torch.set_num_threads(previous_threads)

        prefill_s = statistics.median(prefills)
        metrics = {
            "threads": float(config.threads),
            "prefill_ms": 1000.0 * prefill_s,
            "prefill_tokens_per_s": config.prompt_tokens / prefill_s,
        }
        if decodes:
            decode_s = statistics.median(decodes)
            metrics["decode_ms_per_token"] = 1000.0 * decode_s / config.new_tokens
            metrics["decode_tokens_per_s"] = config.new_tokens / decode_s
        if load_before is not None:
            metrics["load_avg_1m_before"] = load_before
        if load_after is not None:
            metrics["load_avg_1m_after"] = load_after
        return metrics


@hookimpl
def register_evaluators(register):
    register(LatencyEvaluator)
