"""SmoothQuant W8A8 (Xiao et al. 2023), and the per-channel smoothing that AWQ shares with it.

**Smoothing.** A linear layer computes ``y = x Wᵀ``. For any positive per-input-channel vector
``s``, ``y = (x / s) (W diag(s))ᵀ``: the float function is unchanged, but outliers move between
activations and weights. The division need not cost anything at run time when the op that
produces ``x`` can absorb it: a norm's weight (and bias), or the output rows of an earlier
linear whose output reaches ``x`` linearly. The places where that works in a Llama-style block
are its four :class:`InputSite` objects:

* *attention input*: q/k/v (or a fused qkv) read the first norm's output;
* *attention output*: o reads softmax(QKᵀ)·V, linear in V, so v's rows can absorb ``s``; with
  grouped-query attention each v row feeds ``heads / kv_heads`` query heads, so the scales of the
  repeated o columns are tied (one value per v row);
* *MLP input*: gate/up read the second norm's output;
* *MLP output*: down reads ``act(gate(x)) * up(x)``, linear in up's output, so up's rows absorb
  ``s`` (only for gated MLPs: through a non-linearity alone the fold would be wrong).

Whether a norm really feeds its site is checked on the data (the reader's input must be the very
tensor the norm returned), and whether the norm scales its output by its weight is checked with a
probe (a Gemma-style ``(1 + weight)`` norm fails it): either failure is an ArchitectureError.

**SmoothQuant** then picks ``s_j = max|X_j|^α / max|W_j|^(1-α)`` (``α = 0.5`` by default: half of
the activations' outlier range migrates into the weights), folds it in, and stores every targeted
layer as int8 per output channel with int8 per-token dynamic activations (``int8-dynamic``
kernel). As in the paper, o's input is not smoothed (its scales would have to be tied across the
heads), but o is still W8A8; down's input is smoothed through up by default (``smooth_down``), as
its activations carry Llama's largest outliers.
"""

from __future__ import annotations

import copy

from dataclasses import dataclass
from typing import Any, Callable, Literal

import torch
from pydantic import Field
from torch import nn

from slimkit import (
    ALL_ROLES, ArchitectureError, BaseCompressor, BlockLayout, CompressionSummary, LinearRef, MethodConfig, QuantGrid,
    Role, fp16_exact, grid_params, hookimpl, quantize_weight,
)
from slimkit.plugins.quantization.common import WeightQuantConfig, finish, replace_with_codes, target_layers

W8 = QuantGrid(bits=8, group_size=None, symmetric=True)
NORM_SITES = ("attention input", "mlp input")


@dataclass(frozen=True)
class InputSite:
    """One input read by ``readers`` and produced by a norm (``norm``) or by the output rows of a
    linear (``producer``); neither when the input cannot be smoothed (``reason`` says why)."""

    name: str
    readers: tuple[LinearRef, ...]
    norm: str | None = None
    producer: LinearRef | None = None
    repeat: int = 1  # GQA: each producer channel feeds `repeat` query heads' worth of columns
    head_dim: int = 1
    reason: str = ""

    @property
    def leader(self) -> LinearRef:
        return self.readers[0]

    @property
    def foldable(self) -> bool:
        return not self.reason

    def expand(self, s: torch.Tensor) -> torch.Tensor:
        """Scales per producer channel -> per input column (repeated for GQA)."""
        if self.repeat == 1:
            return s
        return s.view(-1, 1, self.head_dim).expand(-1, self.repeat, -1).reshape(-1)

    def reduce(self, values: torch.Tensor, how: Literal["mean", "max"]) -> torch.Tensor:
        """A per-column statistic -> per producer channel (mean or max over the tied columns)."""
        if self.repeat == 1:
            return values
        tied = values.view(-1, self.repeat, self.head_dim)
        return (tied.mean(dim=1) if how == "mean" else tied.amax(dim=1)).reshape(-1)


