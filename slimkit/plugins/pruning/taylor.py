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

``neurons.taylor`` and ``heads.taylor`` score whole structures (LLM-Pruner's group importance) from
the same gradients. A neuron's group is its rows of ``gate``/``up`` and its column of ``down``; a
query head's group is its ``q`` rows and its ``o`` columns (``k``/``v`` are shared by the heads of a
GQA group and left out). ``aggregate`` chooses how the group's ``w * g`` terms combine:

* ``element`` (default): ``sum |w * g|``, LLM-Pruner's element-wise first-order importance;
* ``vector``: ``|sum w * g|``, the first-order change of the loss when the whole group is removed
  at once (``|dL/d alpha|`` at ``alpha = 1`` for a gate ``alpha`` scaling the group's weights;
  Molchanov et al., 2019).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from slimkit import ALL_ROLES, BaseScorer, ConfigError, DataError, LinearRef, MethodConfig, Role, Scores, hookimpl


def _batch_size_field() -> Any:
    return Field(
        1, ge=1, description="Calibration samples per forward/backward pass (the scores do not depend on it; "
        "memory grows with it: a whole-model backward keeps every layer's activations)."
    )


class TaylorConfig(MethodConfig):
    roles: tuple[Role, ...] = Field(
        ALL_ROLES, description="Which block projections to score (attention q/k/v/qkv/o, MLP up/gate/down)."
    )
    batch_size: int = _batch_size_field()


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


def _scored_model_gradients(model, refs: list[LinearRef], batch_size: int, ctx) -> list[torch.Tensor]:
    """``dL/dW`` ([out, in] like the weight) for ``refs``, leaving flags, grads and mode as they were."""
    module = model.model
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
            grads = loss_gradients(module, weights, ctx.calibration.input_ids, batch_size)
    finally:
        for p in module.parameters():
            p.requires_grad_(flags[id(p)])
        module.train(was_training)
    return [grad.t() if ref.transposed else grad for ref, grad in zip(refs, grads)]


class TaylorScorer(BaseScorer):
    """|W * dL/dW| (first-order Taylor) of every block projection, from the LM loss on calibration data."""

    name = "taylor"
    version = 1
    granularity = "weight"
    needs_calibration = True
    Config = TaylorConfig

    def score(self, model, adapter, config, ctx):
        refs = [ref for _, ref in adapter.layout(model.model).linears(config.roles)]
        grads = _scored_model_gradients(model, refs, config.batch_size, ctx)
        values = {}
        for ref, grad in zip(refs, grads):
            values[ref.name] = (ref.weight_out_in().detach().float() * grad).abs().contiguous()
        ctx.report("layers", len(refs), len(refs))
        return Scores(self.name, self.granularity, values, config.model_dump(mode="json"))


class GroupTaylorConfig(MethodConfig):
    aggregate: Literal["element", "vector"] = Field(
        "element",
        description="element: sum |w*g| over the group's weights (LLM-Pruner); vector: |sum w*g|, the "
        "first-order loss change of removing the whole group.",
    )
    batch_size: int = _batch_size_field()


def _combine(products: torch.Tensor, dim: int, aggregate: str) -> torch.Tensor:
    """Sum ``w * g`` terms along ``dim`` as |.| then sum (element) or sum then |.| (vector), in float64."""
    products = products.double()
    return products.abs().sum(dim=dim) if aggregate == "element" else products.sum(dim=dim)


class _GroupTaylorScorer(BaseScorer):
    needs_calibration = True
    Config = GroupTaylorConfig

    def groups(self, block) -> list[tuple[LinearRef, int]]:
        """``(linear, dim)`` pairs: sum along ``dim`` of the [out, in] weight gives one term per unit."""
        raise NotImplementedError

    def per_unit(self, block, terms: torch.Tensor) -> torch.Tensor:
        return terms

    def score(self, model, adapter, config, ctx):
        blocks = adapter.layout(model.model).blocks
        parts = [self.groups(block) for block in blocks]
        refs = [ref for part in parts for ref, _ in part]
        grads = iter(_scored_model_gradients(model, refs, config.batch_size, ctx))
        values = {}
        for block, part in zip(blocks, parts):
            # Per-unit sums of w * g (element: of |w * g|) over each linear, added over the group;
            # the absolute value comes last so that "vector" sums signed terms across the group.
            total = sum(_combine(ref.weight_out_in().detach() * next(grads), dim, config.aggregate)
                        for ref, dim in part)
            values[block.name] = self.per_unit(block, torch.as_tensor(total)).abs().float()
        ctx.report("blocks", len(blocks), len(blocks))
        return Scores(self.name, self.granularity, values, config.model_dump(mode="json"))


class NeuronTaylorScorer(_GroupTaylorScorer):
    """Per MLP neuron: first-order Taylor importance of its gate/up rows and down column (LLM-Pruner)."""

    name = "neurons.taylor"
    version = 1
    granularity = "neuron"

    def groups(self, block):
        mlp = block.mlp
        rows = [(mlp.up, 1)] + ([(mlp.gate, 1)] if mlp.gate is not None else [])
        return rows + [(mlp.down, 0)]


class HeadTaylorScorer(_GroupTaylorScorer):
    """Per attention head: first-order Taylor importance of its q rows and o columns (LLM-Pruner)."""

    name = "heads.taylor"
    version = 1
    granularity = "head"

    def groups(self, block):
        attention = block.attention
        if attention.q is None:
            raise ConfigError(f"{self.name}: head scores need separate q/k/v projections")
        return [(attention.q, 1), (attention.o, 0)]

    def per_unit(self, block, terms):
        attention = block.attention
        return terms.reshape(attention.num_heads, attention.head_dim).sum(dim=1)


@hookimpl
def register_scorers(register):
    for scorer in (TaylorScorer, NeuronTaylorScorer, HeadTaylorScorer):
        register(scorer)
