"""Faithfulness measures against independent references (numpy, scipy) and hand-built cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

from attnlab.explain.faithfulness import (
    FRACTIONS,
    auc,
    bootstrap_ci,
    cascading_randomisation,
    deletion_insertion,
    perturbation,
    randomised_copy,
    spearman,
)
from attnlab.explain.relevance import relevance
from tests.explain._tiny import TinyViT


def test_auc_against_numpy_trapezoid_and_by_hand():
    x = np.array(FRACTIONS)
    y = np.array([[1.0, 0.9, 0.7, 0.6, 0.4, 0.3, 0.2, 0.1, 0.0], [0.5] * 9])
    ref = np.trapezoid(y, x, axis=-1) / (x[-1] - x[0])
    np.testing.assert_allclose(auc(y, x), ref, rtol=1e-12)
    # By hand, a straight line from 1 to 0 has mean height 0.5; a constant its value.
    np.testing.assert_allclose(auc(np.array([1.0, 0.5, 0.0]), [0.0, 0.5, 1.0]), 0.5, rtol=1e-12)
    np.testing.assert_allclose(auc(y[1], x), 0.5, rtol=1e-12)


def test_spearman_against_scipy_with_ties():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, size=(6, 20)).astype(float)  # many ties
    b = a + rng.normal(0, 2, size=a.shape)
    b[0] = rng.integers(0, 3, size=20)
    got = spearman(torch.tensor(a), torch.tensor(b)).numpy()
    ref = [spearmanr(a[i], b[i]).statistic for i in range(6)]
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)


class _Linear(nn.Module):
    """logits = [x . w, bias]: class 0 while the kept positions' evidence exceeds ``bias``."""

    def __init__(self, w: torch.Tensor, bias: float):
        super().__init__()
        self.w, self.bias = w, bias

    def forward(self, x):  # (B, N, 1) -> (B, 2)
        s = (x[..., 0] * self.w).sum(-1)
        return torch.stack([s, torch.full_like(s, self.bias)], -1)


def test_perturbation_against_a_numpy_loop():
    torch.manual_seed(0)
    b, n = 8, 10
    w = torch.rand(n, dtype=torch.float64)
    model = _Linear(w, bias=1.0)
    x = torch.rand(b, n, 1, dtype=torch.float64) * 2
    rel = torch.rand(b, n, dtype=torch.float64)
    for positive in (True, False):
        got = perturbation(model, x, rel, 0.0, positive=positive)
        xn, wn, rn = x[..., 0].numpy(), w.numpy(), rel.numpy()
        target = np.where(xn @ wn > 1.0, 0, 1)
        ref = np.zeros((b, len(FRACTIONS)))
        for i in range(b):
            order = np.argsort(-rn[i] if positive else rn[i], kind="stable")
            for j, f in enumerate(FRACTIONS):
                xi = xn[i].copy()
                xi[order[: round(f * n)]] = 0.0
                ref[i, j] = float(np.where(xi @ wn > 1.0, 0, 1) == target[i])
        np.testing.assert_array_equal(got, ref)
    # Relevance = true evidence x*w: removing it first must hurt at least as much as removing it last.
    ev = x[..., 0] * w
    pos = perturbation(model, x, ev, 0.0, positive=True).mean()
    neg = perturbation(model, x, ev, 0.0, positive=False).mean()
    assert pos < neg


def test_deletion_insertion_end_points():
    torch.manual_seed(1)
    model = TinyViT(depth=1).eval().double()
    x = torch.randn(4, 6, 16, dtype=torch.float64)
    rel = torch.rand(4, 6, dtype=torch.float64)
    removed = x.mean(dim=(0, 1))  # a mean "token"
    fr, dele, ins = deletion_insertion(model, x, rel, removed, steps=3)
    np.testing.assert_allclose(fr, [0, 1 / 3, 2 / 3, 1])
    p = model(x).softmax(-1).max(-1).values.detach().numpy()
    blank = model(removed.expand_as(x)).softmax(-1).detach()
    p0 = blank.gather(1, model(x).argmax(-1)[:, None])[:, 0].numpy()
    np.testing.assert_allclose(dele[:, 0], p, rtol=1e-12)
    np.testing.assert_allclose(ins[:, -1], p, rtol=1e-12)
    np.testing.assert_allclose(dele[:, -1], p0, rtol=1e-12)
    np.testing.assert_allclose(ins[:, 0], p0, rtol=1e-12)