def input_sites(block: BlockLayout) -> list[InputSite]:
    """The block's four inputs (see the module docstring), in forward order."""
    att, mlp, norms = block.attention, block.mlp, block.norms
    qkv = tuple(ref for ref in (att.q, att.k, att.v, att.qkv) if ref is not None)
    sites = [_norm_site("attention input", qkv, norms[0] if norms else None)]
    reason = ""
    if att.v is None:
        reason = "v is fused into qkv"
    elif att.v.quantized:
        reason = f"{att.v.name} is already quantized"
    elif (att.num_heads % att.num_kv_heads or att.v.out_features != att.num_kv_heads * att.head_dim
          or att.o.in_features != att.num_heads * att.head_dim):
        reason = "v's rows do not map onto o's columns head by head"
    sites.append(InputSite("attention output", (att.o,), producer=None if reason else att.v,
                           repeat=att.group_size, head_dim=att.head_dim, reason=reason))
    gated = tuple(ref for ref in (mlp.gate, mlp.up) if ref is not None)
    sites.append(_norm_site("mlp input", gated, norms[1] if len(norms) > 1 else None))
    reason = ("the MLP is not gated (a non-linearity sits between up and down)" if mlp.gate is None
              else f"{mlp.up.name} is already quantized" if mlp.up.quantized else "")
    sites.append(InputSite("mlp output", (mlp.down,), producer=None if reason else mlp.up, reason=reason))
    return sites


def _norm_site(name: str, readers: tuple[LinearRef, ...], norm: str | None) -> InputSite:
    done = [ref.name for ref in readers if ref.quantized]
    reason = f"{done[0]} is already quantized" if done else "" if norm else "the block has no norm before it"
    return InputSite(name, readers, norm=norm, reason=reason)


def check_norm(model: nn.Module, name: str) -> None:
    """Raise ArchitectureError unless dividing ``name``'s weight (and bias) by ``s`` divides its
    output by ``s`` (probed on random inputs; the weights are restored exactly)."""
    norm = model.get_submodule(name)
    weight, bias = getattr(norm, "weight", None), getattr(norm, "bias", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 1:
        raise ArchitectureError(f"{name} ({type(norm).__name__}) has no per-channel weight to fold scales into")
    generator = torch.Generator().manual_seed(0)
    if weight.is_meta:  # a model streamed block by block: probe a copy of the norm with weights of its own
        norm = copy.deepcopy(norm).to_empty(device="cpu")
        weight, bias = norm.weight, getattr(norm, "bias", None)
        with torch.no_grad():
            for p in (weight, bias):
                if isinstance(p, torch.Tensor):
                    p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=generator))
    x = torch.randn(4, weight.numel(), generator=generator).to(weight)
    s = (0.5 + torch.rand(weight.numel(), generator=generator)).to(weight)
    params = [p for p in (weight, bias) if isinstance(p, torch.Tensor)]
    saved = [p.detach().clone() for p in params]
    try:
        with torch.no_grad():
            before = norm(x)
            for p in params:
                p.div_(s)
            after = norm(x)
    finally:
        with torch.no_grad():
            for p, old in zip(params, saved):
                p.copy_(old)
    tolerance = 1e-4 if weight.dtype in (torch.float32, torch.float64) else 3e-2
    if not isinstance(after, torch.Tensor) or not torch.allclose(after * s, before, rtol=tolerance, atol=tolerance):
        raise ArchitectureError(f"{name} ({type(norm).__name__}) does not scale its output by its weight "
                                "(e.g. a (1 + weight) norm): per-channel scales cannot be folded into it")


def smoothable_sites(model: nn.Module, block: BlockLayout, targeted: set[str], method: str) -> list[InputSite]:
    """The sites with targeted readers; raises ArchitectureError if a norm site cannot be folded."""
    sites = [site for site in input_sites(block) if any(ref.name in targeted for ref in site.readers)]
    for site in sites:
        if site.name in NORM_SITES and site.norm is None:
            raise ArchitectureError(f"{method}: {site.leader.name}: {site.reason}; {method} folds its scales into "
                                    "the norm before q/k/v and gate/up (Llama-style pre-norm blocks)")
        if site.norm is not None and site.foldable:
            check_norm(model, site.norm)
    return sites


def check_foldable(model: Any, adapter: Any, config: WeightQuantConfig, method: str) -> None:
    """The check SmoothQuant and AWQ make before running: the layers ``config`` selects are
    quantizable and every norm their scales would be folded into can take them."""
    layout, refs = target_layers(model, adapter, config, method)
    targeted = {ref.name for ref in refs}
    for block in layout.blocks:
        smoothable_sites(model.model, block, targeted, method)


def fold_(model: nn.Module, site: InputSite, s: torch.Tensor) -> None:
    """Divide the site's producer by ``s`` (per producer channel) and multiply its readers'
    columns by it: the float model computes the same function (up to float rounding)."""
    columns = site.expand(s).float()

    def scale(t: torch.Tensor, by: torch.Tensor) -> None:
        t.copy_((t.float() * by).to(t.dtype))

    with torch.no_grad():
        if site.producer is not None:
            scale(site.producer.weight_out_in(), 1.0 / s.float().unsqueeze(1))
            bias = getattr(site.producer.module, "bias", None)
            targets = [bias] if isinstance(bias, torch.Tensor) else []
        else:
            norm = model.get_submodule(str(site.norm))
            targets = [p for p in (norm.weight, getattr(norm, "bias", None)) if isinstance(p, torch.Tensor)]
        for t in targets:
            scale(t, 1.0 / s.float())
        for ref in site.readers:
            scale(ref.weight_out_in(), columns.unsqueeze(0))


