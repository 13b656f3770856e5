"""Deep ensembles: score several finished classification runs as one model.

The members' class probabilities on the test split are averaged and the average is scored
(Lakshminarayanan et al. 2017, "Simple and scalable predictive uncertainty estimation using deep
ensembles"; InceptionTime, Fawaz et al. 2020, is five such networks). Members are usually the same
config trained with different seeds: ``attnlab evaluate RUN_A RUN_B RUN_C``.

Every member must be a classification run of the same task whose test split holds the same
examples with the same labels in the same order, and whose classes are the same; anything else is
refused with the run that differs, since averaging misaligned probabilities would give a silent,
wrong score.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from attnlab.errors import ConfigError
from attnlab.training.metrics import classification_metrics

__all__ = ["ensemble_probabilities", "evaluate_ensemble"]


def _fingerprint(dataset) -> str:
    """SHA-1 of the split's examples and labels, in order: equal splits, equal digests.

    Text data sets hash their raw texts (``dataset.texts``) with the labels, since each run's
    tokenizer is trained on its own training split and the same sentence can get other ids;
    other data sets hash every item's tensors.
    """
    digest = hashlib.sha1()
    texts = getattr(dataset, "texts", None)
    for i in range(len(dataset)):
        item = dataset[i]
        parts = item if isinstance(item, (tuple, list)) else (item,)
        if texts is not None:
            parts = (texts[i], parts[-1])
        for part in parts:
            if isinstance(part, Tensor):
                digest.update(f"{part.dtype}{tuple(part.shape)}".encode())
                digest.update(part.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
            else:
                digest.update(repr(part).encode())
    return digest.hexdigest()


def ensemble_probabilities(run_dirs: list[str | Path], *, data: str | None = None,
                           device: str = "cpu") -> tuple[Tensor, Tensor, list[dict[str, Any]]]:
    """(mean class probabilities (B, K), labels (B,), each member's own test metrics) over the test split."""
    from attnlab.run import evaluation_trainer

    if not run_dirs:
        raise ConfigError("an ensemble needs at least one run directory")
    total: Tensor | None = None
    labels: Tensor | None = None
    first: tuple[str, list[str], Path] | None = None
    fingerprint: str | None = None
    members: list[dict[str, Any]] = []
    for run_dir in run_dirs:
        config, trainer, task_data = evaluation_trainer(run_dir, data=data, device=device)
        classes = [str(c) for c in task_data.class_names]
        if first is None:
            first = (config.task, classes, Path(run_dir))
        elif (config.task, classes) != first[:2]:
            raise ConfigError(f"{run_dir}: task {config.task!r} with classes {classes} cannot join an ensemble "
                              f"with {first[2]} (task {first[0]!r}, classes {first[1]})")
        digest = _fingerprint(task_data.test)
        if fingerprint is None:
            fingerprint = digest
        elif digest != fingerprint:
            raise ConfigError(f"{run_dir}: its test split ({len(task_data.test)} examples) differs from {first[2]}'s; "
                              "ensemble members must be scored on the same examples (split seeds must match)")
        probs, y = trainer.probabilities(task_data.test)  # (B, K), (B,)
        if labels is None:
            labels, total = y, torch.zeros_like(probs, dtype=torch.float64)
        total += probs.double()
        members.append({"run_dir": str(run_dir), "test": classification_metrics(y, probs)})
    assert total is not None and labels is not None
    return (total / len(run_dirs)).float(), labels, members


def evaluate_ensemble(run_dirs: list[str | Path], *, data: str | None = None, device: str = "cpu") -> dict[str, Any]:
    """Test metrics of the averaged probabilities, and each member's own."""
    probs, labels, members = ensemble_probabilities(run_dirs, data=data, device=device)
    return {"members": members, "test": classification_metrics(labels, probs)}
