"""Evaluation metrics, computed by scikit-learn where it has them."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["classification_metrics"]


def classification_metrics(labels: Tensor, probs: Tensor) -> dict[str, float]:
    """accuracy, macro-F1 and mean cross-entropy from labels (B,) and class probabilities (B, K)."""
    from sklearn.metrics import accuracy_score, f1_score

    y = labels.numpy()
    pred = probs.argmax(dim=-1).numpy()
    nll = -torch.log(probs.gather(1, labels[:, None]).clamp(min=1e-12)).mean().item()
    return {
        "accuracy": float(accuracy_score(y, pred)),
        "macro_f1": float(f1_score(y, pred, average="macro", zero_division=0)),
        "loss": float(nll),
    }
