"""Regression and multi-label metrics, the threshold search and balanced class weights against
scikit-learn on fresh random inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    average_precision_score,
    f1_score,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
)
from sklearn.utils.class_weight import compute_class_weight

from attnlab.errors import ConfigError
from attnlab.training.class_weights import apply_class_weights, balanced_class_weights
from attnlab.training.metrics import (
    average_precision,
    best_threshold,
    multilabel_metrics,
    regression_metrics,
)
from attnlab.training.multilabel import MultiLabelObjective
from attnlab.training.objectives import ClassificationObjective
from attnlab.training.regression import RegressionObjective


@pytest.mark.parametrize("seed", range(5))
def test_regression_metrics_match_sklearn(seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.randn(50, generator=g, dtype=torch.float64) * 7 + 3  # (B,)
    p = y + torch.randn(50, generator=g, dtype=torch.float64) * 2
    m = regression_metrics(y, p)
    assert m["mse"] == pytest.approx(mean_squared_error(y.numpy(), p.numpy()), rel=1e-12)
    assert m["mae"] == pytest.approx(mean_absolute_error(y.numpy(), p.numpy()), rel=1e-12)
    assert m["r2"] == pytest.approx(r2_score(y.numpy(), p.numpy()), rel=1e-12)


def test_r2_of_a_constant_target_follows_sklearn():
    y = torch.full((6,), 2.0)
    assert regression_metrics(y, y)["r2"] == r2_score(y.numpy(), y.numpy()) == 1.0
    p = y + torch.arange(6.0)
    assert regression_metrics(y, p)["r2"] == pytest.approx(r2_score(y.numpy(), p.numpy()))


def _multilabel(seed: int, b: int = 40, k: int = 6, ties: bool = False):
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(b, k, generator=g) < 0.3).float()  # (B, K)
    y[0] = 1.0  # every label has a positive
    p = (0.6 * y + 0.7 * torch.rand(b, k, generator=g)).clamp(0, 1)  # informative but noisy
    if ties:
        p = (p * 4).round() / 4  # many tied scores
    return y, p


@pytest.mark.parametrize("seed,ties", [(s, t) for s in range(4) for t in (False, True)])
def test_multilabel_metrics_match_sklearn(seed, ties):
    y, p = _multilabel(seed, ties=ties)
    threshold = 0.55
    m = multilabel_metrics(y, p, threshold)
    pred = (p >= threshold).int().numpy()
    assert m["micro_f1"] == pytest.approx(f1_score(y.numpy(), pred, average="micro", zero_division=0), abs=1e-12)
    assert m["macro_f1"] == pytest.approx(f1_score(y.numpy(), pred, average="macro", zero_division=0), abs=1e-12)
    assert m["map"] == pytest.approx(average_precision_score(y.numpy(), p.numpy(), average="macro"), abs=1e-12)
    for k in range(y.shape[1]):
        assert average_precision(y[:, k], p[:, k]) == pytest.approx(average_precision_score(y[:, k].numpy(), p[:, k].numpy()), abs=1e-12)


def test_map_skips_labels_without_positives():
    y, p = _multilabel(7)
    y[:, 2] = 0.0  # no positive: no precision-recall curve
    keep = [k for k in range(y.shape[1]) if k != 2]
    expected = average_precision_score(y[:, keep].numpy(), p[:, keep].numpy(), average="macro")
    assert multilabel_metrics(y, p, 0.5)["map"] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed,ties", [(s, t) for s in range(4) for t in (False, True)])
def test_best_threshold_maximises_micro_f1(seed, ties):
    y, p = _multilabel(seed, ties=ties)
    threshold, f1 = best_threshold(y, p)
    got = f1_score(y.numpy(), (p >= threshold).int().numpy(), average="micro", zero_division=0)
    assert f1 == pytest.approx(got, abs=1e-12)
    # no cut at any score (nor 0.5) does better
    candidates = torch.cat([p.flatten().unique(), torch.tensor([0.5])])
    best = max(f1_score(y.numpy(), (p >= c).int().numpy(), average="micro", zero_division=0) for c in candidates)
    assert f1 == pytest.approx(best, abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_balanced_class_weights_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    labels = rng.choice(4, size=90, p=[0.6, 0.25, 0.1, 0.05])
    labels[:4] = np.arange(4)  # every class occurs
    expected = compute_class_weight("balanced", classes=np.arange(4), y=labels)
    torch.testing.assert_close(balanced_class_weights(torch.from_numpy(labels), 4), torch.tensor(expected, dtype=torch.float32))


def test_weighted_cross_entropy_is_the_weighted_mean_of_per_example_losses():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(12, 3, generator=g, dtype=torch.float64), torch.randint(0, 3, (12,), generator=g)
    w = torch.tensor([0.5, 2.0, 1.5])
    objective = ClassificationObjective(3)
    objective.set_class_weights(w)
    loss, _ = objective.loss(torch.nn.Identity(), (x, y))
    per_example = -torch.log_softmax(x, -1).gather(1, y[:, None]).squeeze(1)  # (B,)
    expected = (w[y] * per_example).sum() / w[y].sum()
    torch.testing.assert_close(loss.double(), expected, rtol=1e-6, atol=1e-6)


def test_class_weights_are_refused_by_objectives_they_do_not_fit():
    class _Set:
        y = torch.tensor([0, 1, 1])

    for objective in (RegressionObjective(0.0, 1.0), MultiLabelObjective(3)):
        with pytest.raises(ConfigError, match="single-label cross-entropy only"):
            apply_class_weights(objective, "balanced", _Set(), 2, ["a", "b"])
    with pytest.raises(ConfigError, match="'c' has no training example"):
        apply_class_weights(ClassificationObjective(3), "balanced", _Set(), 3, ["a", "b", "c"])


def test_regression_objective_learns_standardised_and_reports_in_units():
    mean, std = 100.0, 20.0
    x = torch.randn(16, 1, dtype=torch.float64)
    y = (x[:, 0] * std + mean).float()  # the identity model predicts the standardised target exactly
    objective = RegressionObjective(mean, std)
    model = torch.nn.Identity()
    loss, _ = objective.loss(model, (x, y))
    assert float(loss) == pytest.approx(0.0, abs=1e-8)
    m = objective.evaluate(model, [(x, y)])
    assert m["mse"] == pytest.approx(0.0, abs=1e-6) and m["r2"] == pytest.approx(1.0, abs=1e-8)


def test_multilabel_loss_is_torch_bce_and_calibration_sets_the_threshold():
    y, p = _multilabel(3)
    logits = torch.logit(p.clamp(1e-4, 1 - 1e-4))
    objective = MultiLabelObjective(y.shape[1])
    loss, _ = objective.loss(torch.nn.Identity(), (logits, y))
    expected = torch.nn.BCEWithLogitsLoss()(logits, y)
    torch.testing.assert_close(loss, expected)
    chosen = objective.calibrate(torch.nn.Identity(), [(logits, y)])
    assert objective.threshold == chosen["threshold"]
    assert objective.evaluate(torch.nn.Identity(), [(logits, y)])["micro_f1"] == pytest.approx(chosen["val_micro_f1"], abs=1e-6)
