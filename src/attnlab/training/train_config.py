"""`TrainConfig`: every setting of the training loop (`attnlab.training.trainer`), checked on creation.

Defaults train the toolkit's small models on a CPU in minutes; ``--train.X`` on the command
line and ``train:`` in a YAML recipe set them (`attnlab.run_config`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from attnlab.config import check_choice
from attnlab.errors import ConfigError

__all__ = ["TrainConfig"]


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    adam_betas: tuple[float, float] = (0.9, 0.999)  # AdamW's (beta1, beta2); Transformers often use 0.98
    fused_optimizer: bool = True  # torch's fused AdamW kernel (one pass over all tensors); False = per-tensor loop
    warmup_epochs: float = 1.0
    warmup_ratio: float | None = None  # warm-up as a fraction of all steps (fine-tuning: 0.1); replaces warmup_epochs
    min_lr_factor: float = 0.01
    # "cosine": warm-up then cosine to min_lr_factor; "step": lr_hold_epochs at full lr, then times lr_gamma
    # each epoch (the forecasting papers' lradj "type1": hold 2, gamma 0.5; "type3": hold 4, gamma 0.9)
    schedule: str = "cosine"
    lr_gamma: float = 0.5
    lr_hold_epochs: int = 2
    # "step" only: the first warmup_epochs epochs (whole ones) run at lr times this. The PatchTST authors'
    # code runs its first epoch at lr / 25: the OneCycleLR it builds sets that rate, and their "type3"
    # schedule only replaces it after the epoch (their ETTh1 recipe here: warmup_epochs 1, factor 0.04)
    step_warmup_factor: float = 1.0
    grad_clip: float = 1.0  # 0 = off
    accumulate: int = 1
    precision: str = "auto"  # "auto" (bf16 on CUDA when supported, else fp32) | "fp32" | "bf16"
    device: str = "auto"
    seed: int = 0
    early_stopping_patience: int = 0  # epochs without improvement; 0 = off
    keep: str = "best"  # weights kept at the end: "best" on validation, or "last"
    ema_decay: float = 0.0  # > 0 (e.g. 0.999): validate, keep and save a moving average of the weights
    group_by_length: bool = False  # batches of similar-length examples (less padding); needs dataset.lengths
    checkpoint_every: int = 0  # optimizer steps between mid-epoch checkpoints; 0 = at epoch ends only
    max_bad_steps: int = 10  # non-finite losses skipped before training stops
    progress: bool = True
    num_workers: int = 0  # DataLoader worker processes (persistent across epochs; training/loaders.py)
    # Fine-tuning (attnlab.training.param_groups): "embeddings,blocks.0-3" or parameter-name globs, frozen
    freeze: str = ""
    layer_decay: float = 1.0  # < 1: layer-wise lr decay (ELECTRA / BEiT); block i gets lr * decay ** (depth - i)
    head_lr: float | None = None  # the head's learning rate (default: lr)
    # "balanced": single-label cross-entropy weights classes by n / (K * count) over the training
    # labels (attnlab.training.class_weights); the run's objective applies it, other objectives refuse it
    class_weights: str = "none"

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "accumulate"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"TrainConfig.{name} must be an integer >= 1, got {value!r}")
        for name in ("seed", "num_workers", "checkpoint_every", "early_stopping_patience", "max_bad_steps", "lr_hold_epochs"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"TrainConfig.{name} must be an integer >= 0, got {value!r}")
        if self.seed >= 2**32:  # NumPy's and scikit-learn's random_state take 32 bits (as HF's set_seed)
            raise ConfigError(f"TrainConfig.seed must be below 2**32 = {2**32}, got {self.seed!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"TrainConfig.lr must be a positive number, got {self.lr!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"TrainConfig.ema_decay must be in [0, 1), got {self.ema_decay!r}")
        for name in ("weight_decay", "warmup_epochs", "grad_clip", "min_lr_factor"):
            value = getattr(self, name)  # NaN passes a "< 0" test: it would train with NaN or fail deep inside
            if not (value >= 0 and math.isfinite(value)):
                raise ConfigError(f"TrainConfig.{name} must be a finite number >= 0, got {value!r}")
        if self.min_lr_factor > 1:  # the cosine's floor, as a fraction of lr: above 1 the rate would rise
            raise ConfigError(f"TrainConfig.min_lr_factor must be in [0, 1], got {self.min_lr_factor!r}")
        if len(self.adam_betas) != 2 or not all(0.0 <= b < 1.0 for b in self.adam_betas):
            raise ConfigError(f"TrainConfig.adam_betas must be two numbers in [0, 1), got {self.adam_betas!r}")
        if self.warmup_ratio is not None and not 0.0 <= self.warmup_ratio <= 1.0:
            raise ConfigError(f"TrainConfig.warmup_ratio must be in [0, 1], got {self.warmup_ratio!r}")
        if not 0.0 < self.layer_decay <= 1.0:
            raise ConfigError(f"TrainConfig.layer_decay must be in (0, 1], got {self.layer_decay!r}")
        if self.head_lr is not None and not (self.head_lr > 0 and math.isfinite(self.head_lr)):
            raise ConfigError(f"TrainConfig.head_lr must be a positive number, got {self.head_lr!r}")
        if not isinstance(self.freeze, str):  # a YAML list is accepted as the comma-separated form
            self.freeze = ",".join(map(str, self.freeze)) if isinstance(self.freeze, (list, tuple)) else str(self.freeze)
        check_choice("TrainConfig", "precision", self.precision, ("auto", "fp32", "bf16"))
        check_choice("TrainConfig", "keep", self.keep, ("best", "last"))
        check_choice("TrainConfig", "class_weights", self.class_weights, ("none", "balanced"))
        check_choice("TrainConfig", "schedule", self.schedule, ("cosine", "step"))
        if not 0.0 < self.step_warmup_factor <= 1.0:
            raise ConfigError(f"TrainConfig.step_warmup_factor must be in (0, 1], got {self.step_warmup_factor!r}")
        if not 0.0 < self.lr_gamma <= 1.0 or self.lr_hold_epochs < 0:
            raise ConfigError(f"TrainConfig: lr_gamma must be in (0, 1] and lr_hold_epochs >= 0, got {self.lr_gamma!r}, "
                              f"{self.lr_hold_epochs!r}")
