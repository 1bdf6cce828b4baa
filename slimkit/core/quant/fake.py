"""Fake quantization: a trainable float stand-in for a :class:`QuantizedLinear` whose forward uses
the quantized weight and whose gradients reach a float ("latent") weight, so a quantized model can
learn (quantization-aware distillation) and be put back on its integer grid afterwards.

The grid is frozen: each group keeps the stored ``scale`` and ``zero``, only the codes may change.
The latent weight starts at the dequantized weight (the float original is gone), so a code moves
once training pushes its latent value across half a step. The forward clamps the latent weight to
the group's range and rounds it to the grid; the backward passes gradients straight through the
rounding and stops them outside the range (the clipped straight-through estimator), so latent
weights cannot drift away past the grid's ends. Layers with int8 activations (SmoothQuant W8A8)
fake-quantize their inputs the same way (per token, symmetric), as their integer kernel does.

:func:`fake_quantize_linears` swaps a model's quantized linears for :class:`FakeQuantLinear`;
:func:`requantize_linears` swaps them back (codes from the trained latent weights, the same scales,
zeros, grid and activations): the result is stored exactly like any quantized model.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from slimkit.core.architecture import set_module
from slimkit.core.quant.modules import QuantizedEmbedding, QuantizedLinear


def _straight_through(value: torch.Tensor, rounded: torch.Tensor) -> torch.Tensor:
    """``rounded`` forward, the identity backward."""
    return value + (rounded - value).detach()


class FakeQuantLinear(nn.Module):
    """Float latent weight, quantized forward, straight-through backward (see the module docstring)."""

    scale: torch.Tensor
    zero: torch.Tensor

    def __init__(self, source: QuantizedLinear) -> None:
        super().__init__()
        self.in_features, self.out_features = source.in_features, source.out_features
        self.grid, self.activations = source.grid, source.activations
        with torch.no_grad():
            self.weight = nn.Parameter(source.dequantized_weight(torch.float32).clone())
            self.bias = nn.Parameter(source.bias.detach().float().clone()) if source.bias is not None else None
        self.register_buffer("scale", source.scales.float().clone())
        self.register_buffer("zero", source.zero_codes().clone())

    def _grouped(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.reshape(self.out_features, self.scale.shape[1], -1)

    def codes(self) -> torch.Tensor:
        """The codes the latent weight rounds to now (``uint8``, ``[out, in]``)."""
        scale, zero = self.scale.unsqueeze(2), self.zero.unsqueeze(2)
        q = torch.round(self._grouped(self.weight.detach()) / scale + zero).clamp_(0, self.grid.max_code)
        return q.reshape(self.out_features, self.in_features).to(torch.uint8)

    def quantized_weight(self) -> torch.Tensor:
        """The weight the forward uses: on the grid, differentiable (straight through) inside it."""
        scale, zero = self.scale.unsqueeze(2), self.zero.unsqueeze(2)
        low, high = (0 - zero) * scale, (self.grid.max_code - zero) * scale
        inside = torch.maximum(torch.minimum(self._grouped(self.weight), high), low)  # no gradient beyond the ends
        rounded = (torch.round(inside / scale + zero) - zero) * scale
        return _straight_through(inside, rounded).reshape(self.out_features, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activations == "int8":
            step = x.detach().abs().amax(dim=-1, keepdim=True).clamp(min=1e-8) / 127.0
            x = _straight_through(x, torch.round(x / step).clamp(-127, 127) * step)
        return F.linear(x, self.quantized_weight().to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))

    def to_quantized(self) -> QuantizedLinear:
        """A :class:`QuantizedLinear` with this layer's current codes and the original grid."""
        with torch.no_grad():
            bias = None if self.bias is None else self.bias.detach()
            return QuantizedLinear.from_codes(self.codes(), self.scale, self.zero, self.grid, bias=bias,
                                              activations=self.activations)

    def extra_repr(self) -> str:
        act = ", activations=int8" if self.activations else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, fake {self.grid.describe()}{act}"


def fake_quantize_linears(model: nn.Module) -> list[str]:
    """Replace every :class:`QuantizedLinear` of ``model`` by a :class:`FakeQuantLinear`; returns
    their names. A tied output head sharing an int8 embedding table's buffers stays as it is (the
    table has no trainable form here)."""
    tied = {id(m.qweight) for m in model.modules() if isinstance(m, QuantizedEmbedding)}
    names = [name for name, m in model.named_modules()
             if isinstance(m, QuantizedLinear) and id(m.qweight) not in tied]
    for name in names:
        set_module(model, name, FakeQuantLinear(model.get_submodule(name)))  # type: ignore[arg-type]
    return names


def requantize_linears(model: nn.Module) -> list[str]:
    """Replace every :class:`FakeQuantLinear` of ``model`` by its :meth:`~FakeQuantLinear.to_quantized`."""
    names = [name for name, m in model.named_modules() if isinstance(m, FakeQuantLinear)]
    for name in names:
        set_module(model, name, model.get_submodule(name).to_quantized())  # type: ignore[operator]
    return names
