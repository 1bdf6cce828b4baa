"""What the bundled weight quantizers share: their config fields, the checks every one makes,
and swapping float layers for :class:`slimkit.QuantizedLinear`."""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, field_validator
from torch import nn

from slimkit import (
    ALL_ROLES, QUANT_BITS, ArchitectureError, CompressionSummary, ConfigError, LinearRef, MethodConfig, ModelLayout,
    QuantGrid, QuantizedEmbedding, QuantizedLinear, Role, set_module,
)


class WeightQuantConfig(MethodConfig):
    bits: Literal[2, 3, 4, 8] = Field(4, description="Bits per weight.")
    group_size: int | None = Field(
        None, ge=1,
        description="Inputs sharing one scale, e.g. 32, 64 or 128 where it divides every layer's inputs "
        "(4 bits and fewer want groups); empty: one scale per output channel, which fits any model.",
    )
    symmetric: bool = Field(True, description="Zero point fixed at the grid's middle (else per group).")
    roles: tuple[Role, ...] = Field(ALL_ROLES, description="Which block projections to quantize.")
    embeddings: Literal["float", "int8"] = Field(
        "float", description="int8: also store the token embedding (and a tied output head) as int8 per row."
    )

    @field_validator("bits", mode="before")
    @classmethod
    def _bits(cls, value: Any) -> Any:
        if isinstance(value, int) and value not in QUANT_BITS:
            raise ValueError(f"unsupported bit width {value}; supported: {', '.join(map(str, QUANT_BITS))}")
        return value

    def grid(self) -> QuantGrid:
        return QuantGrid(self.bits, self.group_size, self.symmetric)


def target_layers(model: Any, adapter: Any, config: WeightQuantConfig, method: str) -> tuple[ModelLayout, list[LinearRef]]:
    """The layers ``config`` selects, after the checks every quantizer makes: the architecture has
    them, none is quantized already, and the group size divides each one's inputs."""
    layout = adapter.layout(model.model)
    refs = [ref for _, ref in layout.linears(config.roles)]
    if not refs:
        raise ArchitectureError(f"{model.architecture} has no projections with roles {', '.join(config.roles)}")
    done = [ref.name for ref in refs if ref.quantized]
    if done:
        raise ArchitectureError(f"{method}: {done[0]} (and {len(done) - 1} more) is already quantized; "
                                "quantize a float model, or dequantize this one first")
    if config.group_size is not None:
        bad = [ref for ref in refs if ref.in_features % config.group_size]
        if bad:
            widths = sorted({ref.in_features for ref in bad})
            raise ConfigError(f"{method}: group_size {config.group_size} does not divide the inputs of {bad[0].name} "
                              f"({bad[0].in_features}) and {len(bad) - 1} more layer(s) with {widths} inputs; "
                              f"choose a divisor of {', '.join(map(str, widths))}")
    if config.embeddings == "int8":
        table = model.model.get_submodule(layout.embeddings[0]) if layout.embeddings else None
        if not isinstance(table, nn.Embedding):
            raise ArchitectureError(f"{method}: embeddings=int8 needs a float token embedding; "
                                    f"{model.architecture} has {type(table).__name__}")
    return layout, refs


def replace_with_codes(model: nn.Module, ref: LinearRef, codes: torch.Tensor, scale: torch.Tensor,
                       zero: torch.Tensor, grid: QuantGrid, activations: str | None = None) -> QuantizedLinear:
    bias = getattr(ref.module, "bias", None)
    module = QuantizedLinear.from_codes(codes, scale, zero, grid, bias=bias, activations=activations)
    set_module(model, ref.name, module)
    return module


def quantize_embeddings(model: nn.Module, layout: ModelLayout) -> int:
    """Token embedding (and the output head, if tied to it) as int8 per row; returns the number
    of weights quantized."""
    name = layout.embeddings[0]
    table = model.get_submodule(name)
    quantized = QuantizedEmbedding.from_embedding(table)
    set_module(model, name, quantized)
    count = table.weight.numel()
    if layout.lm_head is not None:
        head = model.get_submodule(layout.lm_head)
        if layout.tied_embeddings or head.weight is table.weight:
            set_module(model, layout.lm_head, quantized.tied_head(getattr(head, "bias", None)))
    return count


def finish(model, layout, refs, config, how: str) -> CompressionSummary:
    """Quantize the embeddings if asked and describe the result (shared by the quantizers)."""
    weights = sum(ref.in_features * ref.out_features for ref in refs)
    embedded = quantize_embeddings(model.model, layout) if config.embeddings == "int8" else 0
    grid = config.grid()
    extra = f", embeddings int8 ({embedded:,} weights)" if embedded else ""
    return CompressionSummary(
        f"quantized {weights:,} weights in {len(refs)} layers to {grid.describe()} by {how}{extra}",
        {"quantized_weights": weights, "layers": len(refs), "bits": grid.bits, "group_size": grid.group_size,
         "symmetric": grid.symmetric, "embedding_weights": embedded},
    )
