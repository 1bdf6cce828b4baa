"""Low-rank factorisation of linear layers: the math, and the module a factorised layer becomes.

A weight ``W`` (``[out, in]``) is replaced by ``B A`` with ``A`` ``[r, in]`` and ``B`` ``[out, r]``,
stored as two linears (:class:`LowRankLinear`: ``down`` = A, ``up`` = B, the bias on ``up``).
That saves parameters only when ``r (in + out) < in · out`` (:func:`saves`).

Which rank-r product is best depends on what is measured:

* **plain SVD** (Eckart–Young): the truncated SVD of ``W`` minimises the weight error
  ``‖W − BA‖_F``;
* **activation-aware, scaled** (ASVD, Yuan et al. 2023): columns are scaled by
  ``s_j = mean|x_j|^α`` first, so input channels that carry large activations keep more of their
  weights: SVD of ``W diag(s)``, truncated, then ``A ← A diag(s)⁻¹``;
* **whitened** (SVD-LLM, Wang et al. 2024): with ``H = XᵀX = L Lᵀ`` (Cholesky) over the
  calibration inputs, ``‖(W − W')X‖_F = ‖(W − W')L‖_F``, so the truncated SVD of ``W L`` followed
  by ``A ← A L⁻¹`` is the rank-r product with the smallest *output* error on that data, and the
  error is exactly the discarded singular values: ``Σ_{i>r} σ_i²``.

In all three the singular values are split evenly between the factors (``B = U √Σ``,
``A = √Σ Vᵀ``), which keeps both in the same range (better for quantizing them later).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


def saves(rank: int, in_features: int, out_features: int) -> bool:
    """Whether two factors of rank ``rank`` hold fewer parameters than the dense weight."""
    return rank * (in_features + out_features) < in_features * out_features


class LowRankLinear(nn.Module):
    """``y = up(down(x))``: a linear layer stored as two factors of rank ``rank``."""

    def __init__(self, in_features: int, out_features: int, rank: int, *, bias: bool = False,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if not 1 <= rank <= min(in_features, out_features):
            raise ValueError(f"rank {rank} is outside 1..{min(in_features, out_features)} for a "
                             f"{out_features}x{in_features} layer")
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.down = nn.Linear(in_features, rank, bias=False, device=device, dtype=dtype)
        self.up = nn.Linear(rank, out_features, bias=bias, device=device, dtype=dtype)

    @classmethod
    def from_factors(cls, up: torch.Tensor, down: torch.Tensor, bias: torch.Tensor | None = None,
                     dtype: torch.dtype | None = None) -> "LowRankLinear":
        """From ``up`` (``[out, r]``) and ``down`` (``[r, in]``), in ``dtype`` (default: theirs)."""
        dtype = dtype or up.dtype
        module = cls(down.shape[1], up.shape[0], up.shape[1], bias=bias is not None, device=up.device, dtype=dtype)
        with torch.no_grad():
            module.up.weight.copy_(up)
            module.down.weight.copy_(down)
            if bias is not None and module.up.bias is not None:
                module.up.bias.copy_(bias)
        return module

    @property
    def weight(self) -> torch.Tensor:
        """The dense ``[out, in]`` product (for code that reads ``layer.weight``)."""
        return self.up.weight @ self.down.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.up.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(x, self.down.weight), self.up.weight, self.up.bias)

    def to_linear(self) -> nn.Linear:
        """The dense layer this product stands for."""
        weight = self.weight.detach()
        dense = nn.Linear(self.in_features, self.out_features, bias=self.up.bias is not None,
                          device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            dense.weight.copy_(weight)
            if self.up.bias is not None:
                dense.bias.copy_(self.up.bias)
        return dense

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"


@dataclass
class Factorisation:
    """A layer's weight in the measured space: ``W M = U diag(σ) Vᵀ`` where ``M`` is the identity
    (plain), ``diag(s)`` (scaled) or ``L`` (whitened); ``σ²`` are the error contributions."""

    u: torch.Tensor  # [out, k]
    sigma: torch.Tensor  # [k], descending
    vh: torch.Tensor  # [k, in], rows of Vᵀ, already mapped back by M⁻¹
    dtype: torch.dtype

    @property
    def energy(self) -> torch.Tensor:
        """σ² (the squared error each component removes when dropped)."""
        return self.sigma.square()

    def factors(self, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(up [out, r], down [r, in])`` of the rank-``rank`` truncation."""
        root = self.sigma[:rank].sqrt()
        return ((self.u[:, :rank] * root).to(self.dtype), (root.unsqueeze(1) * self.vh[:rank]).to(self.dtype))

    def discarded(self, rank: int) -> float:
        """Σ_{i>rank} σ_i²: the measured error of the rank-``rank`` truncation."""
        return float(self.energy[rank:].sum())


def factorise(weight: torch.Tensor, *, column_scale: torch.Tensor | None = None,
              gram: torch.Tensor | None = None, dampening: float = 1e-6) -> Factorisation:
    """The SVD of ``weight`` (``[out, in]``), plain, with columns scaled by ``column_scale``
    (``[in]``, positive), or whitened by the Cholesky factor of ``gram`` (``[in, in]``, XᵀX);
    computed in float64. ``dampening`` (a fraction of the mean diagonal) is added to ``gram``
    when it is not positive definite (fewer tokens than inputs, dead channels)."""
    if column_scale is not None and gram is not None:
        raise ValueError("give column_scale or gram, not both")
    w = weight.detach().to(torch.float64)
    if gram is not None:
        lower = _cholesky(gram.to(torch.float64, copy=True), dampening)
        u, sigma, vh = torch.linalg.svd(w @ lower, full_matrices=False)
        # Vᵀ L⁻¹ without forming the inverse: solve Lᵀ Z = V, so Zᵀ = Vᵀ L⁻¹
        vh = torch.linalg.solve_triangular(lower.T, vh.T, upper=True).T
    elif column_scale is not None:
        s = column_scale.detach().to(torch.float64)
        if bool((s <= 0).any()) or not bool(torch.isfinite(s).all()):
            raise ValueError("column scales must be positive and finite")
        u, sigma, vh = torch.linalg.svd(w * s, full_matrices=False)
        vh = vh / s
    else:
        u, sigma, vh = torch.linalg.svd(w, full_matrices=False)
    return Factorisation(u, sigma, vh, weight.dtype)


def _cholesky(gram: torch.Tensor, dampening: float) -> torch.Tensor:
    """Lower Cholesky factor of ``gram``, adding ``dampening`` x mean diagonal (growing tenfold up
    to five times) only if the plain factorisation fails."""
    lower, info = torch.linalg.cholesky_ex(gram)
    damp = dampening * float(gram.diagonal().mean().clamp(min=1e-12))
    attempts = 0
    while int(info) != 0:
        if attempts == 6:
            raise ValueError("the calibration Gram matrix is not positive definite even with dampening")
        gram.diagonal().add_(damp)
        lower, info = torch.linalg.cholesky_ex(gram)
        damp *= 10.0
        attempts += 1
    return lower
