"""What the calibration engine accumulates at a linear layer's input, and the groups of layers
that read one input (q/k/v, gate/up) and so share it.

:class:`LinearStatistics` keeps float64 sums over every calibration token (of each input
feature, its square and magnitude; the Hessian ``Σ x xᵀ``), summed over the ranks of a
data-parallel run by :meth:`LinearStatistics.reduce`. :class:`SharedInput` is one such group as
second-order methods (SparseGPT, GPTQ) sweep it: rows stacked, one Hessian, one cost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import torch

from slimkit.core.architecture import LinearRef
from slimkit.core.distributed.world import World
from slimkit.core.errors import DataError

#: What the engine can accumulate at a linear layer's input (see :class:`LinearStatistics`).
STATISTICS = ("input_sum", "input_sq_sum", "input_abs_sum", "hessian")


@dataclass
class LinearStatistics:
    """What was seen at one linear layer's input over all calibration tokens.

    ``input_sum[j]``, ``input_sq_sum[j]`` and ``input_abs_sum[j]`` are the sum, the sum of squares
    and the sum of magnitudes of input feature j (so its L2 norm over the data is the square root
    of the second); ``hessian`` is the sum of
    x xᵀ over tokens (``[in, in]``, float64).
    """

    in_features: int
    tokens: int = 0
    input_sum: torch.Tensor | None = None
    input_sq_sum: torch.Tensor | None = None
    input_abs_sum: torch.Tensor | None = None
    hessian: torch.Tensor | None = None
    wanted: tuple[str, ...] = field(default=STATISTICS)
    # XᵀX of the latest few batches in the inputs' precision (float32 at least), added into the
    # float64 ``hessian`` every PARTIAL_TOKENS tokens and by finish(): no float64 temporary per batch
    _partial: torch.Tensor | None = field(default=None, repr=False)
    _partial_tokens: int = field(default=0, repr=False)

    PARTIAL_TOKENS = 4096

    def add(self, x: torch.Tensor) -> None:
        rows = x.detach().reshape(-1, self.in_features)
        self.tokens += rows.shape[0]
        if {"input_sum", "input_sq_sum", "input_abs_sum"} & set(self.wanted):
            wide = rows.to(torch.float64)
            if "input_sum" in self.wanted:
                total = wide.sum(dim=0)
                self.input_sum = total if self.input_sum is None else self.input_sum.add_(total)
            if "input_sq_sum" in self.wanted:
                squares = (wide * wide).sum(dim=0)
                self.input_sq_sum = squares if self.input_sq_sum is None else self.input_sq_sum.add_(squares)
            if "input_abs_sum" in self.wanted:
                magnitudes = wide.abs().sum(dim=0)
                self.input_abs_sum = magnitudes if self.input_abs_sum is None else self.input_abs_sum.add_(magnitudes)
        if "hessian" in self.wanted:
            work = rows if rows.dtype in (torch.float32, torch.float64) else rows.float()
            if self._partial is None:
                self._partial = torch.zeros(self.in_features, self.in_features, dtype=work.dtype, device=work.device)
            self._partial.addmm_(work.T, work)
            self._partial_tokens += rows.shape[0]
            if self._partial_tokens >= self.PARTIAL_TOKENS:
                self._flush()

    def finish(self) -> None:
        """Add the pending partial Hessian into the float64 total and drop the partial buffer
        (collect() calls this once the pass is over)."""
        self._flush()
        self._partial = None

    def _flush(self) -> None:
        if self._partial is None or not self._partial_tokens:
            return
        if self.hessian is None:
            self.hessian = torch.zeros(self.in_features, self.in_features, dtype=torch.float64,
                                       device=self._partial.device)
        rows = max(1, (1 << 20) // self.in_features)  # a float64 copy of one chunk, not of the whole partial
        for start in range(0, self.in_features, rows):  # (a float32 operand is widened before the add)
            self.hessian[start:start + rows].add_(self._partial[start:start + rows])
        self._partial.zero_()
        self._partial_tokens = 0

    def take_hessian(self) -> torch.Tensor:
        """Hand the Hessian over and keep none: a method that may destroy it (``overwrite_hessian``)
        then holds the only reference, so its memory goes the moment that method is done with it."""
        if self.hessian is None:
            raise ValueError("hessian was not collected (or was taken already)")
        hessian, self.hessian = self.hessian, None
        return hessian

    def reduce(self, world: World, what: str) -> None:
        """Sum the statistics over ``world``'s ranks, in place, field by field in a fixed order."""
        if not world.distributed:
            return
        tokens = torch.tensor([self.tokens], dtype=torch.float64)
        self.tokens = int(world.all_reduce(tokens, "sum", what).item())
        for name in STATISTICS:
            value = getattr(self, name)
            if value is not None:
                world.all_reduce(value, "sum", what)

    @property
    def input_norm(self) -> torch.Tensor:
        """L2 norm of every input feature over all calibration tokens (float64)."""
        if self.input_sq_sum is None:
            raise ValueError("input_sq_sum was not collected")
        return self.input_sq_sum.sqrt()


@dataclass
class SharedInput:
    """Layers of one block that read the same tensor (q/k/v, gate/up), hence share their
    statistics: second-order methods sweep them together, rows stacked, on one Hessian."""

    statistics: LinearStatistics
    refs: list[LinearRef]

    def stacked_weight(self) -> torch.Tensor:
        """The layers' ``[out, in]`` weights stacked by rows (a copy)."""
        return torch.cat([ref.weight_out_in().detach() for ref in self.refs])

    @property
    def sweep_cost(self) -> float:
        """What a second-order sweep (SparseGPT, GPTQ) of these layers costs, near enough: the
        factorisation of ``H`` (in³) and the column sweep (rows x in²). The cost
        :meth:`BlockStep.solve_each` divides the groups among the ranks by."""
        columns = float(self.refs[0].in_features)
        return columns ** 3 + sum(ref.out_features for ref in self.refs) * columns ** 2

    def rows(self) -> Iterator[tuple[LinearRef, slice]]:
        """Each layer with its rows in :meth:`stacked_weight`."""
        first = 0
        for ref in self.refs:
            yield ref, slice(first, first + ref.out_features)
            first += ref.out_features


def drop_hessian(item: Any) -> None:
    """Free the Hessian of a :class:`SharedInput` (what :meth:`BlockStep.solve_each` does with the
    groups another rank solves); anything else is left as it is."""
    if isinstance(item, SharedInput):
        item.statistics.hessian = None


def by_shared_input(refs: Sequence[LinearRef], stats: dict[str, LinearStatistics]) -> list[SharedInput]:
    """``refs`` grouped by the statistics object :meth:`BlockStep.collect` gave them, in order."""
    groups: dict[int, SharedInput] = {}
    for ref in refs:
        statistics = stats[ref.name]
        groups.setdefault(id(statistics), SharedInput(statistics, [])).refs.append(ref)
    return list(groups.values())


def require_hessian_data(ctx: Any, refs: Sequence[LinearRef], method: str) -> None:
    """The check every Hessian-based method (SparseGPT, GPTQ) makes before running: there is
    calibration data, and enough tokens for a full-rank ``H`` at the widest layer."""
    ctx.require_calibration(method)
    tokens = ctx.calibration.n_samples * ctx.calibration.seq_len
    widest = max((ref.in_features for ref in refs), default=0)
    if tokens < widest:
        raise DataError(
            f"{method}: {tokens} calibration tokens cannot give a full-rank Hessian for layers with "
            f"{widest} inputs; use at least {widest} tokens (n_samples x seq_len), ideally many times more"
        )
