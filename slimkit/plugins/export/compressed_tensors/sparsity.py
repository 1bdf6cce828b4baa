"""The sparsity a pruned model's linear layers carry, as compressed-tensors' ``sparsity_config``
states it: format ``dense`` (the zeros are stored, nothing is compressed) with the structure
named: ``"2:4"`` (every 4 consecutive inputs of a row hold at least 2 zeros, what vLLM's 2:4
kernels need) or ``"unstructured"``.

A float layer counts as pruned when at least :data:`THRESHOLD` of its weights are exactly zero
(trained float weights are essentially never exactly zero). A quantized layer counts only when it
is 2:4: weights also round to zero on an integer grid (10-20% of an int4 layer of a dense model),
so its zero codes alone do not say that it was pruned.

By default only weight-only quantized layers are examined. vLLM routes a float or W8A8 layer
stated ``2:4`` to its Cutlass 2:4 scheme, which needed Hopper and which its 2026 releases removed
("Sparse24 models are no longer supported by vLLM"): stating it there would make a loadable
export unloadable. Weight-only layers never take that path, so stating their structure is safe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from slimkit import QuantizedLinear
from slimkit.plugins.export.compressed_tensors.plan import ExportPlan
from slimkit.plugins.export.compressed_tensors.tensors import first_codes

THRESHOLD = 0.05


@dataclass(frozen=True)
class Sparsity:
    structure: str  # "2:4" or "unstructured"
    global_sparsity: float  # zeros / weights over the sparse layers
    layers: tuple[str, ...]

    def config(self, all_linears: list[str]) -> dict[str, Any]:
        """compressed-tensors' ``sparsity_config`` (targets ``Linear``, the others ignored)."""
        return {
            "format": "dense",
            "sparsity_structure": self.structure,
            "global_sparsity": round(self.global_sparsity, 6),
            "targets": ["Linear"],
            "ignore": sorted(set(all_linears) - set(self.layers)),
        }


PROBE_ROWS = 16  # a layer that is not 2:4 almost always shows it in its first rows


def is_two_four(zero: torch.Tensor) -> bool:
    """Whether every 4 consecutive entries of each row of the mask hold at least 2 zeros."""
    rows, columns = zero.shape
    if columns % 4:
        return False
    return bool((zero.reshape(rows, -1, 4).sum(dim=2) >= 2).all())


def _zero_codes(module: QuantizedLinear, codes: torch.Tensor) -> torch.Tensor:
    """Where ``codes`` (the first rows of ``module``) stand for exactly zero: the zero point."""
    rows = codes.shape[0]
    if module.zeros is None:
        return codes == (1 << (module.grid.bits - 1))
    width = module.grid.group_width(module.in_features)
    return codes == module.zeros[:rows].to(codes.dtype).repeat_interleave(width, dim=1)


def quantized_two_four(module: QuantizedLinear) -> torch.Tensor | None:
    """The zero mask of a quantized layer when it is 2:4, else ``None`` (a probe of its first rows
    first: unpacking every layer of a model only to find it dense would be most of the export)."""
    if not is_two_four(_zero_codes(module, first_codes(module, PROBE_ROWS))):
        return None
    zero = _zero_codes(module, module.codes().to(torch.int32))
    return zero if is_two_four(zero) else None


def measure(model: Any, plan: ExportPlan, *, every_layer: bool = False) -> Sparsity | None:
    """The sparsity of the weight-only quantized layers (``every_layer``: of every block linear,
    the head excluded), or ``None`` when none is pruned."""
    zeros = total = 0
    layers: list[str] = []
    two_four = True
    weight_only = {name for name, (module, _) in plan.quantized.items() if module.activations is None}
    candidates = set(plan.float_linears) | set(plan.quantized) if every_layer else weight_only
    for name in sorted(candidates):
        if name == plan.head:
            continue
        if name in plan.quantized:
            zero = quantized_two_four(plan.quantized[name][0])
            if zero is None:
                continue
        else:
            zero = model.get_submodule(name).weight.detach() == 0
            if float(zero.float().mean()) < THRESHOLD:
                continue
        layers.append(name)
        two_four = two_four and is_two_four(zero)
        zeros += int(zero.sum())
        total += zero.numel()
    if not layers:
        return None
    return Sparsity("2:4" if two_four else "unstructured", zeros / total, tuple(layers))
