"""Evaluation metrics. Single-label classification is scored by scikit-learn; the regression
and multi-label metrics are computed here (tests check them against scikit-learn)."""

from __future__ import annotations

import logging
import math

import torch
from torch import Tensor

log = logging.getLogger(__name__)

__all__ = ["average_precision", "best_threshold", "classification_metrics", "multilabel_metrics", "regression_metrics"]


def _nan_rows(probs: Tensor, what: str) -> int:
    """How many examples have a NaN output (logged): their scores would be finite and wrong, since
    argmax takes NaN for the largest value and a NaN sorts like a number. Shape: probs (B, K)."""
    bad = int(probs.isnan().flatten(1).any(dim=1).sum()) if probs.numel() else 0
    if bad:
        log.warning("%d of %d examples have NaN %s: every score of this evaluation is NaN", bad, len(probs), what)
    return bad


def classification_metrics(labels: Tensor, probs: Tensor) -> dict[str, float]:
    """accuracy, macro-F1 and mean cross-entropy from labels (B,) and class probabilities (B, K).

    macro-F1 averages the classes in the labels or the predictions (scikit-learn's default; a
    class neither true nor predicted has no F1 to average). NaN outputs give NaN scores.
    """
    from sklearn.metrics import accuracy_score, f1_score

    if _nan_rows(probs, "class probabilities"):
        return {"accuracy": math.nan, "macro_f1": math.nan, "loss": math.nan}
    y = labels.numpy()
    pred = probs.argmax(dim=-1).numpy()
    nll = -torch.log(probs.gather(1, labels[:, None]).clamp(min=1e-12)).mean().item()
    return {
        "accuracy": float(accuracy_score(y, pred)),
        "macro_f1": float(f1_score(y, pred, average="macro", zero_division=0)),
        "loss": float(nll),
    }


def regression_metrics(target: Tensor, pred: Tensor) -> dict[str, float]:
    """mse, mae and r2 (coefficient of determination) of predictions, in the target's units.

    Computed here in float64 rather than by scikit-learn so its metrics stay an independent
    check in the tests. r2 = 1 - SS_res / SS_tot; a constant target gives 1.0 for a perfect
    prediction and 0.0 otherwise (scikit-learn's ``force_finite`` convention).

    Shape: target (B,), pred (B,).
    """
    y, p = target.double().flatten(), pred.double().flatten()
    residual = ((y - p) ** 2).sum()
    total = ((y - y.mean()) ** 2).sum()
    if total > 0:
        r2 = float(1 - residual / total)
    else:
        r2 = 1.0 if residual == 0 else 0.0
    return {"mse": float(residual / len(y)), "mae": float((y - p).abs().mean()), "r2": r2}


def _f1(tp: Tensor, fp: Tensor, fn: Tensor) -> Tensor:
    """2TP / (2TP + FP + FN), 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    denominator = 2 * tp + fp + fn
    return torch.where(denominator > 0, 2 * tp / denominator.clamp(min=1), torch.zeros_like(tp, dtype=torch.float64))


def average_precision(target: Tensor, score: Tensor) -> float:
    """Average precision of one label: sum over distinct score thresholds of (R_n - R_{n-1}) P_n,
    the step-wise area under the precision-recall curve (no interpolation), as scikit-learn's
    ``average_precision_score`` defines it. NaN when the label has no positive example.

    Shape: target (B,) 0/1, score (B,).
    """
    y, s = target.double().flatten(), score.double().flatten()
    positives = float(y.sum())
    if positives == 0:
        return float("nan")
    order = torch.argsort(s, descending=True, stable=True)
    y, s = y[order], s[order]
    tp = torch.cumsum(y, 0)
    # the last position of each run of tied scores: a threshold admits a whole tie at once
    ends = torch.cat([torch.nonzero(s[1:] != s[:-1]).flatten(), torch.tensor([len(s) - 1])])
    tp = tp[ends]
    predicted = (ends + 1).double()
    precision, recall = tp / predicted, tp / positives
    previous = torch.cat([torch.zeros(1, dtype=torch.float64), recall[:-1]])
    return float(((recall - previous) * precision).sum())


def best_threshold(target: Tensor, probs: Tensor) -> tuple[float, float]:
    """(threshold, micro-F1): the one global threshold on ``probs`` that maximises micro-F1.

    Every distinct score is a candidate cut (labels with a score >= cut are predicted); the
    returned threshold lies midway between the best cut and the next lower score, so scores
    a little below the validation ones still fall on the same side. Ties in F1 go to the
    higher threshold.

    Shape: target (B, K) 0/1, probs (B, K) without NaN (ValueError: no cut is best for those).
    """
    if probs.isnan().any():
        raise ValueError(f"best_threshold: {int(probs.isnan().sum())} of {probs.numel()} probabilities are NaN")
    y, s = target.double().flatten(), probs.double().flatten()
    positives = y.sum()
    order = torch.argsort(s, descending=True, stable=True)
    y, s = y[order], s[order]
    ends = torch.cat([torch.nonzero(s[1:] != s[:-1]).flatten(), torch.tensor([len(s) - 1])])
    tp = torch.cumsum(y, 0)[ends]
    predicted = (ends + 1).double()
    f1 = 2 * tp / (predicted + positives)  # 2TP / (2TP + FP + FN) with TP + FP = predicted, TP + FN = positives
    best = int(torch.argmax(f1))  # the first maximum: the highest cut among equals
    cut = float(s[ends[best]])
    below = float(s[ends[best] + 1]) if best + 1 < len(ends) else cut / 2
    return (cut + below) / 2, float(f1[best])


def multilabel_metrics(target: Tensor, probs: Tensor, threshold: float) -> dict[str, float]:
    """micro-F1, macro-F1 (labels above ``threshold``), mAP and mean binary cross-entropy.

    mAP is the mean of `average_precision` over the labels with at least one positive example
    (a label with none has no precision-recall curve); 0 when no label has one. NaN outputs
    give NaN scores.

    Shape: target (B, K) 0/1, probs (B, K) sigmoid outputs.
    """
    if _nan_rows(probs, "label probabilities"):
        return {"micro_f1": math.nan, "macro_f1": math.nan, "map": math.nan, "loss": math.nan, "threshold": float(threshold)}
    y = target.double()
    pred = (probs.double() >= threshold).double()
    tp, fp, fn = (pred * y).sum(0), (pred * (1 - y)).sum(0), ((1 - pred) * y).sum(0)  # (K,)
    ap = [average_precision(y[:, k], probs[:, k]) for k in range(y.shape[1])]
    ap = [a for a in ap if not math.isnan(a)]  # labels without positives have no curve
    p = probs.double().clamp(1e-12, 1 - 1e-12)
    bce = -(y * p.log() + (1 - y) * (1 - p).log()).mean()
    return {
        "micro_f1": float(_f1(tp.sum(), fp.sum(), fn.sum())),
        "macro_f1": float(_f1(tp, fp, fn).mean()),
        "map": float(sum(ap) / len(ap)) if ap else 0.0,
        "loss": float(bce),
        "threshold": float(threshold),
    }
