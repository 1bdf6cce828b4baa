"""First-order Taylor scorer: the importance of a weight is ``|W * dL/dW|``.

Removing weight ``w`` changes the loss by about ``-w * dL/dw`` (the first term of its Taylor
expansion; Molchanov et al., 2019; LLM-Pruner, Ma et al., 2023). ``L`` is the language-modelling
loss (labels = inputs) averaged over all calibration tokens; the gradient is accumulated over
batches with each batch weighted by its share of the samples, so the scores do not depend on the
batch size. Only the scored weights require gradients during the pass (embeddings, norms and the
LM head are left out of the backward computation), and every ``requires_grad`` flag, the
parameters' ``.grad`` and the train/eval mode are as they were afterwards.

Unlike Wanda or SparseGPT this needs a full backward pass, so it scores the dense model in one go
rather than block by block.
"""

from __future__ import annotations

import torch
from pydantic import Field

from slimkit import hookimpl
from slimkit.core.config import MethodConfig
from slimkit.core.contracts import BaseScorer
from slimkit.core.errors import DataError
from slimkit.core.scores import Scores
from slimkit.plugins.pruning.magnitude import ALL_ROLES, RoleName


class TaylorConfig(MethodConfig):
    roles: tuple[RoleName, ...] = Field(
        ALL_ROLES, description="Which block projections to score (attention q/k/v/qkv/o, MLP up/gate/down)."
    )
    batch_size: int = Field(4, ge=1, description="Calibration samples per forward/backward pass.")


def loss_gradients(module: torch.nn.Module, weights: list[torch.Tensor], input_ids: torch.Tensor,
                   batch_size: int) -> list[torch.Tensor]:
    """Gradients of the mean LM loss over all of ``input_ids`` with respect to ``weights``."""
    device = weights[0].device
    totals = [torch.zeros_like(w, dtype=torch.float32) for w in weights]
    n = input_ids.shape[0]
    for start in range(0, n, batch_size):
        batch = input_ids[start : start + batch_size].to(device)
        loss = module(input_ids=batch, labels=batch, use_cache=False).loss
        if not torch.isfinite(loss):
            raise DataError(f"non-finite loss ({float(loss)}) on calibration batch starting at sample {start}")
        grads = torch.autograd.grad(loss * (batch.shape[0] / n), weights)
        for total, grad in zip(totals, grads):
            total += grad.float()
    return totals


class TaylorScorer(BaseScorer):
    """|W * dL/dW| (first-order Taylor) of every block projection, from the LM loss on calibration data."""

    name = "taylor"
    version = 1
    granularity = "weight"
    needs_calibration = True
    Config = TaylorConfig

    def score(self, model, adapter, config, ctx):
        module = model.model
        refs = [ref for _, ref in adapter.layout(module).linears(config.roles)]
        weights = [ref.weight for ref in refs]
        flags = {id(p): p.requires_grad for p in module.parameters()}
        was_training = module.training
        try:
            for p in module.parameters():
                p.requires_grad_(False)
            for w in weights:
                w.requires_grad_(True)
            module.eval()
            with torch.enable_grad():
                grads = loss_gradients(module, weights, ctx.calibration.input_ids, config.batch_size)
        finally:
            for p in module.parameters():
                p.requires_grad_(flags[id(p)])
            module.train(was_training)
        values = {}
        for ref, grad in zip(refs, grads):
            score = (ref.weight.detach().float() * grad).abs()
            values[ref.name] = score.t().contiguous() if ref.transposed else score
        ctx.report("layers", len(refs), len(refs))
        return Scores(self.name, self.granularity, values, config.model_dump(mode="json"))


@hookimpl
def register_scorers(register):
    register(TaylorScorer)
