"""AWQ: activation-aware weight quantization (Lin et al. 2024).

A few input channels carry much larger activations than the rest, and the weights that multiply
them matter most. AWQ protects them without mixed precision: for each group of linears that read
one input (q/k/v, o, gate/up, down; see :func:`~.smoothquant.input_sites`) it scales input
channel ``j`` by ``s_j = mean|x_j|^α`` (normalised so ``max(s)·min(s) = 1``), quantizes ``W·s``
and divides the input by ``s``; a larger ``s_j`` shrinks channel j's relative rounding error.
``α`` is searched on a grid (``0, 1/n, …, (n-1)/n``; ``α = 0`` is plain round-to-nearest, so the
search can only improve on RTN on its data) by the output error of the group's layers,
``‖X Wᵀ − (X/s) Q(W·s)ᵀ‖²``. The division by ``s`` is folded into the op that produces the input
(the norm, v's rows for o, up's rows for down; :func:`~.smoothquant.fold_`), so the float model
is unchanged before rounding. With grouped-query attention the o scales are tied across the
query heads that share a v head, which is what makes the v → o fold exact.

Then a clipping search: per output row and group, the range is shrunk (ratios 1.0, 0.95, …,
``clip_min``) to minimise that group's contribution to the output error on the calibration inputs,
``dᵀ C_g d`` with ``d`` the rounding error and ``C_g = X_gᵀX_g`` (the group's block of the inputs'
Gram matrix, so no per-token products are formed). As in the reference implementation q and k
are not clipped (their outputs only enter through the attention softmax, where clipping hurt).
Finally every layer is rounded to nearest at its clipped parameters and stored as integers.

Blocks are processed on the sequential calibration engine, each seeing the outputs of the already
quantized blocks before it. Within a block all inputs are captured once on the float block, as in
the reference. The searches use a seeded sample of ``max_tokens`` tokens (same positions for every
input), which bounds memory at ``max_tokens × inputs`` floats per input; ``mean|x|`` is taken over
every calibration token.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from pydantic import Field

from slimkit import BaseCompressor, CompressionSummary, QuantGrid, dequantize_weight, hookimpl
from slimkit.plugins.quantization.common import WeightQuantConfig, finish, replace_with_codes, target_layers
from slimkit.plugins.quantization.smoothquant import SiteInputs, check_foldable, fold_, rtn_codes, smoothable_sites

NO_CLIP = ("q", "k", "qkv")
CLIP_STEP = 0.05


class AWQConfig(WeightQuantConfig):
    alpha_grid: int = Field(20, ge=1, le=100, description="Exponents tried for s = mean|x|^alpha: 0, 1/n, ..., (n-1)/n.")
    clip_search: bool = Field(True, description="Search a clipped range per row and group (not for q and k).")
    clip_min: float = Field(0.5, gt=0.0, le=1.0, description="Smallest range ratio the clipping search tries.")
    max_tokens: int = Field(4096, ge=16, le=1 << 20,
                            description="Calibration tokens sampled for the searches (memory: tokens x inputs).")


def _fake(weight: torch.Tensor, grid: QuantGrid, clip: torch.Tensor | float = 1.0) -> torch.Tensor:
    codes, scale, zero = rtn_codes(weight, grid, clip)
    return dequantize_weight(codes, scale, zero)


def output_error(x: torch.Tensor) -> Callable[[torch.Tensor], float]:
    """``delta -> ‖x deltaᵀ‖²`` for tokens ``x`` (``[n, in]``) and weight errors ``[out, in]``:
    through the Gram matrix ``xᵀx`` when it is smaller than the tokens, else in row chunks."""
    if x.shape[1] <= x.shape[0]:
        gram = x.T @ x
        return lambda delta: float(((delta @ gram) * delta).sum())
    rows = max(1, (1 << 24) // x.shape[0])
    return lambda delta: sum(float((x @ delta[i:i + rows].T).square().sum())
                             for i in range(0, delta.shape[0], rows))


def search_scale(weight: torch.Tensor, x: torch.Tensor, x_mean: torch.Tensor, grid: QuantGrid, points: int,
                 expand: Callable[[torch.Tensor], torch.Tensor] = lambda s: s) -> tuple[torch.Tensor, float]:
    """The best scales (per entry of ``x_mean``; ``expand`` maps them to ``weight``'s columns)
    and their ``α``, by the output error of ``weight`` (the group's layers stacked) on ``x``."""
    best: tuple[float, torch.Tensor, float] = (float("inf"), torch.ones_like(x_mean), 0.0)
    error_of = output_error(x)
    for i in range(points):
        alpha = i / points
        s = x_mean.float().pow(alpha).clamp(min=1e-4)
        s = s / (s.max() * s.min()).sqrt()
        columns = expand(s).unsqueeze(0)
        error = error_of(weight - _fake(weight * columns, grid) / columns)
        if error < best[0]:
            best = (error, s, alpha)
    return best[1], best[2]


def search_clip(weight: torch.Tensor, x: torch.Tensor, grid: QuantGrid, ratios: list[float]) -> torch.Tensor:
    """Range ratio per row and group (``[out, groups]``) with the least output error of each group."""
    rows, columns = weight.shape
    groups = grid.groups(columns)
    xg = x.reshape(x.shape[0], groups, -1).transpose(0, 1)  # [groups, tokens, width]
    gram = xg.transpose(1, 2) @ xg  # [groups, width, width]
    best_error = torch.full((rows, groups), float("inf"))
    best = torch.ones(rows, groups)
    for ratio in ratios:
        delta = (weight - _fake(weight, grid, ratio)).reshape(rows, groups, -1).transpose(0, 1)
        error = ((delta @ gram) * delta).sum(dim=2).T
        better = error < best_error
        best_error = torch.where(better, error, best_error)
        best = torch.where(better, torch.full_like(best, ratio), best)
    return best


def clip_ratios(clip_min: float) -> list[float]:
    return [1.0 - CLIP_STEP * i for i in range(int((1.0 - clip_min) / CLIP_STEP + 1e-9) + 1)]


def token_sample(total: int, wanted: int, seed: int) -> torch.Tensor:
    """Sorted indices of ``wanted`` of ``total`` tokens (all of them if there are fewer)."""
    if total <= wanted:
        return torch.arange(total)
    return torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:wanted].sort().values


def awq_(model: Any, adapter: Any, calibration: Any, config: AWQConfig, *, seed: int = 0, quantize: bool = True,
         report: Callable[[int, int, str], None] | None = None) -> dict[str, Any]:
    """Search and fold the scales and (with ``quantize``) clip and quantize, block by block.
    Returns the chosen ``α`` per site (one per block), what was not scaled and why, and each layer's relative
    output error on the sampled tokens, RTN's and AWQ's."""
    from slimkit import SequentialCalibration

    method = AWQQuantizer.name
    _, refs = target_layers(model, adapter, config, method)
    targeted = {ref.name for ref in refs}
    grid, ratios = config.grid(), clip_ratios(config.clip_min)
    keep = token_sample(calibration.n_samples * calibration.seq_len, config.max_tokens, seed)
    engine = SequentialCalibration(model, adapter, calibration)
    alphas: dict[str, list[float]] = {}
    skipped: dict[str, str] = {}
    errors: dict[str, dict[str, float]] = {}
    for index, step in enumerate(engine, start=1):
        sites = smoothable_sites(model.model, step.block, targeted, method)
        if not sites:
            continue
        seen = SiteInputs(model.model, sites, keep, offset=engine.first_token)
        try:
            step.collect([site.leader for site in sites], (), outputs=False)
        finally:
            seen.close()
        seen.reduce(step)
        seen.verify(method)
        samples = [sample for sample in seen.samples if sample is not None]  # collect() ran every site
        baseline: dict[str, tuple[float, float]] = {}  # layer -> (‖XWᵀ‖², RTN's error) before scaling
        row_scale: dict[str, torch.Tensor] = {}  # layer -> s: its original output = present output * s
        for number, site in enumerate(sites):
            x = samples[number]
            layers = [ref for ref in site.readers if ref.name in targeted]
            weights = [ref.weight_out_in().detach().float() for ref in layers]
            if quantize:
                error_of = output_error(x)
                for ref, weight in zip(layers, weights):
                    baseline[ref.name] = (error_of(weight), error_of(weight - _fake(weight, grid)))
            if not site.foldable:
                skipped[site.name] = site.reason
                continue
            s, alpha = search_scale(torch.cat(weights), x, site.reduce(seen.mean(number), "mean"), grid,
                                    config.alpha_grid, site.expand)
            fold_(model.model, site, s)
            x.div_(site.expand(s).unsqueeze(0))
            if site.producer is not None:
                row_scale[site.producer.name] = s
            alphas.setdefault(site.name, []).append(alpha)
        if quantize:
            for number, site in enumerate(sites):
                error_of = output_error(samples[number])
                for ref in (ref for ref in site.readers if ref.name in targeted):
                    weight = ref.weight_out_in().detach().float()
                    clip: torch.Tensor | float = 1.0
                    if config.clip_search and ref.role not in NO_CLIP:
                        clip = search_clip(weight, samples[number], grid, ratios)
                    codes, scale, zero = rtn_codes(weight, grid, clip)
                    delta = weight - dequantize_weight(codes, scale, zero)
                    if ref.name in row_scale:  # measured as the layer's original output
                        delta *= row_scale[ref.name].unsqueeze(1)
                    energy, rtn = baseline[ref.name]
                    errors[ref.name] = {"rtn": rtn / max(energy, 1e-30),
                                        "awq": error_of(delta) / max(energy, 1e-30)}
                    replace_with_codes(model.model, ref, codes, scale, zero, grid)
        if report is not None:
            report(index, len(engine), step.block.name)
    return {"alpha": alphas, "not_scaled": skipped, "output_error": errors}


class AWQQuantizer(BaseCompressor):
    """Activation-aware scaling and clipping, then integer weights (needs calibration data)."""

    name = "quantize.awq"
    version = 1
    Config = AWQConfig
    needs_calibration = True

    def check(self, model, adapter, config, ctx):
        ctx.require_calibration(self.name, "activation magnitudes")
        check_foldable(model, adapter, config, self.name)

    def stream_refusal(self, config, ctx):
        return None  # block by block on the calibration engine

    def compress_(self, model, adapter, config, ctx):
        details = awq_(model, adapter, ctx.calibration, config, seed=ctx.seed,
                       report=lambda i, n, name: ctx.report("blocks", i, n, name))
        layout = adapter.layout(model.model)
        summary = finish(model, layout, [ref for _, ref in layout.linears(config.roles)], config,
                         "AWQ (activation-aware scales" + (", clipping search)" if config.clip_search else ")"))
        errors = details["output_error"].values()
        mean = {k: sum(e[k] for e in errors) / max(1, len(errors)) for k in ("rtn", "awq")}
        return CompressionSummary(summary.description,
                                  {**summary.details, **details, "mean_output_error": mean})


@hookimpl
def register_compressors(register):
    register(AWQQuantizer)
