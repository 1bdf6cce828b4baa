"""Memory-lean linear algebra on calibration Hessians, shared by second-order methods
(SparseGPT now, GPTQ next).

``H = Σ x xᵀ`` of a layer with ``d`` inputs is a ``[d, d]`` float64 matrix (19 MB for d = 1536,
470 MB for d = 8192): the number of such matrices alive at once, not the arithmetic, sets the
peak memory of these methods. Everything here works in place where LAPACK allows it.
"""

from __future__ import annotations

import torch

_CHUNK = 1 << 20  # elements swapped per step by reverse_square_ (8 MB of float64)


def reverse_square_(matrix: torch.Tensor) -> torch.Tensor:
    """``J M J`` in place for a square contiguous ``M`` (``J`` reverses order): element
    ``(i, j)`` moves to ``(n-1-i, n-1-j)``, which is reversing the flattened matrix. Done by
    swapping chunks from both ends, so the extra memory is two chunks, not a matrix."""
    if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1] or not matrix.is_contiguous():
        raise ValueError("reverse_square_ needs a square contiguous matrix")
    flat = matrix.view(-1)
    total = flat.numel()
    half = total // 2
    for start in range(0, half, _CHUNK):
        stop = min(start + _CHUNK, half)
        front = flat[start:stop]
        back = flat[total - stop : total - start]
        saved = front.clone()
        front.copy_(back.flip(0))
        back.copy_(saved.flip(0))
    return matrix


def inverse_cholesky_upper(
    hessian: torch.Tensor, dampening: float, *, overwrite: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(U, dead)``: the upper Cholesky factor of the dampened inverse (``H⁻¹ = UᵀU``, float64)
    and the inputs that were always zero (their rows and columns replaced by the identity).

    ``dampening`` adds that fraction of the mean diagonal to the diagonal (SparseGPT/GPTQ's
    "percdamp"). With ``J`` the order-reversing permutation and ``JHJ = LLᵀ``, ``U = J L⁻¹ J``:
    one Cholesky factorisation and one triangular inverse, instead of inverting ``H`` and
    factorising the inverse. ``overwrite=True`` lets the float64 ``hessian`` be destroyed, so at
    most two ``[d, d]`` matrices are alive at once (three otherwise).
    """
    if hessian.dim() != 2 or hessian.shape[0] != hessian.shape[1]:
        raise ValueError(f"a Hessian must be square, got {tuple(hessian.shape)}")
    if overwrite and hessian.dtype == torch.float64 and hessian.is_contiguous():
        H = hessian
    else:
        H = hessian.to(torch.float64, memory_format=torch.contiguous_format, copy=True)
    dead = torch.diag(H) == 0  # inputs that were always zero: their weights cannot matter
    H[dead, dead] = 1.0
    H.diagonal().add_(dampening * torch.mean(torch.diag(H)))
    reverse_square_(H)
    torch.linalg.cholesky(H, out=H)  # LAPACK's working copy is the second matrix
    inverse = torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
    torch.linalg.solve_triangular(H, inverse, upper=False, out=inverse)  # L⁻¹, in place of the identity
    del H
    return reverse_square_(inverse), dead
