"""Regression objective: one number per example, learnt standardised, scored in its own units.

The model's head gives one output, read as the standardised target ``(y - mean) / std``
(mean and std of the training targets): MSE on that scale keeps the loss of order 1 whatever
the target's units, so the task's learning rates carry over. Evaluation maps predictions back
(``z * std + mean``) and reports ``mse``, ``mae`` and ``r2`` in the target's units; the lower
``mse`` on validation selects the kept checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.training.metrics import regression_metrics

__all__ = ["RegressionObjective"]


class RegressionObjective:
    """MSE on standardised targets; mse / mae / r2 in the target's units on evaluation."""

    metric = "mse"
    greater_is_better = False

    def __init__(self, mean: float, std: float):
        if not std > 0:
            raise ValueError(f"RegressionObjective: std must be positive, got {std!r}")
        self.mean, self.std = float(mean), float(std)

    def loss(self, model: nn.Module, batch: Any) -> tuple[Tensor, int]:
        x, y = batch  # y (B,) in the target's units
        z = model(x).float().squeeze(-1)  # (B,)
        return F.mse_loss(z, (y.float() - self.mean) / self.std), int(y.shape[0])

    @torch.no_grad()
    def predict(self, model: nn.Module, x: Tensor) -> Tensor:
        """Predictions in the target's units. Shape: -> (B,)."""
        return model(x).float().squeeze(-1) * self.std + self.mean

    @torch.no_grad()
    def outputs(self, model: nn.Module, batches: Iterable[Any]) -> tuple[Tensor, Tensor]:
        """(predictions (B,), targets (B,)) of every batch, float64 on the CPU, in order."""
        preds, targets = [], []
        for x, y in batches:
            preds.append(self.predict(model, x).double().cpu())
            targets.append(y.double().cpu())
        return torch.cat(preds), torch.cat(targets)

    def score(self, outputs: Tensor, targets: Tensor) -> dict[str, float]:
        return regression_metrics(targets, outputs)

    def evaluate(self, model: nn.Module, batches: Iterable[Any]) -> dict[str, float]:
        return self.score(*self.outputs(model, batches))
