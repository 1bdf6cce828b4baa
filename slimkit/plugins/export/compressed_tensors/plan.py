"""What each layer of a slimkit model becomes in a compressed-tensors folder.

* a :class:`slimkit.QuantizedLinear` of the blocks keeps its integer codes: weight-only grids go
  out ``pack-quantized`` (``weight_packed``/``weight_scale``/``weight_shape``, and
  ``weight_zero_point`` when asymmetric), SmoothQuant's W8A8 layers ``int-quantized`` (an int8
  ``weight`` and ``weight_scale``, with dynamic per-token int8 input activations in the config);
* the token embedding and the output head go out as float weights, dequantized exactly (an int8
  code times a float16 scale is exact in float32): transformers 5.25 cannot build a quantized
  ``nn.Embedding`` from a compressed-tensors config (its weight initialisation looks for the
  ``weight`` the compressor removed), and vLLM reads quantized heads and embeddings only in its
  newest releases, so both stay in the ``ignore`` list;
* float layers go out as they are; a :class:`slimkit.LowRankLinear` has no compressed-tensors
  form and is refused (densify it first).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from slimkit import LowRankLinear, QuantizedEmbedding, QuantizedLinear

PACK_QUANTIZED = "pack-quantized"
INT_QUANTIZED = "int-quantized"
MIXED = "mixed-precision"
DENSE = "dense"


@dataclass(frozen=True)
class Scheme:
    """One compressed-tensors config group: a weight grid (and SmoothQuant's int8 activations)."""

    bits: int
    group_size: int | None
    symmetric: bool
    activations: str | None = None

    @property
    def format(self) -> str:
        return INT_QUANTIZED if self.activations == "int8" else PACK_QUANTIZED

    def describe(self) -> str:
        group = "per channel" if self.group_size is None else f"g{self.group_size}"
        act = " + int8 dynamic per-token activations" if self.activations == "int8" else ""
        return f"int{self.bits} {'sym' if self.symmetric else 'asym'} {group}{act}"

    @classmethod
    def of(cls, module: QuantizedLinear) -> "Scheme":
        grid = module.grid
        return cls(grid.bits, grid.group_size, grid.symmetric, module.activations)


@dataclass
class ExportPlan:
    """The layers of one model, sorted by how they are written (names as in ``state_dict``)."""

    quantized: dict[str, tuple[QuantizedLinear, Scheme]] = field(default_factory=dict)
    dequantized: dict[str, nn.Module] = field(default_factory=dict)  # written as float weights
    low_rank: list[str] = field(default_factory=list)
    float_linears: list[str] = field(default_factory=list)
    head: str | None = None  # the output head's name (tied or not, quantized or not)

    @property
    def schemes(self) -> dict[Scheme, list[str]]:
        groups: dict[Scheme, list[str]] = {}
        for name, (_, scheme) in self.quantized.items():
            groups.setdefault(scheme, []).append(name)
        return groups

    @property
    def format(self) -> str:
        formats = {scheme.format for scheme in self.schemes}
        if not formats:
            return DENSE
        return formats.pop() if len(formats) == 1 else MIXED

    @property
    def ignored(self) -> list[str]:
        """The linear layers a ``Linear`` target must skip: float ones and dequantized heads."""
        heads = [name for name, module in self.dequantized.items() if isinstance(module, QuantizedLinear)]
        return sorted(set(self.float_linears) | set(heads))

    def owner(self, key: str) -> str | None:
        """The replaced layer a ``state_dict`` key belongs to, if any."""
        module = key.rpartition(".")[0]
        while module:
            if module in self.quantized or module in self.dequantized:
                return module
            module = module.rpartition(".")[0]
        return None


def plan_export(model: Any) -> ExportPlan:
    """Sort the layers of ``model`` (a transformers model holding slimkit's modules)."""
    plan = ExportPlan()
    heads = _output_heads(model)
    for name, module in model.named_modules():
        if heads is not None and module is heads:
            plan.head = name
        if isinstance(module, LowRankLinear):
            plan.low_rank.append(name)
        elif isinstance(module, QuantizedEmbedding):
            plan.dequantized[name] = module
        elif isinstance(module, QuantizedLinear):
            if module is heads or any(module.qweight is m.qweight for m in _embeddings(model)):
                plan.dequantized[name] = module  # the output head (tied to a table, or not)
            elif not any(name.startswith(low + ".") for low in plan.low_rank):
                plan.quantized[name] = (module, Scheme.of(module))
        elif isinstance(module, nn.Linear) and not any(name.startswith(low + ".") for low in plan.low_rank):
            plan.float_linears.append(name)
    return plan


def _output_heads(model: Any) -> nn.Module | None:
    try:
        return model.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return None


def _embeddings(model: Any) -> list[QuantizedEmbedding]:
    return [m for m in model.modules() if isinstance(m, QuantizedEmbedding)]
