"""``distill``: recover a compressed model by training it to match its teacher (the recipe's input
model by default) on general text, within a small budget of steps, tokens or time.

The student is the model the step receives (pruned, factorised or structurally shrunk); it trains
in float32 on CPU with AdamW, dropout off, on batches that depend only on the step number and the
seed (:mod:`.training`), against the teacher's logits (:func:`.losses.logit_loss`), optionally
mixed with the language-modelling loss and per-block hidden-state matching. Exact zeros of a
pruned student stay zero (gradients and weights are masked). A quantized student learns through fake
quantization (:func:`slimkit.fake_quantize_linears`): its integer layers become float latent weights
whose forward is rounded to the stored grid, and go back onto that grid (same scales, new codes)
when the step ends. A checkpoint is written every
``checkpoint_every`` steps into the step's work folder; running the same recipe again after an
interruption resumes from it and ends with the same weights as an uninterrupted run (a
``time_limit_s`` stop is the exception: where it falls depends on the machine). The runner
records the teacher as the step's second parent.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field

from slimkit import (
    ArchitectureError, BaseCompressor, CompressionSummary, ConfigError, MethodConfig, fake_quantize_linears, hookimpl,
    is_causal_lm, requantize_linears,
)
from slimkit.plugins.distill.losses import HiddenStateLoss, chunked_logit_loss, lm_loss, logit_loss
from slimkit.plugins.distill.training import (
    WindowBatches,
    fingerprint,
    load_checkpoint,
    recomputed,
    save_checkpoint,
    sparsity_masks,
)


class DistillConfig(MethodConfig):
    teacher: str = Field("input", description="'input' (the recipe's input model) or a model folder/spec.")
    text: str | None = Field(None, description="Training text file (default: the recipe's calibration text).")
    steps: int = Field(100, ge=1, le=10_000_000, description="Optimizer steps (the budget; other limits may stop "
                       "it sooner).")
    max_tokens: int | None = Field(None, ge=1, description="Stop after this many training tokens.")
    time_limit_s: float | None = Field(None, gt=0, description="Stop after this many seconds of training.")
    seq_len: int = Field(128, ge=8, le=1 << 16, description="Tokens per training window.")
    batch_size: int = Field(4, ge=1, le=4096, description="Windows per step.")
    lr: float = Field(5e-5, gt=0, le=1.0, description="AdamW learning rate (constant).")
    weight_decay: float = Field(0.0, ge=0, le=1.0, description="AdamW weight decay.")
    grad_clip: float = Field(1.0, gt=0, description="Gradient norm clip.")
    temperature: float = Field(2.0, gt=0, le=100.0, description="Softmax temperature of the logit loss.")
    lm_weight: float = Field(0.0, ge=0, le=1.0, description="Share of the language-modelling loss in the mix.")
    hidden_weight: float = Field(0.0, ge=0, le=100.0, description="Weight of the per-block hidden-state loss.")
    train: Literal["blocks", "all"] = Field("blocks", description="Train the blocks only (embeddings and head "
                                            "frozen), or everything.")
    keep_zeros: bool = Field(True, description="Exact zeros stay zero (a pruned student stays pruned; in a "
                             "quantized student, weights on the zero code too).")
    checkpoint_every: int = Field(25, ge=1, description="Steps between checkpoints (resume points).")
    logit_chunk: int = Field(128, ge=0, description="Tokens whose logits are computed at a time (the full "
                             "[batch, seq, vocab] float32 logits never exist); 0: all at once.")
    recompute_blocks: bool = Field(True, description="Recompute each block's activations in the backward pass "
                                   "instead of keeping them (less memory, about a third more time).")


def _plain_head(net) -> bool:
    """Whether the model's logits are just its output head applied to its base model's last hidden
    state (no logit scaling or soft-capping, as Gemma 2, Cohere and Granite add)."""
    config = net.config
    if any(getattr(config, key, None) not in (None, 1, 1.0) for key in
           ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")):
        return False
    return net.get_output_embeddings() is not None and getattr(net, "base_model", net) is not net


def _vocabulary(model) -> int | None:
    head = model.model.get_output_embeddings() if hasattr(model.model, "get_output_embeddings") else None
    rows = getattr(head, "out_features", None) or getattr(getattr(head, "weight", None), "shape", [None])[0]
    return int(rows) if rows else getattr(model.config, "vocab_size", None)


class Distiller(BaseCompressor):
    """Train the model to match its teacher's outputs (logit and hidden-state distillation)."""

    name = "distill"
    version = 2
    Config = DistillConfig
    teacher_field = "teacher"

    def check(self, model, adapter, config, ctx):
        if not is_causal_lm(model.model):
            raise ArchitectureError(f"distill trains on next-token logits; {model.architecture} is not a causal LM")
        if config.text is not None and not Path(config.text).is_file():
            raise ConfigError(f"distill: text {config.text} is not a file")
        if config.text is None and ctx.calibration is None:
            raise ConfigError("distill needs training text: set text, or add a calibration section (its text is used)")

    def compress_(self, model, adapter, config, ctx):
        from slimkit import TextSource, tokenize

        self.check(model, adapter, config, ctx)
        teacher = ctx.teacher
        if teacher is None:
            raise ConfigError("distill needs its teacher loaded by the recipe runner (run it with run_recipe)")
        student_vocab, teacher_vocab = _vocabulary(model), _vocabulary(teacher)
        if student_vocab != teacher_vocab or len(model.tokenizer) != len(teacher.tokenizer):
            raise ConfigError(f"distill: the student's vocabulary ({student_vocab} logits, tokenizer "
                              f"{len(model.tokenizer)}) differs from the teacher's ({teacher_vocab}, "
                              f"{len(teacher.tokenizer)}); logit distillation needs the same tokens")
        source = TextSource(Path(config.text or ctx.calibration.source))
        ctx.used_data(source.fingerprint)
        batches = WindowBatches(tokenize(model.tokenizer, source.text()), config.seq_len, config.batch_size, ctx.seed)

        student = model.model
        fake = fake_quantize_linears(student)  # undone in the finally below, whatever happens
        try:
            return self._train(model, adapter, config, ctx, teacher, source, batches, len(fake))
        finally:
            requantize_linears(student)

    def _train(self, model, adapter, config, ctx, teacher, source, batches, fake: int) -> CompressionSummary:
        student = model.model
        params = self._trainable(model, adapter, config)
        masks = sparsity_masks(params) if config.keep_zeros else {}
        hidden = None
        if config.hidden_weight > 0:
            with torch.random.fork_rng():
                torch.manual_seed(ctx.seed)
                hidden = HiddenStateLoss(student.config.num_hidden_layers, teacher.config.num_hidden_layers,
                                         student.config.hidden_size, teacher.config.hidden_size)
        learnable = list(params.values()) + (list(hidden.parameters()) if hidden is not None else [])
        optimizer = torch.optim.AdamW(learnable, lr=config.lr, weight_decay=config.weight_decay)
        run_id = fingerprint(config.model_dump(mode="json"), sorted((n, list(p.shape)) for n, p in params.items()),
                             source.fingerprint, ctx.seed)
        progress = {"step": 0, "tokens": 0, "seconds": 0.0, "losses": []}
        state = load_checkpoint(ctx.work_dir, run_id)
        resumed_from = 0
        if state is not None:
            with torch.no_grad():
                for name, param in params.items():
                    param.copy_(state["params"][name])
            if hidden is not None:
                hidden.load_state_dict(state["hidden"])
            optimizer.load_state_dict(state["optimizer"])
            progress = state["progress"]
            resumed_from = progress["step"]

        work = ctx.work_dir
        scratch = None if work is not None else tempfile.TemporaryDirectory(prefix="slimkit-distill-")
        folder = work if work is not None else Path(scratch.name)  # type: ignore[union-attr]
        was_training = student.training
        flags = {name: p.requires_grad for name, p in student.named_parameters()}
        for name, p in student.named_parameters():
            p.requires_grad_(name in params)
        student.eval()  # dropout off: the run is a function of the seed and the step number
        blocks = [block.module for block in adapter.layout(student).blocks]
        teacher.model.eval()
        reason = "steps"
        try:
            while True:
                reason = self._stop(config, progress)
                if reason:
                    break
                started = time.perf_counter()
                ids = batches.batch(progress["step"])
                optimizer.zero_grad(set_to_none=True)  # last step's gradients gone before this forward
                with recomputed(blocks) if config.recompute_blocks else contextlib.nullcontext():
                    loss = self._loss(student, teacher.model, ids, config, hidden)
                    loss.backward()
                for name, mask in masks.items():
                    params[name].grad.mul_(mask)  # type: ignore[union-attr]
                torch.nn.utils.clip_grad_norm_(learnable, config.grad_clip)
                optimizer.step()
                with torch.no_grad():
                    for name, mask in masks.items():
                        params[name].mul_(mask)
                progress["step"] += 1
                progress["tokens"] += ids.numel()
                progress["seconds"] += time.perf_counter() - started
                progress["losses"].append(float(loss.detach()))
                if not math.isfinite(progress["losses"][-1]):
                    raise ConfigError(f"distill: the loss became {progress['losses'][-1]} at step "
                                      f"{progress['step']}; lower lr")
                if progress["step"] % config.checkpoint_every == 0:
                    save_checkpoint(folder, {"fingerprint": run_id, "progress": progress,
                                             "params": {n: p.detach() for n, p in params.items()},
                                             "hidden": hidden.state_dict() if hidden is not None else {},
                                             "optimizer": optimizer.state_dict()})
                ctx.report("steps", progress["step"], config.steps, f"loss {progress['losses'][-1]:.4f}")
        finally:
            for name, p in student.named_parameters():
                p.requires_grad_(flags[name])
            student.train(was_training)
            if scratch is not None:
                scratch.cleanup()
        losses = progress["losses"]
        window = max(1, len(losses) // 10)
        first, last = sum(losses[:window]) / window, sum(losses[-window:]) / window
        return CompressionSummary(
            f"distilled {progress['step']} steps ({progress['tokens']:,} tokens, {progress['seconds']:.0f} s) from "
            f"the teacher; loss {first:.4f} -> {last:.4f} (first/last {window} steps); stopped by {reason}"
            + (f"; resumed at step {resumed_from}" if resumed_from else "")
            + (f"; {fake} quantized layers learned through fake quantization, codes put back on their grids"
               if fake else ""),
            {"steps": progress["step"], "tokens": progress["tokens"], "train_seconds": progress["seconds"],
             "loss_first": first, "loss_last": last, "stopped_by": reason, "resumed_from": resumed_from,
             "trained_parameters": sum(p.numel() for p in params.values()), "masked_layers": len(masks),
             "fake_quantized_layers": fake},
        )

    @staticmethod
    def _stop(config: DistillConfig, progress: dict) -> str:
        if progress["step"] >= config.steps:
            return "steps"
        if config.max_tokens is not None and progress["tokens"] >= config.max_tokens:
            return "max_tokens"
        if config.time_limit_s is not None and progress["seconds"] >= config.time_limit_s:
            return "time_limit_s"
        return ""

    @staticmethod
    def _trainable(model, adapter, config) -> dict[str, torch.nn.Parameter]:
        named = dict(model.model.named_parameters())  # tied parameters appear once
        if config.train == "all":
            return named
        layout = adapter.layout(model.model)
        prefix = layout.blocks_name + "."
        chosen = {name: p for name, p in named.items() if name.startswith(prefix)}
        if not chosen:
            raise ArchitectureError(f"distill: no parameters under {layout.blocks_name} to train")
        return chosen

    @staticmethod
    def _loss(student, teacher, ids, config, hidden) -> torch.Tensor:
        want_hidden = hidden is not None
        if config.logit_chunk and _plain_head(student) and _plain_head(teacher):
            with torch.no_grad():
                t = teacher.base_model(input_ids=ids, use_cache=False, output_hidden_states=want_hidden)
            s = student.base_model(input_ids=ids, use_cache=False, output_hidden_states=want_hidden)
            loss = chunked_logit_loss(s.last_hidden_state, t.last_hidden_state, student.get_output_embeddings(),
                                      teacher.get_output_embeddings(), ids, config.temperature, config.lm_weight,
                                      config.logit_chunk)
        else:
            with torch.no_grad():
                t = teacher(input_ids=ids, use_cache=False, output_hidden_states=want_hidden)
            s = student(input_ids=ids, use_cache=False, output_hidden_states=want_hidden)
            loss = logit_loss(s.logits, t.logits, config.temperature)
            if config.lm_weight > 0:
                loss = (1 - config.lm_weight) * loss + config.lm_weight * lm_loss(s.logits, ids)
        if hidden is not None:
            loss = loss + config.hidden_weight * hidden(s.hidden_states, t.hidden_states)
        return loss


@hookimpl
def register_compressors(register):
    register(Distiller)
