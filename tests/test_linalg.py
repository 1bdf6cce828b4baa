"""Hessian linear algebra shared by SparseGPT and GPTQ, against direct float64 computations."""

import pytest
import torch

from slimkit.core import linalg
from slimkit.core.linalg import inverse_cholesky_upper, reverse_square_


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
