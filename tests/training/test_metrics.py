"""Single-label classification metrics against scikit-learn (absent classes included), what
multi-label mAP does with a label that has no positive (beside scikit-learn's answer), and
what every classification score does with NaN outputs."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, average_precision_score, confusion_matrix, f1_score, log_loss

from attnlab.training.metrics import best_threshold, classification_metrics, multilabel_metrics
from attnlab.training.multilabel import MultiLabelObjective


def _probs(seed: int, b: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, k, (b,), generator=g)
    logits = torch.randn(b, k, generator=g) * 2 + 3.0 * torch.nn.functional.one_hot(labels, k)
    return labels, torch.softmax(logits, dim=-1)


@pytest.mark.parametrize("seed", range(6))
def test_classification_metrics_match_sklearn(seed):
    labels, probs = _probs(seed, 50 + seed, 5)
    m = classification_metrics(labels, probs)
    y, pred = labels.numpy(), probs.argmax(-1).numpy()
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred), abs=1e-12)
    assert m["accuracy"] == pytest.approx(np.trace(confusion_matrix(y, pred)) / len(y), abs=1e-12)
    assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro", zero_division=0), abs=1e-12)
    with warnings.catch_warnings():  # float32 rows sum to 1 within 1e-7 only
        warnings.simplefilter("ignore")
        assert m["loss"] == pytest.approx(log_loss(y, probs.double().numpy(), labels=list(range(5))), abs=1e-5)
    assert 0.3 < m["accuracy"] < 1.0  # not a degenerate case


def test_macro_f1_averages_the_classes_seen_in_labels_or_predictions():
    """scikit-learn's default label set (and torchmetrics' macro average, which drops classes with
    tp + fp + fn = 0): a class neither in the test labels nor predicted is left out; a class
    predicted but absent from the labels counts with F1 = 0."""
    labels = torch.tensor([0, 0, 1, 1, 1, 0])
    probs = torch.zeros(6, 4)
    probs[torch.arange(6), torch.tensor([0, 0, 1, 1, 2, 0])] = 1.0  # class 2 predicted once, never true; 3 never seen
    m = classification_metrics(labels, probs)
    # per class: F1(0) = 1, F1(1) = 2*2/(2*2+0+1) = 0.8, F1(2) = 0 (one false positive); class 3 left out
    assert m["macro_f1"] == pytest.approx((1.0 + 0.8 + 0.0) / 3, abs=1e-12)
    assert m["macro_f1"] == pytest.approx(f1_score(labels, probs.argmax(-1), average="macro", zero_division=0), abs=1e-12)
    assert m["accuracy"] == pytest.approx(5 / 6, abs=1e-12)


def test_map_leaves_out_a_label_without_positives_where_sklearn_does_not():
    """A label with no positive example has no precision-recall curve: attnlab's mAP averages the
    other labels (as torchmetrics' macro average skips a NaN label). scikit-learn warns and
    gives such a column a value of its own, which moves its macro mean: documented, not copied."""
    y = torch.tensor([[1, 0, 1], [0, 0, 1], [1, 0, 0], [0, 0, 0]], dtype=torch.float32)
    p = torch.tensor([[0.9, 0.2, 0.6], [0.1, 0.3, 0.7], [0.4, 0.1, 0.2], [0.5, 0.4, 0.1]])
    m = multilabel_metrics(y, p, 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        per_label = [average_precision_score(y[:, k].numpy(), p[:, k].numpy()) for k in (0, 2)]
        sk_all = average_precision_score(y.numpy(), p.numpy(), average="macro")
    assert m["map"] == pytest.approx(np.mean(per_label), abs=1e-12)
    assert m["map"] != pytest.approx(sk_all, abs=1e-3)  # sklearn's mean counts the empty column
    assert multilabel_metrics(torch.zeros(4, 3), p, 0.5)["map"] == 0.0  # no label has a positive at all


def test_nan_outputs_give_nan_scores_not_finite_ones():
    """argmax treats NaN as the largest value and a NaN probability sorts like any number: a model
    whose outputs went NaN got a finite accuracy / mAP (1.0 on the case below), which then drove
    checkpoint selection. Every score of such outputs is NaN now (null in metrics.json; the
    trainer never keeps a NaN metric as the best)."""
    nan = float("nan")
    labels = torch.tensor([0, 1, 1, 0])
    probs = torch.tensor([[nan, nan], [0.2, 0.8], [0.3, 0.7], [0.9, 0.1]])
    m = classification_metrics(labels, probs)
    assert all(math.isnan(m[k]) for k in ("accuracy", "macro_f1", "loss")), m
    y = torch.tensor([[1.0, 0], [0, 1], [1, 1], [0, 0]])
    p = torch.tensor([[nan, 0.2], [0.1, 0.9], [0.8, 0.7], [0.3, 0.1]])
    m = multilabel_metrics(y, p, 0.5)
    assert all(math.isnan(m[k]) for k in ("micro_f1", "macro_f1", "map", "loss")), m
    assert m["threshold"] == 0.5
    with pytest.raises(ValueError, match="NaN"):
        best_threshold(y, p)
    objective = MultiLabelObjective(2, threshold=0.4)
    record = objective.calibrate_outputs(p, y)  # the threshold stays; no NaN threshold reaches data.json
    assert objective.threshold == 0.4 and record["threshold"] == 0.4 and math.isnan(record["val_micro_f1"])
