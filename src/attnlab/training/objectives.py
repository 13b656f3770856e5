"""What a task optimises and how it is scored; the trainer knows nothing else of the task.

An objective turns a batch into a loss and a data set into metrics. Classification is here;
later task families (language modelling, translation, recommendation) add their own.
"""

from __future__ import annotations

from typing import Any, Iterable, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.training.metrics import classification_metrics

__all__ = ["Objective", "ClassificationObjective"]


class Objective(Protocol):
    metric: str  # the validation metric early stopping watches
    greater_is_better: bool

    def loss(self, model: nn.Module, batch: Any) -> tuple[Tensor, int]:
        """Mean loss over the batch and the number of examples in it."""

    def evaluate(self, model: nn.Module, batches: Iterable[Any]) -> dict[str, float]:
        """Metrics over batches (already on the right device)."""


class ClassificationObjective:
    """Cross-entropy (optionally label-smoothed); accuracy / macro-F1 / loss on evaluation."""

    metric = "accuracy"
    greater_is_better = True

    def __init__(self, num_classes: int, *, label_smoothing: float = 0.0):
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing

    def loss(self, model: nn.Module, batch: Any) -> tuple[Tensor, int]:
        x, y = batch
        logits = model(x)
        return F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing), int(y.shape[0])

    @torch.no_grad()
    def predict(self, model: nn.Module, x: Tensor) -> Tensor:
        return torch.softmax(model(x).float(), dim=-1)

    @torch.no_grad()
    def probabilities(self, model: nn.Module, batches: Iterable[Any]) -> tuple[Tensor, Tensor]:
        """Class probabilities (B, K) float32 on the CPU and the labels (B,) of every batch, in order."""
        probs, labels = [], []
        for x, y in batches:
            probs.append(self.predict(model, x).cpu())
            labels.append(y.cpu())
        return torch.cat(probs), torch.cat(labels)

    def evaluate(self, model: nn.Module, batches: Iterable[Any]) -> dict[str, float]:
        p, y = self.probabilities(model, batches)
        return classification_metrics(y, p)
