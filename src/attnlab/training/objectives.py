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

__all__ = ["Averageable", "Objective", "ClassificationObjective"]


class Objective(Protocol):
    metric: str  # the validation metric early stopping watches
    greater_is_better: bool

    def loss(self, model: nn.Module, batch: Any) -> tuple[Tensor, int]:
        """Mean loss over the batch and the number of examples in it."""

    def evaluate(self, model: nn.Module, batches: Iterable[Any]) -> dict[str, float]:
        """Metrics over batches (already on the right device)."""


class Averageable(Protocol):
    """What a deep ensemble (`attnlab.ensemble`) needs of an objective: ``score(mean of the members'
    outputs, targets)`` is the ensemble's metrics, the same metrics ``evaluate`` gives one model."""

    def outputs(self, model: nn.Module, batches: Iterable[Any]) -> tuple[Tensor, Tensor]:
        """(the outputs an ensemble averages, the targets) of every batch, on the CPU, in order."""

    def score(self, outputs: Tensor, targets: Tensor) -> dict[str, float]:
        """Metrics of (possibly averaged) outputs against the targets."""


class ClassificationObjective:
    """Cross-entropy (optionally label-smoothed and class-weighted); accuracy / macro-F1 / loss on evaluation.

    ``class_weights`` (K,) scale each example's loss by its true class's weight
    (`attnlab.training.class_weights`); evaluation stays unweighted.
    """

    metric = "accuracy"
    greater_is_better = True

    def __init__(self, num_classes: int, *, label_smoothing: float = 0.0, class_weights: Tensor | None = None):
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.class_weights = class_weights

    def set_class_weights(self, weights: Tensor) -> None:
        if weights.shape != (self.num_classes,):
            raise ValueError(f"class weights of shape {tuple(weights.shape)} for {self.num_classes} classes")
        self.class_weights = weights.float()

    def loss(self, model: nn.Module, batch: Any) -> tuple[Tensor, int]:
        x, y = batch
        logits = model(x)
        weight = None if self.class_weights is None else self.class_weights.to(logits.device)
        return F.cross_entropy(logits.float(), y, weight=weight, label_smoothing=self.label_smoothing), int(y.shape[0])

    @torch.no_grad()
    def predict(self, model: nn.Module, x: Tensor) -> Tensor:
        return torch.softmax(model(x).float(), dim=-1)

    @torch.no_grad()
    def outputs(self, model: nn.Module, batches: Iterable[Any]) -> tuple[Tensor, Tensor]:
        """Class probabilities (B, K) float32 on the CPU and the labels (B,) of every batch, in order."""
        probs, labels = [], []
        for x, y in batches:
            probs.append(self.predict(model, x).cpu())
            labels.append(y.cpu())
        return torch.cat(probs), torch.cat(labels)

    def score(self, outputs: Tensor, targets: Tensor) -> dict[str, float]:
        return classification_metrics(targets, outputs)

    def evaluate(self, model: nn.Module, batches: Iterable[Any]) -> dict[str, float]:
        return self.score(*self.outputs(model, batches))
