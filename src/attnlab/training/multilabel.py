"""Multi-label objective: any subset of K labels per example, one sigmoid per label.

Loss: binary cross-entropy on the logits (``binary_cross_entropy_with_logits``: the
log-sum-exp form, stable where sigmoid-then-log is not), optionally label-smoothed toward 1/2.
Evaluation: micro-F1 and macro-F1 of the labels whose probability clears ``threshold``, and
mAP (mean average precision over labels, threshold-free), which selects the kept checkpoint
so that selection does not depend on a threshold not yet chosen. After training, `calibrate`
picks one global threshold maximising micro-F1 on the validation split (per-label thresholds
overfit small validation sets); the run keeps it in data.json and test metrics and
``attnlab predict`` use it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.training.metrics import best_threshold, multilabel_metrics

log = logging.getLogger(__name__)

__all__ = ["MultiLabelObjective"]


class MultiLabelObjective:
    """Sigmoid + BCE over K labels; micro / macro F1 at ``threshold`` and mAP on evaluation."""

    metric = "map"
    greater_is_better = True

    def __init__(self, num_labels: int, *, threshold: float = 0.5, label_smoothing: float = 0.0):
        self.num_labels = num_labels
        self.threshold = float(threshold)
        self.label_smoothing = float(label_smoothing)

    def loss(self, model: nn.Module, batch: Any) -> tuple[Tensor, int]:
        x, y = batch  # y (B, K) 0/1
        logits = model(x).float()  # (B, K)
        target = y.float() * (1 - self.label_smoothing) + 0.5 * self.label_smoothing
        return F.binary_cross_entropy_with_logits(logits, target), int(y.shape[0])

    @torch.no_grad()
    def predict(self, model: nn.Module, x: Tensor) -> Tensor:
        """Per-label probabilities. Shape: -> (B, K)."""
        return torch.sigmoid(model(x).float())

    @torch.no_grad()
    def outputs(self, model: nn.Module, batches: Iterable[Any]) -> tuple[Tensor, Tensor]:
        """(probabilities (B, K), 0/1 targets (B, K)) of every batch, on the CPU, in order."""
        probs, targets = [], []
        for x, y in batches:
            probs.append(self.predict(model, x).cpu())
            targets.append(y.float().cpu())
        return torch.cat(probs), torch.cat(targets)

    def score(self, outputs: Tensor, targets: Tensor) -> dict[str, float]:
        return multilabel_metrics(targets, outputs, self.threshold)

    def evaluate(self, model: nn.Module, batches: Iterable[Any]) -> dict[str, float]:
        return self.score(*self.outputs(model, batches))

    def calibrate(self, model: nn.Module, batches: Iterable[Any]) -> dict[str, float]:
        """Choose the threshold on these (validation) batches; returns what the run records."""
        return self.calibrate_outputs(*self.outputs(model, batches))

    def calibrate_outputs(self, outputs: Tensor, targets: Tensor) -> dict[str, float]:
        """Choose the threshold on (validation) probabilities (B, K), e.g. an ensemble's mean;
        NaN probabilities keep the threshold there is (no cut is best for them) with a NaN F1."""
        if outputs.isnan().any():
            log.warning("validation probabilities hold NaN: the decision threshold stays %g", self.threshold)
            return {"threshold": self.threshold, "val_micro_f1": math.nan}
        self.threshold, f1 = best_threshold(targets, outputs)
        return {"threshold": self.threshold, "val_micro_f1": f1}

    def load_calibration(self, record: dict[str, Any]) -> None:
        self.threshold = float(record["threshold"])
