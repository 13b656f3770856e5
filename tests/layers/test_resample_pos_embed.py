"""``resample_abs_pos_embed`` against a float64 reference written from the definition.

The reference is the separable, antialiased bicubic resampling of PIL (Keys' cubic with
a = -0.5, support widened by the scale when shrinking, weights normalised per output pixel),
which is what timm's ``resample_abs_pos_embed`` asks of ``F.interpolate(..., antialias=True)``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from attnlab.layers.positional import resample_abs_pos_embed


def _cubic(x: float, a: float = -0.5) -> float:
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    if x < 2.0:
        return (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return 0.0


def _weights(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in) resampling matrix of one axis, float64."""
    scale = size_in / size_out
    stretch = max(scale, 1.0)  # shrinking widens the kernel: the antialiasing
    support = 2.0 * stretch
    matrix = np.zeros((size_out, size_in))
    for i in range(size_out):
        center = scale * (i + 0.5)
        lo, hi = max(int(center - support + 0.5), 0), min(int(center + support + 0.5), size_in)
        w = np.array([_cubic((j - center + 0.5) / stretch) for j in range(lo, hi)])
        matrix[i, lo:hi] = w / w.sum()
    return matrix


def _reference(table: torch.Tensor, new: tuple[int, int], old: tuple[int, int], prefix: int) -> torch.Tensor:
    t = table[0].double().numpy()
    grid = t[prefix:].reshape(old[0], old[1], -1)  # (h, w, C)
    rows, cols = _weights(old[0], new[0]), _weights(old[1], new[1])
    out = np.einsum("ih,jw,hwc->ijc", rows, cols, grid).reshape(new[0] * new[1], -1)
    return torch.from_numpy(np.concatenate([t[:prefix], out]))[None]


@pytest.mark.parametrize("old,new", [((7, 7), (2, 2)), ((2, 2), (7, 7)), ((28, 28), (8, 8)), ((8, 8), (28, 28)),
                                     ((4, 6), (5, 3)), ((14, 14), (4, 4))])
@pytest.mark.parametrize("prefix", [0, 1, 2])
def test_matches_the_antialiased_bicubic_reference(old, new, prefix):
    torch.manual_seed(sum(old) + sum(new) + prefix)
    table = torch.randn(1, prefix + old[0] * old[1], 8, dtype=torch.float64)
    got = resample_abs_pos_embed(table, new, old, num_prefix_tokens=prefix)
    assert got.shape == (1, prefix + new[0] * new[1], 8) and got.dtype == torch.float64
    torch.testing.assert_close(got, _reference(table, new, old, prefix), atol=1e-10, rtol=0)
    assert torch.equal(got[:, :prefix], table[:, :prefix])  # the class token row is kept as it is


def test_float32_table_is_computed_and_returned_in_float32():
    table = torch.randn(1, 1 + 28 * 28, 16)
    got = resample_abs_pos_embed(table, (8, 8), (28, 28))
    assert got.shape == (1, 65, 16) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), _reference(table, (8, 8), (28, 28), 1), atol=1e-5, rtol=0)
    up = resample_abs_pos_embed(table[:, : 1 + 64], (28, 28), (8, 8))
    assert up.shape == (1, 1 + 28 * 28, 16) and torch.equal(up[:, 0], table[:, 0])


def test_same_grid_is_the_identity():
    table = torch.randn(1, 1 + 49, 16)
    assert resample_abs_pos_embed(table, (7, 7), (7, 7)) is table


def test_a_constant_table_stays_constant():
    """Normalised weights: a table with one value per feature keeps it at any grid."""
    table = torch.ones(1, 1 + 49, 4, dtype=torch.float64) * torch.arange(4.0, dtype=torch.float64)
    got = resample_abs_pos_embed(table, (3, 11), (7, 7))
    torch.testing.assert_close(got, torch.ones(1, 1 + 33, 4, dtype=torch.float64) * torch.arange(4.0, dtype=torch.float64))


def test_a_table_of_another_grid_is_refused():
    with pytest.raises(ValueError, match=r"does not hold 1 prefix rows and a 7x7 grid"):
        resample_abs_pos_embed(torch.randn(1, 1 + 48, 4), (2, 2), (7, 7))
    assert math.isfinite(float(resample_abs_pos_embed(torch.randn(1, 50, 4), (1, 1), (7, 7)).sum()))