class SiteInputs:
    """Forward hooks that watch the sites' inputs during one collect pass: per channel the sum and
    the maximum of |x| over every token, a fixed sample of tokens (``keep``: sorted global token
    indices; rows in batch order), and whether each norm site's input is its norm's output.
    ``offset``: the global index of the first token this process sees (its rank's share of a
    data-parallel run); :meth:`reduce` then combines the ranks' figures."""

    def __init__(self, model: nn.Module, sites: list[InputSite], keep: torch.Tensor | None = None,
                 offset: int = 0) -> None:
        self.sites, self.keep, self.offset = sites, keep, offset
        self.tokens = [0] * len(sites)
        self.abs_sum: list[torch.Tensor | None] = [None] * len(sites)
        self.abs_max: list[torch.Tensor | None] = [None] * len(sites)
        self.samples: list[torch.Tensor | None] = [None] * len(sites)
        self.feeds = [True] * len(sites)
        self._last: dict[str, Any] = {}
        self._handles = []
        for norm in {site.norm for site in sites if site.norm is not None}:
            hook = (lambda _m, _a, out, name=norm: self._last.__setitem__(name, out))
            self._handles.append(model.get_submodule(norm).register_forward_hook(hook))
        for index, site in enumerate(sites):
            self._handles.append(site.leader.module.register_forward_pre_hook(
                lambda _m, args, index=index: self._seen(index, args[0])))

    def _seen(self, index: int, x: torch.Tensor) -> None:
        site = self.sites[index]
        if site.norm is not None and self._last.get(site.norm) is not x:
            self.feeds[index] = False
        rows = x.detach().reshape(-1, x.shape[-1]).float()
        magnitude = rows.abs()
        total, peak = magnitude.sum(dim=0, dtype=torch.float64), magnitude.amax(dim=0)
        before = self.abs_sum[index]
        self.abs_sum[index] = total if before is None else before.add_(total)
        highest = self.abs_max[index]
        self.abs_max[index] = peak if highest is None else torch.maximum(highest, peak)
        first = self.offset + self.tokens[index]
        self.tokens[index] += rows.shape[0]
        if self.keep is not None:
            lo, hi = (int(torch.searchsorted(self.keep, v)) for v in (first, first + rows.shape[0]))
            if self.samples[index] is None:  # zeros: another rank's rows are added into them by reduce()
                self.samples[index] = torch.zeros(self.keep.numel(), rows.shape[1], device=rows.device)
            self.samples[index][lo:hi] = rows[self.keep[lo:hi].to(rows.device) - first]  # type: ignore[index]

    def reduce(self, step: Any) -> None:
        """Combine the ranks' figures (a no-op in one process): sums and token counts added, maxima
        taken, each sampled token's row from the rank that saw it, and a norm site feeds only if it
        does on every rank."""
        if not step.world.distributed:
            return
        for index in range(len(self.sites)):
            counted = torch.tensor([float(self.tokens[index])], dtype=torch.float64)
            self.tokens[index] = int(step.all_reduce(counted).item())
            for values, op in ((self.abs_sum[index], "sum"), (self.abs_max[index], "max"),
                               (self.samples[index], "sum")):
                if values is not None:
                    step.all_reduce(values, op)
        feeds = torch.tensor([1.0 if feed else 0.0 for feed in self.feeds])
        self.feeds = [bool(value) for value in step.all_reduce(feeds, "min").tolist()]

    def mean(self, index: int) -> torch.Tensor:
        return (self.abs_sum[index] / max(1, self.tokens[index])).float()  # type: ignore[operator]

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._last.clear()

    def verify(self, method: str) -> None:
        for site, feeds in zip(self.sites, self.feeds):
            if site.norm is not None and not feeds:
                raise ArchitectureError(f"{method}: {site.leader.name} does not read the output of {site.norm} "
                                        "(a post-norm block?); the scales cannot be folded into that norm")


