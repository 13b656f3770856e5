"""What the faithfulness measures read of multi-label and regression outputs (explain/readout.py),
against float64 formulas written out here, and the measures through them on a model whose
answer is known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from attnlab.errors import ConfigError
from attnlab.explain.faithfulness import FRACTIONS, deletion_insertion, perturbation
from attnlab.explain.readout import CLASS, Readout


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_readouts_match_their_formulas(seed):
    g = torch.Generator().manual_seed(seed)
    intact, now = torch.randn(7, 4, generator=g, dtype=torch.float64) * 2, torch.randn(7, 4, generator=g, dtype=torch.float64) * 2
    target = intact.argmax(-1)
    a, b, t = intact.numpy(), now.numpy(), target.numpy()
    rows = range(7)
    # class: the argmax kept; the softmax probability of the intact class
    assert CLASS.agreement(now, intact, target).tolist() == [float(b[i].argmax() == t[i]) for i in rows]
    soft = [math.exp(b[i, t[i]]) / sum(math.exp(v) for v in b[i]) for i in rows]
    np.testing.assert_allclose(CLASS.score(now, intact, target).numpy(), soft, rtol=1e-12)
    # multilabel at threshold 0.3: the explained label's decision kept; the probability of its intact decision
    ml = Readout("multilabel", 0.3)
    sig = lambda z: 1.0 / (1.0 + math.exp(-z))  # noqa: E731
    kept = [float((sig(b[i, t[i]]) >= 0.3) == (sig(a[i, t[i]]) >= 0.3)) for i in rows]
    assert ml.agreement(now, intact, target).tolist() == kept
    probs = [sig(b[i, t[i]]) if sig(a[i, t[i]]) >= 0.3 else 1 - sig(b[i, t[i]]) for i in rows]
    np.testing.assert_allclose(ml.score(now, intact, target).numpy(), probs, rtol=1e-12)
    # regression: exp(-d^2 / 2) of the change in standardised units
    reg = Readout("regression")
    change = [math.exp(-0.5 * (b[i, 0] - a[i, 0]) ** 2) for i in rows]
    zero = torch.zeros(7, dtype=torch.long)
    np.testing.assert_allclose(reg.agreement(now, intact, zero).numpy(), change, rtol=1e-12)
    np.testing.assert_allclose(reg.score(now, intact, zero).numpy(), change, rtol=1e-12)
    for r in (CLASS, ml, reg):  # the intact input agrees with itself
        assert torch.allclose(r.agreement(intact, intact, target if r is not reg else zero), torch.ones(7, dtype=torch.float64))


def test_the_multilabel_decision_is_the_sigmoid_against_the_threshold_at_its_edge():
    ml = Readout("multilabel", 0.7)
    edge = math.log(0.7 / 0.3)
    logits = torch.tensor([[edge - 1e-9], [edge + 1e-9]], dtype=torch.float64)
    present = torch.tensor([[10.0], [10.0]], dtype=torch.float64)
    assert ml.agreement(logits, present, torch.zeros(2, dtype=torch.long)).tolist() == [0.0, 1.0]
    with pytest.raises(ConfigError, match="kind must be one of"):
        Readout("ranking")
    with pytest.raises(ConfigError, match=r"threshold must be in \(0, 1\), got 1.0"):
        Readout("multilabel", 1.0)


def test_regression_perturbation_and_deletion_of_a_sum_follow_the_closed_form():
    """f(x) = sum of the positions: removing k positions (to 0) changes f by minus their sum."""
    g = torch.Generator().manual_seed(5)
    x = torch.rand(3, 10, 1, generator=g, dtype=torch.float64) + 0.5  # (B, N, 1), all positive
    rel = torch.rand(3, 10, generator=g, dtype=torch.float64)

    def model(z):
        return z.sum(dim=(1, 2))[:, None]  # (B, 1)

    reg = Readout("regression")
    pos = perturbation(model, x, rel, 0.0, positive=True, readout=reg)
    neg = perturbation(model, x, rel, 0.0, positive=False, readout=reg)
    order = rel.argsort(-1, descending=True).numpy()
    v = x[..., 0].numpy()
    for i in range(3):
        for j, f in enumerate(FRACTIONS):
            k = round(f * 10)
            assert pos[i, j] == pytest.approx(math.exp(-0.5 * v[i, order[i, :k]].sum() ** 2), rel=1e-12)
            assert neg[i, j] == pytest.approx(math.exp(-0.5 * v[i, order[i, ::-1][:k]].sum() ** 2), rel=1e-12)
    fr, dele, ins = deletion_insertion(model, x, rel, 0.0, steps=5, readout=reg)
    for i in range(3):
        for j, f in enumerate(fr):
            k = round(f * 10)
            top = v[i, order[i, :k]].sum()
            assert dele[i, j] == pytest.approx(math.exp(-0.5 * top**2), rel=1e-12)
            assert ins[i, j] == pytest.approx(math.exp(-0.5 * (v[i].sum() - top) ** 2), rel=1e-12)
