"""Class weights for imbalanced single-label data (``--train.class_weights balanced``).

"balanced" weights class k by ``n_samples / (n_classes * count_k)`` over the training labels,
scikit-learn's ``compute_class_weight("balanced")`` (after King & Zeng 2001): each class then
contributes equally to the cross-entropy however rare it is. Only an objective with a
``set_class_weights`` method (single-label cross-entropy) takes them; any other is refused by
name rather than silently trained unweighted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from attnlab.errors import ConfigError

__all__ = ["CLASS_WEIGHTS", "apply_class_weights", "balanced_class_weights", "training_labels"]

CLASS_WEIGHTS = ("none", "balanced")


def balanced_class_weights(labels: Tensor, num_classes: int, class_names: Sequence[str] | None = None) -> Tensor:
    """``n / (K * count_k)`` per class. Shape: labels (N,) int64 -> (K,) float32."""
    counts = torch.bincount(labels.long().flatten(), minlength=num_classes).double()  # (K,)
    if bool((counts == 0).any()):
        k = int(torch.nonzero(counts == 0)[0])
        name = class_names[k] if class_names is not None else k
        raise ConfigError(f"--train.class_weights balanced: class {name!r} has no training example")
    return (len(labels) / (num_classes * counts)).float()


def training_labels(dataset: Any) -> Tensor:
    """The class index of every training example: ``dataset.y`` when it has one, else read item by item."""
    y = getattr(dataset, "y", None)
    if isinstance(y, Tensor):
        return y
    if hasattr(dataset, "class_labels"):  # a sharded stream: read from its .cls members, not by index
        return torch.tensor(dataset.class_labels(), dtype=torch.long)
    return torch.tensor([int(dataset[i][1]) for i in range(len(dataset))])


def apply_class_weights(objective: Any, mode: str, dataset: Any, num_classes: int, class_names: Sequence[str]) -> None:
    """Give ``objective`` the ``mode`` weights of ``dataset``'s labels ("none": nothing to do)."""
    if mode not in CLASS_WEIGHTS:
        raise ConfigError(f"--train.class_weights must be one of {list(CLASS_WEIGHTS)}, got {mode!r}")
    if mode == "none":
        return
    if not hasattr(objective, "set_class_weights"):
        raise ConfigError(f"--train.class_weights {mode} applies to single-label cross-entropy only; "
                          f"this run's objective is {type(objective).__name__}")
    labels = training_labels(dataset)
    if labels.is_floating_point() or labels.dim() != 1:
        raise ConfigError(f"--train.class_weights {mode} needs one class index per training example")
    objective.set_class_weights(balanced_class_weights(labels, num_classes, class_names))
