"""Learning-rate schedules: linear warm-up then cosine decay (Loshchilov & Hutter 2017); or a
per-epoch step decay, as the long-horizon forecasting code bases (Informer, DLinear, PatchTST)
use: full rate for some epochs, then multiplied by a constant each epoch."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

__all__ = ["warmup_cosine", "warmup_cosine_factor", "epoch_step", "epoch_step_factor"]


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int, min_factor: float = 0.0) -> float:
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    progress = min(max(progress, 0.0), 1.0)
    return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))


def warmup_cosine(optimizer: Optimizer, warmup_steps: int, total_steps: int, min_factor: float = 0.0) -> LambdaLR:
    return LambdaLR(optimizer, lambda step: warmup_cosine_factor(step, warmup_steps, total_steps, min_factor))


def epoch_step_factor(step: int, steps_per_epoch: int, hold_epochs: int, gamma: float,
                      warmup_epochs: float = 0, warmup_factor: float = 1.0) -> float:
    """``gamma ** max(0, epoch - hold_epochs + 1)`` for the 0-based epoch of ``step``: ``hold_epochs``
    epochs at full rate, then one factor of ``gamma`` more each epoch; the first ``warmup_epochs``
    of the held epochs at ``warmup_factor`` instead."""
    epoch = step // max(1, steps_per_epoch)
    if epoch < warmup_epochs:
        return warmup_factor
    return gamma ** max(0, epoch - hold_epochs + 1)


def epoch_step(optimizer: Optimizer, steps_per_epoch: int, hold_epochs: int, gamma: float,
               warmup_epochs: float = 0, warmup_factor: float = 1.0) -> LambdaLR:
    return LambdaLR(optimizer, lambda step: epoch_step_factor(step, steps_per_epoch, hold_epochs, gamma,
                                                              warmup_epochs, warmup_factor))
