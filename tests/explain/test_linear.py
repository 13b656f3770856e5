"""The exact attribution of an affine forecast (explain.linear) against float64 sums written out here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnlab.explain.linear import METHOD, linear_attribution


def test_contributions_sum_with_the_bias_to_the_forecast_and_relevance_is_the_scaled_mean():
    rng = np.random.default_rng(0)
    H, L = 5, 9
    w, b, x = rng.normal(size=(H, L)), rng.normal(size=H), rng.normal(size=L)
    forecast = np.array([sum(w[h, l] * x[l] for l in range(L)) + b[h] for h in range(H)])
    got = linear_attribution(torch.from_numpy(w).float(), b, torch.from_numpy(x), forecast + 1e-3 * np.arange(H))
    np.testing.assert_allclose(got.contributions, np.float32(w).astype(np.float64) * x[None], rtol=0, atol=1e-15)
    assert got.error == pytest.approx(4e-3, abs=1e-6)  # the largest gap: float32 weights plus the offset added above
    mean = np.array([sum(w[h, l] * x[l] for h in range(H)) / H for l in range(L)])
    np.testing.assert_allclose(got.relevance, np.abs(mean) / np.abs(mean).max(), atol=1e-6)
    assert got.relevance.max() == 1.0 and got.relevance.min() >= 0.0
    caption = got.caption()
    assert METHOD in caption and "not attention" in caption and "mean of the 5 forecast steps" in caption
    assert "training mean" in caption and "reproduce the model's forecast to 0.004" in caption


def test_an_all_zero_input_has_zero_relevance_and_bad_shapes_are_named():
    got = linear_attribution(np.ones((3, 4)), np.zeros(3), np.zeros(4), np.zeros(3))
    assert got.error == 0.0 and not got.relevance.any()
    with pytest.raises(ValueError, match=r"weight \(H, L\), bias \(H,\), x \(L,\), forecast \(H,\); got \(3, 4\), \(3,\), \(5,\)"):
        linear_attribution(np.ones((3, 4)), np.zeros(3), np.zeros(5), np.zeros(3))
    with pytest.raises(ValueError, match="not finite"):
        linear_attribution(np.ones((3, 4)), np.zeros(3), np.zeros(4), np.array([0.0, np.nan, 0.0]))