def test_deletion_insertion_x_is_the_fraction_actually_removed():
    """7 positions, 10 steps: 10% of 7 is no whole count, so the curve is read after round(i * 7 / 10)
    positions and its x must be that count / 7 (RISE, Quantus), not the nominal i / 10. Reference: the
    curve and its trapezoid AUC by hand, in float64, one point per count 0..7."""
    g = torch.Generator().manual_seed(3)
    b, n = 5, 7
    w = torch.randn(n, generator=g, dtype=torch.float64) * 3
    model = _Linear(w, bias=0.5)
    x = torch.rand(b, n, 1, generator=g, dtype=torch.float64) + 0.5
    rel = torch.rand(b, n, generator=g, dtype=torch.float64)
    fr, dele, ins = deletion_insertion(model, x, rel, 0.0, steps=10)
    np.testing.assert_array_equal(fr, np.arange(n + 1) / n)  # counts 0,1,1,2,3,4,4,5,6,6,7: each once

    xn, wn = x[..., 0].numpy(), w.numpy()
    logit = xn @ wn - 0.5
    target = (logit <= 0).astype(int)  # class 0 while x . w > bias

    def p_target(xi, t):  # softmax of [x . w, bias] at class t
        p0 = 1 / (1 + np.exp(-(xi @ wn - 0.5)))
        return p0 if t == 0 else 1 - p0

    ref_del, ref_ins = np.zeros((b, n + 1)), np.zeros((b, n + 1))
    for i in range(b):
        order = np.argsort(-rel[i].numpy(), kind="stable")
        for k in range(n + 1):
            gone = np.zeros(n, dtype=bool)
            gone[order[:k]] = True
            ref_del[i, k] = p_target(np.where(gone, 0.0, xn[i]), target[i])
            ref_ins[i, k] = p_target(np.where(gone, xn[i], 0.0), target[i])
    np.testing.assert_allclose(dele, ref_del, rtol=1e-12)
    np.testing.assert_allclose(ins, ref_ins, rtol=1e-12)
    xs = np.arange(n + 1) / n
    want_del, want_ins = np.trapezoid(ref_del, xs, axis=-1), np.trapezoid(ref_ins, xs, axis=-1)
    np.testing.assert_allclose(auc(dele, fr), want_del, rtol=1e-12)
    np.testing.assert_allclose(auc(ins, fr), want_ins, rtol=1e-12)
    # The tolerance separates the two conventions: the nominal grid's AUC is off by far more here.
    old = [round(f * n) for f in np.linspace(0, 1, 11)]
    nominal = np.trapezoid(ref_del[:, old], np.linspace(0, 1, 11), axis=-1)
    assert np.abs(nominal - want_del).max() > 1e-3


def test_deletion_insertion_steps_dividing_n_keep_the_nominal_grid():
    model = _Linear(torch.ones(10, dtype=torch.float64), bias=1.0)
    x = torch.rand(2, 10, 1, dtype=torch.float64)
    fr, dele, _ = deletion_insertion(model, x, torch.rand(2, 10, dtype=torch.float64), 0.0, steps=5)
    np.testing.assert_allclose(fr, [0, 0.2, 0.4, 0.6, 0.8, 1.0], rtol=0, atol=0)
    assert dele.shape == (2, 6)
    with pytest.raises(ValueError, match="steps must be >= 1, got 0"):
        deletion_insertion(model, x, torch.rand(2, 10), 0.0, steps=0)


def test_randomisation_random_map_stays_rollout_moves():
    torch.manual_seed(2)
    model = TinyViT(depth=2).eval()
    x = torch.randn(3, 6, 16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    counts, rho = cascading_randomisation(model, x, lambda m, t: relevance(m, t, "random"))
    assert counts[-1] == rho.shape[0] and rho.shape[1] == 3
    np.testing.assert_allclose(rho, 1.0, rtol=0, atol=1e-12)  # a map that ignores the model never moves
    _, rho = cascading_randomisation(model, x, lambda m, t: relevance(m, t, "gradient"))
    assert rho[-1].mean() < 0.99
    # The trained model itself is untouched.
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_bootstrap_ci():
    v = np.array([0.0, 1.0] * 50)
    mean, lo, hi = bootstrap_ci(v, n=2000)
    assert mean == pytest.approx(0.5)
    # Normal approximation of the mean's 95% interval: 0.5 +- 1.96 * 0.5 / 10.
    assert lo == pytest.approx(0.5 - 0.098, abs=0.02) and hi == pytest.approx(0.5 + 0.098, abs=0.02)
    assert bootstrap_ci(np.full(10, 0.3)) == pytest.approx((0.3, 0.3, 0.3))


def test_randomisation_leaves_the_callers_rng_alone():
    """The re-initialised copy is drawn from its own seed; the caller's torch RNG (a training loop's
    dropout and shuffling) goes on as if the call never happened."""
    model = TinyViT(depth=1).eval()
    x = torch.randn(2, 6, 16)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = randomised_copy(model, seed=5)
    cascading_randomisation(model, x, lambda m, t: relevance(m, t, "rollout"), seed=5)
    torch.testing.assert_close(torch.rand(3), expected, rtol=0, atol=0)
    b = randomised_copy(model, seed=5)  # still reproducible from its seed alone
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.head.weight, model.head.weight)
