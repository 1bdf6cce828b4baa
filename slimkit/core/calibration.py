"""The layer-wise calibration engine shared by every data-aware method.

It follows the sequential protocol of SparseGPT and GPTQ: the inputs of the first block are
captured once for all calibration samples; then the blocks are processed in order, each fed
the outputs of the previous block *as already compressed*, so later blocks see, and can correct
for, what earlier compression did. Besides the hidden states it holds one block's statistics at
a time. Statistics are accumulated in float64 wherever sums over many tokens are taken.

Use::

    engine = SequentialCalibration(model, adapter, calibration)
    for step in engine:
        stats = step.collect(step.block.linears(), ("hessian",))
        ...change step.block's weights...
    # each step's outputs are recomputed only if the block's weights were changed
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from slimkit.core.architecture import ArchitectureAdapter, BlockLayout, LinearRef
from slimkit.core.data import CalibrationData
from slimkit.core.errors import ArchitectureError

STATISTICS = ("input_sum", "input_sq_sum", "hessian")


class _Captured(Exception):
    """Raised by the capture hook to stop the forward pass after the first block's inputs."""


@dataclass
class LinearStatistics:
    """What was seen at one linear layer's input over all calibration tokens.

    ``input_sum[j]`` and ``input_sq_sum[j]`` are the sum and the sum of squares of input feature j
    (so its L2 norm over the data is the square root of the latter); ``hessian`` is the sum of
    x xᵀ over tokens (``[in, in]``, float64).
    """

    in_features: int
    tokens: int = 0
    input_sum: torch.Tensor | None = None
    input_sq_sum: torch.Tensor | None = None
    hessian: torch.Tensor | None = None
    wanted: tuple[str, ...] = field(default=STATISTICS)

    def add(self, x: torch.Tensor) -> None:
        rows = x.detach().reshape(-1, self.in_features).to(torch.float64)
        self.tokens += rows.shape[0]
        if "input_sum" in self.wanted:
            total = rows.sum(dim=0)
            self.input_sum = total if self.input_sum is None else self.input_sum + total
        if "input_sq_sum" in self.wanted:
            squares = (rows * rows).sum(dim=0)
            self.input_sq_sum = squares if self.input_sq_sum is None else self.input_sq_sum + squares
        if "hessian" in self.wanted:
            product = rows.T @ rows
            self.hessian = product if self.hessian is None else self.hessian + product

    @property
    def input_norm(self) -> torch.Tensor:
        """L2 norm of every input feature over all calibration tokens (float64)."""
        if self.input_sq_sum is None:
            raise ValueError("input_sq_sum was not collected")
        return self.input_sq_sum.sqrt()


def _output(result: Any) -> torch.Tensor:
    return result[0] if isinstance(result, (tuple, list)) else result


def _weights_version(module: nn.Module) -> tuple[tuple[int, int, tuple[int, ...]], ...]:
    # Every in-place change to a tensor bumps its version counter, and replacing a parameter
    # (structured pruning shrinks matrices) changes its identity or shape: either means the block
    # was modified and its outputs must be recomputed.
    return tuple((id(p), p._version, tuple(p.shape)) for p in module.parameters())


class BlockStep:
    """One block of the sequential pass: collect statistics, let the caller change it, move on."""

    def __init__(self, engine: "SequentialCalibration", block: BlockLayout) -> None:
        self.engine = engine
        self.block = block
        self._outputs: list[torch.Tensor] | None = None
        self._version = _weights_version(block.module)

    def collect(self, refs: Sequence[LinearRef], statistics: Sequence[str]) -> dict[str, LinearStatistics]:
        """Run the block over every calibration batch, accumulating statistics at the inputs of
        ``refs`` (keyed by layer name). The block's outputs are kept for the next block."""
        unknown = set(statistics) - set(STATISTICS)
        if unknown:
            raise ValueError(f"unknown statistics {sorted(unknown)}; known: {', '.join(STATISTICS)}")
        stats = {ref.name: LinearStatistics(ref.in_features, wanted=tuple(statistics)) for ref in refs}
        handles = [
            ref.module.register_forward_hook(lambda _m, args, _out, s=stats[ref.name]: s.add(args[0]))
            for ref in refs
        ]
        try:
            self._outputs = self.engine._run_block(self.block.module)
        finally:
            for handle in handles:
                handle.remove()
        self._version = _weights_version(self.block.module)
        return stats

    def outputs(self) -> list[torch.Tensor]:
        """The block's outputs on the calibration batches, recomputed if its weights changed."""
        if self._outputs is None or _weights_version(self.block.module) != self._version:
            self._outputs = self.engine._run_block(self.block.module)
            self._version = _weights_version(self.block.module)
        return self._outputs


class SequentialCalibration:
    """Feeds calibration samples through a model block by block (see the module docstring)."""

    def __init__(
        self,
        model: Any,
        adapter: ArchitectureAdapter,
        calibration: CalibrationData,
        *,
        batch_size: int = 8,
    ) -> None:
        self.module: nn.Module = model.model if hasattr(model, "model") and not isinstance(model, nn.Module) else model
        self.layout = adapter.layout(self.module)
        if not self.layout.blocks:
            raise ArchitectureError(f"{type(self.module).__name__} has no blocks to calibrate")
        self.calibration = calibration
        self.batch_size = max(1, batch_size)
        self.device = next(self.module.parameters()).device
        self._hidden: list[torch.Tensor] = []
        self._kwargs: list[dict[str, Any]] = []

    def __len__(self) -> int:
        return len(self.layout.blocks)

    def capture(self) -> list[torch.Tensor]:
        """Inputs of the first block for every calibration batch (also their keyword arguments:
        attention masks, positions, rotary embeddings), without running the rest of the model."""
        first = self.layout.blocks[0].module
        hidden: list[torch.Tensor] = []
        kwargs: list[dict[str, Any]] = []

        def grab(_module: nn.Module, args: tuple[Any, ...], kw: dict[str, Any]) -> None:
            hidden.append(args[0] if args else kw.pop("hidden_states"))
            kwargs.append({k: v for k, v in kw.items() if k != "hidden_states"})
            raise _Captured

        handle = first.register_forward_pre_hook(grab, with_kwargs=True)
        try:
            with torch.no_grad():
                for start in range(0, self.calibration.n_samples, self.batch_size):
                    batch = self.calibration.input_ids[start : start + self.batch_size].to(self.device)
                    try:
                        self.module(input_ids=batch, use_cache=False)
                    except _Captured:
                        pass
        finally:
            handle.remove()
        self._hidden, self._kwargs = hidden, kwargs
        return hidden

    def _run_block(self, block: nn.Module) -> list[torch.Tensor]:
        with torch.no_grad():
            return [_output(block(h, **kw)) for h, kw in zip(self._hidden, self._kwargs)]

    def __iter__(self) -> Iterator[BlockStep]:
        was_training = self.module.training
        self.module.eval()
        try:
            self.capture()
            for block in self.layout.blocks:
                step = BlockStep(self, block)
                yield step
                self._hidden = step.outputs()  # what the (possibly compressed) block now produces
        finally:
            self.module.train(was_training)
