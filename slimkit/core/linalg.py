"""Memory-lean linear algebra on calibration Hessians, shared by second-order methods
(SparseGPT, GPTQ).

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
    hessian: torch.Tensor, dampening: float, *, overwrite: bool = False, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(U, dead)``: the upper Cholesky factor of the dampened inverse (``H⁻¹ = UᵀU``, computed in
    float64, returned in ``dtype``) and the inputs that were always zero (their rows and columns
    replaced by the identity).

    ``dampening`` adds that fraction of the mean diagonal to the diagonal (SparseGPT/GPTQ's
    "percdamp"). With ``J`` the order-reversing permutation and ``JHJ = LLᵀ``, ``U = J L⁻¹ J``:
    one Cholesky factorisation and one triangular inverse, instead of inverting ``H`` and
    factorising the inverse. Both run in place in one ``[d, d]`` float64 matrix (LAPACK's
    Cholesky on the column-major view, the triangular inverse by blocks), so the peak is one
    matrix plus ``O(d)`` columns. ``overwrite=True`` lets a contiguous float64 ``hessian`` be
    that matrix: ``U`` is then the hessian's own memory (a float32 ``U`` its first half, see
    :func:`narrow_`), and no second ``[d, d]`` matrix is ever allocated (for the 14,336 inputs of
    an 8B model's MLP down projection, 1.6 GB instead of 4.9).
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
    cholesky_lower_(H)
    invert_lower_(H)
    return narrow_(reverse_square_(H), dtype), dead


def cholesky_lower_(matrix: torch.Tensor) -> torch.Tensor:
    """``L`` with ``LLᵀ = matrix`` in the matrix's own memory (row-major ``[d, d]``, symmetric
    positive definite), zeros above the diagonal. LAPACK factorises column-major storage in
    place; the transpose of a row-major symmetric matrix is that storage, and its upper factor
    read row-major is ``L``. Raises ``torch.linalg.LinAlgError`` when the matrix is not positive
    definite."""
    if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1] or not matrix.is_contiguous():
        raise ValueError("cholesky_lower_ needs a square contiguous matrix")
    column_major = matrix.mT
    info = torch.empty((), dtype=torch.int32, device=matrix.device)
    torch.linalg.cholesky_ex(column_major, upper=True, out=(column_major, info))
    if int(info):
        raise torch.linalg.LinAlgError(f"the matrix is not positive definite (leading minor {int(info)})")
    return matrix


def invert_lower_(matrix: torch.Tensor, block: int = 256) -> torch.Tensor:
    """``L⁻¹`` in place of a lower-triangular ``L`` (zeros above the diagonal), by blocks of
    ``block`` columns from the bottom right: with ``L = [[A, 0], [B, C]]`` and ``C⁻¹`` already in
    place, the inverse is ``[[A⁻¹, 0], [-C⁻¹ B A⁻¹, C⁻¹]]``. Extra memory: two ``[d, block]`` panels."""
    n = matrix.shape[0]
    for start in reversed(range(0, n, block)):
        stop = min(start + block, n)
        diagonal = matrix[start:stop, start:stop]
        identity = torch.eye(stop - start, dtype=matrix.dtype, device=matrix.device)
        inverse = torch.linalg.solve_triangular(diagonal, identity, upper=False)
        if stop < n:
            panel = matrix[stop:, start:stop] @ inverse  # B A⁻¹
            matrix[stop:, start:stop] = matrix[stop:, stop:] @ panel.neg_()  # -C⁻¹ B A⁻¹ (C⁻¹'s upper part is 0)
        diagonal.copy_(inverse)
    return matrix


def narrow_(matrix: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``matrix`` in ``dtype``; a narrower ``dtype`` is written over the start of the matrix's own
    memory (returned as a view of it, which keeps the whole of it allocated), so no second copy
    exists at any time. Rows are converted in increasing order, a chunk at a time through a
    temporary: the bytes a chunk lands on belong to rows already converted or to the chunk."""
    if matrix.dtype == dtype:
        return matrix
    if matrix.element_size() < torch.empty((), dtype=dtype).element_size() or not matrix.is_contiguous():
        return matrix.to(dtype)
    rows, columns = matrix.shape
    target = matrix.view(-1).view(dtype)[: rows * columns].view(rows, columns)
    step = max(1, _CHUNK // max(1, columns))
    for start in range(0, rows, step):
        stop = min(start + step, rows)
        target[start:stop] = matrix[start:stop].to(dtype)
    return target
