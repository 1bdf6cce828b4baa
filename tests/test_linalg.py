"""Hessian linear algebra shared by SparseGPT and GPTQ, against direct float64 computations."""

import pytest
import torch

from slimkit.core import linalg
from slimkit.core.linalg import cholesky_lower_, invert_lower_, inverse_cholesky_upper, narrow_, reverse_square_


@pytest.mark.parametrize("n", [1, 2, 7, 64])
def test_reverse_square_is_both_flips(monkeypatch, n):
    monkeypatch.setattr(linalg, "_CHUNK", 5)  # many chunks, one straddling the middle
    matrix = torch.arange(n * n, dtype=torch.float64).reshape(n, n)
    expected = matrix.flip(0, 1)
    pointer = matrix.data_ptr()
    assert torch.equal(reverse_square_(matrix), expected)
    assert matrix.data_ptr() == pointer


def test_reverse_square_rejects_non_square():
    with pytest.raises(ValueError, match="square"):
        reverse_square_(torch.zeros(2, 3))


def _hessian(inputs: int, tokens: int, seed: int = 0) -> torch.Tensor:
    x = torch.randn(tokens, inputs, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x[:, 3] = 0.0  # an input that never fires
    return x.T @ x


@pytest.mark.parametrize("overwrite", [False, True])
def test_inverse_cholesky_upper_factors_the_dampened_inverse(overwrite):
    H = _hessian(40, 200)
    original = H.clone()
    U, dead = inverse_cholesky_upper(H, 0.01, overwrite=overwrite)
    reference = original.clone()
    reference[3, 3] = 1.0
    reference.diagonal().add_(0.01 * reference.diagonal().mean())
    assert dead.tolist() == [i == 3 for i in range(40)]
    assert torch.equal(U, U.triu())
    assert torch.allclose(U.T @ U, torch.linalg.inv(reference), rtol=1e-9, atol=1e-12)
    assert torch.equal(H, original) != overwrite  # only overwrite=True may destroy the input


def test_inverse_cholesky_upper_accepts_float32_without_touching_it():
    H = _hessian(16, 64).float()
    original = H.clone()
    U, _ = inverse_cholesky_upper(H, 0.01, overwrite=True)  # not float64: a copy is made anyway
    assert U.dtype == torch.float64
    assert torch.equal(H, original)


@pytest.mark.parametrize("size,block", [(4, 4), (7, 3), (40, 8), (300, 256), (513, 256)])
def test_invert_lower_in_place_matches_the_triangular_solve(size, block):
    L = torch.linalg.cholesky(_hessian(size, 2 * size + 5, seed=size)[:size, :size] + torch.eye(size, dtype=torch.float64))
    expected = torch.linalg.solve_triangular(L, torch.eye(size, dtype=torch.float64), upper=False)
    got = invert_lower_(L.clone(), block=block)
    assert torch.allclose(got, expected, rtol=1e-10, atol=1e-12)
    assert torch.equal(got, got.tril())


def test_cholesky_lower_works_in_the_matrix_itself():
    H = _hessian(30, 90)
    H[3, 3] = 1.0
    expected = torch.linalg.cholesky(H)
    pointer = H.data_ptr()
    L = cholesky_lower_(H)
    assert L.data_ptr() == pointer and torch.allclose(L, expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(torch.linalg.LinAlgError, match="not positive definite"):
        cholesky_lower_(-torch.eye(4, dtype=torch.float64))


def test_a_float32_factor_lives_in_the_overwritten_hessian():
    H = _hessian(64, 256)
    reference, _ = inverse_cholesky_upper(H.clone(), 0.01)
    pointer = H.data_ptr()
    U, _ = inverse_cholesky_upper(H, 0.01, overwrite=True, dtype=torch.float32)
    assert U.dtype == torch.float32 and U.data_ptr() == pointer  # no second [d, d] matrix
    assert torch.equal(U, reference.to(torch.float32))  # the same rounding as a plain conversion


@pytest.mark.parametrize("rows,columns", [(1, 1), (5, 3), (600, 2000)])
def test_narrow_converts_over_its_own_memory(rows, columns):
    matrix = torch.randn(rows, columns, dtype=torch.float64)
    expected = matrix.to(torch.float32)
    assert torch.equal(narrow_(matrix, torch.float32), expected)
