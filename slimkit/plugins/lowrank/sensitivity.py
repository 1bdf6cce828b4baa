"""Measured sensitivity of the model's output to factorising one layer.

For sensitivity allocation (:func:`.ranks.allocate`), every targeted layer is factorised alone at
each keep-fraction ``f`` and the model is run on ``sensitivity_tokens`` calibration tokens; the
change of its output against the unchanged model's is that layer's sensitivity at ``f``. For a
causal LM the change is the mean KL divergence of the next-token distributions (dense ‖ changed):
the loss increase a small change causes, without labels. For other models it is the squared
error of the last hidden state relative to its squared norm. The layer is restored exactly after
each measurement (the original module is put back).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from slimkit import Factorisation, LinearRef, LowRankLinear, is_causal_lm, set_module
from slimkit.plugins.lowrank.ranks import LayerShape, keep_rank


class OutputProbe:
    """The unchanged model's output on a few calibration tokens, and the change of the model's
    present output from it."""

    def __init__(self, model: Any, calibration: Any, tokens: int) -> None:
        self.module = model.model
        ids = calibration.input_ids
        rows = max(1, min(ids.shape[0], -(-tokens // ids.shape[1])))
        self.ids = ids[:rows, : min(ids.shape[1], tokens)]
        self.causal = is_causal_lm(self.module)
        self.reference = self._output()

    def _output(self) -> torch.Tensor:
        with torch.no_grad():
            out = self.module(input_ids=self.ids.to(next(self.module.parameters()).device), use_cache=False)
        if self.causal:
            return F.log_softmax(out.logits.float(), dim=-1)
        hidden = getattr(out, "last_hidden_state", None)
        return (hidden if hidden is not None else out.logits).float()

    def change(self) -> float:
        now = self._output()
        if self.causal:  # KL(dense || now), mean over tokens
            return float(F.kl_div(now, self.reference, log_target=True, reduction="sum") / now[..., 0].numel())
        return float((now - self.reference).square().sum() / self.reference.square().sum().clamp(min=1e-30))


def measure_layer(model: Any, probe: OutputProbe, ref: LinearRef, factorisation: Factorisation,
                  fractions: list[float]) -> dict[float, float]:
    """``{f: output change}`` with ``ref`` alone factorised at keep-fraction ``f``."""
    layer = LayerShape(ref.name, ref.in_features, ref.out_features)
    original = ref.module
    bias = getattr(original, "bias", None)
    changes = {}
    try:
        for fraction in fractions:
            up, down = factorisation.factors(min(keep_rank(layer, fraction), factorisation.sigma.numel()))
            set_module(model.model, ref.name, LowRankLinear.from_factors(up, down, bias))
            changes[fraction] = probe.change()
    finally:
        set_module(model.model, ref.name, original)
    return changes
