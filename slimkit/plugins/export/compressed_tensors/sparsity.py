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

from slimkit.plugins.export.compressed_tensors.plan import ExportPlan

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


def is_two_four(weight: torch.Tensor) -> bool:
    rows, columns = weight.shape
    if columns % 4:
        return False
    return bool(((weight.reshape(rows, -1, 4) == 0).sum(dim=2) >= 2).all())


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
            weight = plan.quantized[name][0].dequantized_weight(torch.float32)
            pruned = is_two_four(weight)
        else:
            weight = model.get_submodule(name).weight.detach()
            pruned = float((weight == 0).float().mean()) >= THRESHOLD
        if not pruned:
            continue
        layers.append(name)
        two_four = two_four and is_two_four(weight)
        zeros += int((weight == 0).sum())
        total += weight.numel()
    if not layers:
        return None
    return Sparsity("2:4" if two_four else "unstructured", zeros / total, tuple(layers))