def rtn_codes(weight: torch.Tensor, grid: QuantGrid, clip: torch.Tensor | float = 1.0
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(codes, scale, zero)`` of round-to-nearest with float16-exact scales (as stored)."""
    scale, zero = grid_params(weight, grid, clip=clip)
    scale = fp16_exact(scale)
    return quantize_weight(weight, scale, zero, grid), scale, zero


def smoothing_scales(act_max: torch.Tensor, weight_max: torch.Tensor, alpha: float) -> torch.Tensor:
    """SmoothQuant's ``max|X_j|^α / max|W_j|^(1-α)``, clamped as in the reference code."""
    return (act_max.float().clamp(min=1e-5).pow(alpha) / weight_max.float().clamp(min=1e-5).pow(1 - alpha)
            ).clamp(min=1e-5)


class SmoothQuantConfig(MethodConfig):
    alpha: float = Field(0.5, ge=0.0, le=1.0, description="Migration strength: s = max|X|^alpha / max|W|^(1-alpha).")
    roles: tuple[Role, ...] = Field(ALL_ROLES, description="Which block projections become W8A8.")
    smooth_down: bool = Field(True, description="Also smooth down's input through up's rows (gated MLPs).")
    embeddings: Literal["float", "int8"] = Field(
        "float", description="int8: also store the token embedding (and a tied output head) as int8 per row.")

    def weights(self) -> WeightQuantConfig:
        """The weight grid every targeted layer gets: int8 symmetric per output channel."""
        return WeightQuantConfig(bits=8, group_size=None, symmetric=True, roles=self.roles,
                                 embeddings=self.embeddings)


def smoothquant_(model: Any, adapter: Any, calibration: Any, config: SmoothQuantConfig, *, quantize: bool = True,
                 report: Callable[[int, int, str], None] | None = None) -> dict[str, Any]:
    """Smooth (and, with ``quantize``, make W8A8) the model block by block on the calibration
    engine; returns what was smoothed and why anything was not."""
    from slimkit import SequentialCalibration

    _, refs = target_layers(model, adapter, config.weights(), SmoothQuantizer.name)
    targeted = {ref.name for ref in refs}
    engine = SequentialCalibration(model, adapter, calibration)
    smoothed, skipped = 0, {}
    for index, step in enumerate(engine, start=1):
        sites = smoothable_sites(model.model, step.block, targeted, SmoothQuantizer.name)
        kept = []
        for site in sites:
            why = ("SmoothQuant leaves o's input as it is (o is still W8A8)" if site.name == "attention output"
                   else "smooth_down is off" if site.name == "mlp output" and not config.smooth_down
                   else site.reason)
            if why:
                skipped[site.name] = why
            else:
                kept.append(site)
        sites = kept
        if sites:
            seen = SiteInputs(model.model, sites)
            try:
                step.collect([site.leader for site in sites], (), outputs=False)
            finally:
                seen.close()
            seen.reduce(step)
            seen.verify(SmoothQuantizer.name)
            for number, site in enumerate(sites):
                weights = torch.cat([ref.weight_out_in().detach().abs().float() for ref in site.readers])
                act_max = site.reduce(seen.abs_max[number], "max")  # type: ignore[arg-type]
                fold_(model.model, site, smoothing_scales(act_max, site.reduce(weights.amax(dim=0), "max"),
                                                          config.alpha))
                smoothed += 1
        if quantize:
            for ref in step.block.linears():
                if ref.name in targeted:
                    codes, scale, zero = rtn_codes(ref.weight_out_in().detach(), W8)
                    replace_with_codes(model.model, ref, codes, scale, zero, W8, activations="int8")
        if report is not None:
            report(index, len(engine), step.block.name)
    return {"smoothed_inputs": smoothed, "not_smoothed": skipped, "alpha": config.alpha}


class SmoothQuantizer(BaseCompressor):
    """W8A8: smooth activation outliers into the weights, then int8 weights and activations."""

    name = "quantize.smoothquant"
    version = 1
    Config = SmoothQuantConfig
    needs_calibration = True

    def check(self, model, adapter, config, ctx):
        ctx.require_calibration(self.name, "max |x| per channel")
        check_foldable(model, adapter, config.weights(), self.name)

    def compress_(self, model, adapter, config, ctx):
        details = smoothquant_(model, adapter, ctx.calibration, config,
                               report=lambda i, n, name: ctx.report("blocks", i, n, name))
        layout = adapter.layout(model.model)
        refs = [ref for _, ref in layout.linears(config.roles)]
        summary = finish(model, layout, refs, config.weights(), f"SmoothQuant (alpha {config.alpha:g}), "
                                                                "int8 dynamic per-token activations")
        return CompressionSummary(summary.description, {**summary.details, **details, "activations": "int8"})


@hookimpl
def register_compressors(register):
    register(SmoothQuantizer)
